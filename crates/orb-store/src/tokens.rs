//! Operator tokens (security, issue 15): the awaited writes that add and revoke one, and the read
//! of them all (the server holds them in memory from its start). Only each token's SHA-256 is
//! stored.

use sqlx::{AnyConnection, AnyPool, Row};

use crate::backend::unavailable;
use crate::rows::{ms, time_column};
use crate::writer::Written;
use crate::{OperatorToken, StoreError};

/// Adds `token`; a name or digest already stored is a conflict and changes nothing.
pub(crate) async fn add(
    conn: &mut AnyConnection,
    token: &OperatorToken,
) -> Result<Result<Written, StoreError>, sqlx::Error> {
    let taken = sqlx::query("SELECT name FROM operator_tokens WHERE name = $1 OR hash = $2")
        .bind(&token.name)
        .bind(token.hash.to_vec())
        .fetch_optional(&mut *conn)
        .await?;
    if taken.is_some() {
        return Ok(Err(StoreError::Conflict(format!("token {}", token.name))));
    }
    sqlx::query(
        "INSERT INTO operator_tokens (name, role, hash, created_at, revoked_at, expires_at) \
         VALUES ($1, $2, $3, $4, NULL, $5)",
    )
    .bind(&token.name)
    .bind(&token.role)
    .bind(token.hash.to_vec())
    .bind(ms(token.created_at))
    .bind(token.expires_at.map(ms))
    .execute(&mut *conn)
    .await?;
    Ok(Ok(Written::Nothing))
}

/// Marks the token `name` revoked at `at` (a token revoked already keeps its first time).
pub(crate) async fn revoke(
    conn: &mut AnyConnection,
    name: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Result<Written, StoreError>, sqlx::Error> {
    let done = sqlx::query("UPDATE operator_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE name = $1")
        .bind(name)
        .bind(ms(at))
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(Err(StoreError::NotFound(format!("token {name}"))));
    }
    Ok(Ok(Written::Nothing))
}

/// Every token, by name. A row that cannot be read is left out with a warning (never letting
/// the server start with a token it cannot check is the safe side).
pub(crate) async fn all(pool: &AnyPool) -> Result<Vec<OperatorToken>, StoreError> {
    let rows =
        sqlx::query("SELECT name, role, hash, created_at, revoked_at, expires_at FROM operator_tokens ORDER BY name")
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
    let read = |row: &sqlx::any::AnyRow| -> Result<OperatorToken, sqlx::Error> {
        let hash: Vec<u8> = row.try_get("hash")?;
        let hash = <[u8; 32]>::try_from(hash.as_slice())
            .map_err(|_| sqlx::Error::Decode("the token's hash is not 32 bytes".into()))?;
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        let expires: Option<i64> = row.try_get("expires_at")?;
        Ok(OperatorToken {
            name: row.try_get("name")?,
            role: row.try_get("role")?,
            hash,
            created_at: time_column(row, "created_at")?,
            revoked_at: match revoked {
                Some(_) => Some(time_column(row, "revoked_at")?),
                None => None,
            },
            expires_at: match expires {
                Some(_) => Some(time_column(row, "expires_at")?),
                None => None,
            },
        })
    };
    Ok(rows
        .iter()
        .filter_map(|row| {
            read(row).map_err(|e| tracing::warn!(error = %e, "an operator token cannot be read; it is left out")).ok()
        })
        .collect())
}

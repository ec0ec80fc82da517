//! Placeholders for multi-row statements (bulk inserts of job targets, `IN` lists), in the form
//! each backend binds fastest. The SQL is built here; the callers bind values row by row.

use sqlx::AnyConnection;

/// Parameter style of the connection a bulk statement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholders {
    /// `?`: SQLite. Anonymous parameters, because sqlx asks SQLite for the name of every named
    /// parameter (`$n`) it binds, and SQLite finds it by a walk over all of the statement's names:
    /// quadratic in the parameter count, which made an 8,000-parameter insert cost tens of
    /// milliseconds of CPU.
    Anonymous,
    /// `$1`, `$2`, ...: PostgreSQL.
    Numbered,
}

impl Placeholders {
    /// The style for `conn`.
    pub(crate) fn of(conn: &AnyConnection) -> Placeholders {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            Placeholders::Anonymous
        } else {
            Placeholders::Numbered
        }
    }

    /// `(p, p, ...), (p, p, ...)`: `rows` tuples of `columns` parameters, numbered from 1 in
    /// binding order (row by row, column by column).
    pub(crate) fn rows(self, rows: usize, columns: usize) -> String {
        let mut sql = String::with_capacity(rows * columns * 6);
        let mut n = 0;
        for r in 0..rows {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..columns {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                match self {
                    Placeholders::Anonymous => sql.push('?'),
                    Placeholders::Numbered => {
                        sql.push('$');
                        sql.push_str(&n.to_string());
                    }
                }
            }
            sql.push(')');
        }
        sql
    }

    /// `p, p, ...`: `n` parameters for an `IN (...)` list.
    pub(crate) fn list(self, n: usize) -> String {
        let rows = self.rows(n, 1);
        rows.replace(['(', ')'], "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_styles_number_in_binding_order() {
        assert_eq!(Placeholders::Numbered.rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(Placeholders::Anonymous.rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(Placeholders::Numbered.list(3), "$1, $2, $3");
        assert_eq!(Placeholders::Anonymous.list(2), "?, ?");
    }
}

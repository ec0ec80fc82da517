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
        self.rows_after(0, rows, columns)
    }

    /// `p, p, ...`: `n` parameters, numbered from 1, for values a statement shares across its
    /// rows (bound before the rows, which then start at `n + 1`: [`Placeholders::rows_after`]).
    pub(crate) fn shared(self, n: usize) -> Vec<String> {
        (1..=n)
            .map(|i| match self {
                Placeholders::Anonymous => "?".to_owned(),
                Placeholders::Numbered => format!("${i}"),
            })
            .collect()
    }

    /// Like [`Placeholders::rows`], numbered from `before + 1`: rows that follow `before` other
    /// parameters in binding order. (SQLite numbers `?` in the order they appear in the text, so
    /// the others must appear before the rows there too.)
    pub(crate) fn rows_after(self, before: usize, rows: usize, columns: usize) -> String {
        let mut sql = String::with_capacity(rows * columns * 6);
        let mut n = before;
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
        assert_eq!(Placeholders::Numbered.shared(2), ["$1", "$2"]);
        assert_eq!(Placeholders::Numbered.rows_after(2, 2, 1), "($3), ($4)");
        assert_eq!(Placeholders::Anonymous.rows_after(2, 1, 2), "(?, ?)");
    }
}

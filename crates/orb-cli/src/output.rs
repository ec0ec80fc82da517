//! Output formats shared by `orb send`, `orb devices` and `orb jobs` (`-o table|wide|json|yaml|name`,
//! `--json`, `--no-headers`), and the plain column layout used when stdout is not a terminal, so
//! `orb devices | awk '{print $1}'` prints ids. Commands build rows and values; this module
//! decides how they look.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::exit::{self, Failure};

/// How a command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Columns for people: box borders on a terminal, plain columns otherwise; long values cut
    /// to the terminal's width.
    Table,
    /// Like `table`, with more columns and nothing cut.
    Wide,
    /// JSON: one array for lists, one object for single answers, one object per line for
    /// `orb send` results.
    Json,
    /// YAML: one document (for `orb send`: one per result, then the summary).
    Yaml,
    /// Only the ids (devices or jobs), one per line.
    Name,
}

/// The output flags of a command.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Output format: table (default), wide (more columns, nothing cut), json (a list as one
    /// array, a single answer as one object), yaml, name (ids only).
    #[arg(short = 'o', long = "output", value_enum, value_name = "FORMAT", global = true)]
    pub output: Option<Format>,
    /// Same as `-o json`.
    #[arg(long, global = true, conflicts_with = "output")]
    pub json: bool,
    /// Tables without their header line.
    #[arg(long, global = true)]
    pub no_headers: bool,
}

impl OutputArgs {
    /// The format asked for: `-o`, else `--json`, else a table.
    pub fn format(&self) -> Format {
        match (self.output, self.json) {
            (Some(f), _) => f,
            (None, true) => Format::Json,
            (None, false) => Format::Table,
        }
    }
}

/// Whether stdout is a terminal (tables get borders, colours and cut values only there).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// The terminal's width in columns: `COLUMNS`, else the size of the terminal on stdout, else 100.
pub fn terminal_width() -> usize {
    let from_env = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
    let from_tty = || console::Term::stdout().size_checked().map(|(_, cols)| usize::from(cols));
    from_env.or_else(from_tty).filter(|w| *w >= 20).unwrap_or(100)
}

/// Prints `value` as one JSON document or one YAML document.
pub fn print_structured<T: Serialize>(value: &T, format: Format) -> Result<(), Failure> {
    let text = match format {
        Format::Yaml => yaml(value)?,
        _ => serde_json::to_string(value).map_err(|e| Failure::new(exit::FAILED, e.to_string()))?,
    };
    outln!("{}", text.trim_end());
    Ok(())
}

/// One YAML document, starting with `---` so several can follow each other.
pub fn yaml<T: Serialize>(value: &T) -> Result<String, Failure> {
    // Through JSON text first: results are raw JSON, which only serde_json can write. A YAML
    // value keeps the keys in their order.
    let fail = |e: String| Failure::new(exit::FAILED, e);
    let json = serde_json::to_string(value).map_err(|e| fail(e.to_string()))?;
    let value: serde_norway::Value = serde_json::from_str(&json).map_err(|e| fail(e.to_string()))?;
    let body = serde_norway::to_string(&value).map_err(|e| fail(e.to_string()))?;
    Ok(format!("---\n{body}"))
}

/// Columns separated by three spaces, each as wide as its widest cell; the last column is not
/// padded. For output that is not a terminal: no borders, nothing cut, one row per line.
pub fn plain_table(header: Option<&[&str]>, rows: &[Vec<String>]) -> String {
    let columns = header.map_or_else(|| rows.first().map_or(0, Vec::len), <[&str]>::len);
    let mut widths = vec![0usize; columns];
    let header_cells: Option<Vec<String>> = header.map(|h| h.iter().map(|s| (*s).to_owned()).collect());
    for row in header_cells.iter().chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in header_cells.iter().chain(rows) {
        out.push_str(&plain_row(row, &widths));
        out.push('\n');
    }
    out
}

/// One row of a plain table with the given column widths (the last cell unpadded).
pub fn plain_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str("   ");
        }
        line.push_str(cell);
        if i + 1 < cells.len() {
            let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.truncate(line.trim_end().len());
    line
}

/// `s` cut to `width` characters, the last one `…` when something was cut.
pub fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_tables_align_columns_without_borders() {
        let rows = vec![
            vec!["web-1".to_owned(), "online".to_owned(), "role=web".to_owned()],
            vec!["database-10".to_owned(), "offline".to_owned(), String::new()],
        ];
        let text = plain_table(Some(&["ID", "STATUS", "TAGS"]), &rows);
        assert_eq!(
            text, "ID            STATUS    TAGS\nweb-1         online    role=web\ndatabase-10   offline\n",
            "{text}"
        );
        let first: Vec<&str> = text.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
        assert_eq!(first, ["ID", "web-1", "database-10"], "awk '{{print $1}}' prints the ids");
        assert_eq!(plain_table(None, &rows).lines().count(), 2, "--no-headers");
        assert_eq!(plain_table(Some(&["ID"]), &[]), "ID\n");
    }

    #[test]
    fn formats_follow_the_flags() {
        let args = |output, json| OutputArgs { output, json, no_headers: false };
        assert_eq!(args(None, false).format(), Format::Table);
        assert_eq!(args(None, true).format(), Format::Json);
        assert_eq!(args(Some(Format::Yaml), false).format(), Format::Yaml);
    }

    #[test]
    fn yaml_documents_start_with_a_separator_and_cuts_are_marked() {
        let text = yaml(&serde_json::json!({"id": "web-1", "tags": {"role": "web"}})).unwrap();
        assert!(text.starts_with("---\n") && text.contains("id: web-1") && text.contains("role: web"), "{text}");
        // Raw JSON results become YAML like any other value.
        let raw = serde_json::value::RawValue::from_string(r#"{"a":[1,2]}"#.to_owned()).unwrap();
        let text = yaml(&serde_json::json!({"result": raw})).unwrap();
        assert!(text.contains("result:\n  a:\n  - 1\n  - 2"), "{text}");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}

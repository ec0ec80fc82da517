//! Help for the usual selector mistakes, given where `orb send` and `orb devices` check their
//! selector, before anything is sent (and when nothing matched): a selector the shell expanded
//! into file names (an unquoted `*`), and `role=web` written without its `tag:` prefix.

use std::path::Path;

use orb_proto::Selector;

use crate::exit::Failure;

/// Checks a selector given on the command line, with the command name after it (`orb send`),
/// as `usage` shows the command (`orb send`, `orb devices`).
///
/// # Errors
/// A usage failure when the command names a file of the current folder (the shell expanded `*`
/// into at least two names), or when the selector does not parse (with a corrected selector when
/// one is likely, or the same expansion hint when the selector names a file here).
pub fn check_selector(usage: &str, target: &str, command: Option<&str>) -> Result<(), Failure> {
    check_selector_in(Path::new("."), usage, target, command)
}

/// The hint for a selector that matched nothing: when it names a file of the current folder, the
/// shell may have expanded an unquoted `*` into that one name.
pub fn expansion_hint(usage: &str, target: &str, command: Option<&str>) -> Option<String> {
    expansion_hint_in(Path::new("."), usage, target, command)
}

fn expansion_hint_in(folder: &Path, usage: &str, target: &str, command: Option<&str>) -> Option<String> {
    is_entry(folder, target).then(|| {
        let args = command.map(|c| format!(" {c}")).unwrap_or_default();
        format!(
            "'{target}' is also a file in this folder: if the shell expanded '*', quote the selector: {usage} '*'{args}"
        )
    })
}

fn check_selector_in(folder: &Path, usage: &str, target: &str, command: Option<&str>) -> Result<(), Failure> {
    // A device id or a command may well be a file name here; both at once mean `*` was expanded
    // into (at least) two names.
    if is_entry(folder, target) && command.is_some_and(|c| is_entry(folder, c)) {
        return Err(Failure::usage(format!(
            "'{target}' is a file in this folder: the shell expanded '*' into file names; quote the selector: {usage} '*' COMMAND"
        )));
    }
    Selector::parse(target).map(drop).map_err(|e| {
        let hint = tag_hint(target)
            .map(|t| format!("; did you mean '{t}'?"))
            .or_else(|| expansion_hint_in(folder, usage, target, command).map(|h| format!("; {h}")))
            .unwrap_or_default();
        Failure::usage(format!("bad selector '{target}': {e}{hint}"))
    })
}

/// Whether `name` is an entry of `folder`. Only plain names count (no path separators), so a
/// selector is never taken for a path elsewhere.
fn is_entry(folder: &Path, name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".." && folder.join(name).exists()
}

/// `role=web` → `tag:role=web`: each word that is `KEY=VALUE` without a `tag:` prefix gets one,
/// when the result parses.
fn tag_hint(target: &str) -> Option<String> {
    let mut changed = false;
    let words: Vec<String> = target
        .split(' ')
        .map(|word| {
            let open = word.len() - word.trim_start_matches('(').len();
            let inner = word.trim_start_matches('(').trim_end_matches(')');
            let close = &word[open + inner.len()..];
            match inner.split_once('=') {
                Some((key, _)) if !key.is_empty() && !key.contains(':') => {
                    changed = true;
                    format!("{}tag:{inner}{close}", &word[..open])
                }
                _ => word.to_owned(),
            }
        })
        .collect();
    let fixed = words.join(" ");
    (changed && Selector::parse(&fixed).is_ok()).then_some(fixed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn folder_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        dir
    }

    fn message(r: Result<(), Failure>) -> String {
        let f = r.unwrap_err();
        assert_eq!(f.code, crate::exit::USAGE);
        f.message
    }

    #[test]
    fn a_key_value_selector_without_tag_suggests_the_tag_form() {
        let dir = folder_with(&[]);
        let m = message(check_selector_in(dir.path(), "orb send", "role=web", Some("ping")));
        assert!(m.starts_with("bad selector 'role=web': "), "{m}");
        assert!(m.ends_with("; did you mean 'tag:role=web'?"), "{m}");
        assert_eq!(
            tag_hint("(role=web or region=eu) and not web-3").as_deref(),
            Some("(tag:role=web or tag:region=eu) and not web-3")
        );
        assert_eq!(tag_hint("tag:role=web"), None, "already right");
        assert_eq!(tag_hint("web-*"), None);
        assert!(check_selector_in(dir.path(), "orb send", "tag:role=web", Some("ping")).is_ok());
    }

    #[test]
    fn a_selector_or_command_naming_a_file_here_was_expanded_by_the_shell() {
        let dir = folder_with(&["notes.txt", "orb-data"]);
        // `orb send * ping` with two files: the command is a file name too.
        let m = message(check_selector_in(dir.path(), "orb send", "notes.txt", Some("orb-data")));
        assert_eq!(
            m,
            "'notes.txt' is a file in this folder: the shell expanded '*' into file names; quote the selector: orb send '*' COMMAND"
        );
        // A selector that does not parse and is a file name here.
        let m = message(check_selector_in(dir.path(), "orb devices", "notes.txt", None));
        assert!(m.starts_with("bad selector 'notes.txt': "), "{m}");
        assert!(m.ends_with("quote the selector: orb devices '*'"), "{m}");
        // A device id that is also a file name here is a selector as usual; if nothing matches
        // it, the hint comes with `no device matches`.
        assert!(check_selector_in(dir.path(), "orb send", "orb-data", Some("ping")).is_ok());
        let hint = expansion_hint_in(dir.path(), "orb send", "orb-data", Some("ping")).unwrap();
        assert!(hint.ends_with("quote the selector: orb send '*' ping"), "{hint}");
        assert_eq!(expansion_hint_in(dir.path(), "orb send", "web-1", Some("ping")), None);
        assert!(check_selector_in(dir.path(), "orb send", "web-1", Some("ping")).is_ok());
        assert!(check_selector_in(dir.path(), "orb send", "*", Some("ping")).is_ok());
        // A command that is a folder's name here (`deploy/`) is just a command.
        assert!(check_selector_in(dir.path(), "orb send", "tag:role=web", Some("orb-data")).is_ok());
        assert!(!is_entry(dir.path(), ".."));
    }
}

//! The check that a job's command is one its targets handle, made in the broker before
//! anything is sent: when every target declared its commands (in its last hello) and none of
//! them declares the job's, the job is refused with `unknown_command` and the closest declared
//! names are suggested ("did you mean 'ping'?"). A target that declared nothing may handle
//! anything, so then the command goes out as usual.

use std::collections::{BTreeSet, HashSet};

use orb_proto::{ErrorBody, ErrorCode, excerpt};

/// Closest names suggested at most.
const SUGGESTED: usize = 3;

/// Checks `command` against the declared command lists of a job's targets, one per target (an
/// empty list: the target declared nothing). Lists are interned (one allocation per distinct
/// list), so each distinct list is scanned once however many targets share it.
///
/// # Errors
/// `unknown_command` when every list is non-empty and none holds `command`.
pub(crate) fn check<L: AsRef<[String]>>(command: &str, lists: impl IntoIterator<Item = L>) -> Result<(), ErrorBody> {
    let mut seen: HashSet<(*const String, usize)> = HashSet::new();
    let mut distinct: Vec<L> = Vec::new();
    for list in lists {
        let names = list.as_ref();
        if !seen.insert((names.as_ptr(), names.len())) {
            continue;
        }
        if names.is_empty() || names.iter().any(|c| c == command) {
            return Ok(());
        }
        distinct.push(list);
    }
    if distinct.is_empty() {
        // No target at all: nothing to say (the caller refuses an empty job on its own).
        return Ok(());
    }
    let declared: BTreeSet<&str> = distinct.iter().flat_map(|l| l.as_ref().iter().map(String::as_str)).collect();
    let mut message = format!("no target declares command '{}'", excerpt(command));
    let close = closest(command, &declared);
    if !close.is_empty() {
        let names: Vec<String> = close.iter().map(|n| format!("'{n}'")).collect();
        message.push_str(&format!("; did you mean {}?", names.join(" or ")));
    }
    Err(ErrorBody::new(ErrorCode::UnknownCommand, message))
}

/// The declared names nearest to `name` by edit distance (a swap of two neighbours counts as
/// one edit), when near enough to be a typo: at most a third of the longer name's characters
/// (and at least one) differ. Equally near names are all given, up to [`SUGGESTED`].
fn closest<'a>(name: &str, declared: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let len = name.chars().count();
    let mut best = usize::MAX;
    let mut out = Vec::new();
    for &candidate in declared {
        let candidate_len = candidate.chars().count();
        let allowed = (len.max(candidate_len) / 3).max(1);
        // The length difference is a lower bound of the distance: most names are skipped here,
        // before the quadratic comparison.
        if len.abs_diff(candidate_len) > allowed {
            continue;
        }
        let d = strsim::damerau_levenshtein(name, candidate);
        if d > allowed || d > best {
            continue;
        }
        if d < best {
            best = d;
            out.clear();
        }
        if out.len() < SUGGESTED {
            out.push(candidate);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_typo_of_a_declared_command_is_refused_with_the_nearest_name() {
        let lists = [list(&["ping", "echo", "sleep", "sys.info"]), list(&["ping", "echo"])];
        let e = check("pnig", &lists).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownCommand);
        assert_eq!(e.message, "no target declares command 'pnig'; did you mean 'ping'?");
        assert_eq!(
            check("sys.inf", &lists).unwrap_err().message,
            "no target declares command 'sys.inf'; did you mean 'sys.info'?"
        );
    }

    #[test]
    fn nothing_close_gets_no_suggestion_and_equally_close_names_are_all_given() {
        let lists = [list(&["ping", "echo"])];
        assert_eq!(check("reboot", &lists).unwrap_err().message, "no target declares command 'reboot'");
        let lists = [list(&["pong", "ping", "echo"])];
        assert_eq!(
            check("pang", &lists).unwrap_err().message,
            "no target declares command 'pang'; did you mean 'ping' or 'pong'?"
        );
    }

    #[test]
    fn a_command_any_target_declares_or_a_target_declaring_nothing_lets_the_job_go() {
        assert!(check("sleep", [list(&["ping"]), list(&["sleep"])]).is_ok());
        assert!(check("pnig", [list(&["ping"]), list(&[])]).is_ok(), "one target may handle anything");
        assert!(check("pnig", Vec::<Vec<String>>::new()).is_ok());
    }
}

//! The `exec` built-in of `orb agent`: runs an OS command (an argv, never through a shell) only
//! when `[exec] allow` permits it, with a timeout, a clean environment and capped output
//! (docs/agent-commands.md, decision 0028). Off, and not declared, while the list is empty.

mod args;
mod run;

use orb_client::{Context, HandlerResult};
use orb_proto::{ErrorBody, ErrorCode};

use orb_proto::argv::Pattern;

use crate::config::ExecSection;

pub use args::schema;

/// The user commands run as (`[exec] run_as`), resolved when the configuration loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// The checked `[exec]` section, with the patterns the server added where it accepts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The allowed argv patterns: `[exec] allow`, then the server's additions.
    allow: Vec<Pattern>,
    /// How many of `allow` are the agent's own.
    own: usize,
    /// `[exec] accept_server_additions`.
    accepts_additions: bool,
    /// The user to switch to, if any.
    run_as: Option<RunAs>,
    /// Bytes kept of each of stdout and stderr.
    max_output: usize,
}

/// The largest `[exec] max_output`: the result (both outputs, JSON-escaped) must fit in a frame.
pub const MAX_OUTPUT_LIMIT: u64 = 128 * 1024;

impl Policy {
    /// Checks `[exec]`: every `allow` entry parses, `run_as` names an existing user and
    /// `max_output` is 1 to [`MAX_OUTPUT_LIMIT`] bytes. `None` when `allow` is empty and the
    /// server may not add patterns (exec is off).
    ///
    /// # Errors
    /// Every problem, each naming its key (and entry).
    pub fn load(s: &ExecSection) -> Result<Option<Policy>, Vec<String>> {
        let mut problems = Vec::new();
        let mut allow = Vec::with_capacity(s.allow.len());
        for (i, entry) in s.allow.iter().enumerate() {
            match Pattern::parse(entry) {
                Ok(p) => allow.push(p),
                Err(e) => problems.push(format!("'exec.allow' entry {i}: {e}")),
            }
        }
        let run_as = s.run_as.as_deref().and_then(|name| match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Some(RunAs { uid: u.uid.as_raw(), gid: u.gid.as_raw() }),
            Ok(None) => {
                problems.push(format!("'exec.run_as' = \"{name}\": no such user on this machine"));
                None
            }
            Err(e) => {
                problems.push(format!("'exec.run_as' = \"{name}\": cannot look the user up: {e}"));
                None
            }
        });
        if s.max_output == 0 || s.max_output > MAX_OUTPUT_LIMIT {
            problems.push(format!("'exec.max_output' = {} must be 1 to {MAX_OUTPUT_LIMIT} bytes", s.max_output));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if allow.is_empty() && !s.accept_server_additions {
            return Ok(None);
        }
        let max_output = usize::try_from(s.max_output).unwrap_or(usize::MAX);
        let own = allow.len();
        Ok(Some(Policy { allow, own, accepts_additions: s.accept_server_additions, run_as, max_output }))
    }

    /// How many patterns the agent's own `allow` has.
    pub fn pattern_count(&self) -> usize {
        self.own
    }

    /// Whether the server's `exec_allow` patterns are added (`[exec] accept_server_additions`).
    pub fn accepts_additions(&self) -> bool {
        self.accepts_additions
    }

    /// This policy with the agent's own patterns and `additions` (the server's, replacing any it
    /// added before). Additions are ignored unless the agent accepts them; a pattern that does
    /// not parse is left out (the server checked them; a newer server may send more).
    pub fn with_additions(&self, additions: &[String]) -> Policy {
        let mut allow = self.allow[..self.own].to_vec();
        if self.accepts_additions {
            allow.extend(additions.iter().filter_map(|a| Pattern::parse(a).ok()));
        }
        Policy { allow, ..self.clone() }
    }

    /// Whether some `allow` pattern matches `argv`.
    pub fn allows(&self, argv: &[String]) -> bool {
        self.allow.iter().any(|p| p.matches(argv))
    }
}

/// The command line as people read it in messages, shortened.
fn shown(argv: &[String]) -> String {
    orb_proto::excerpt(&argv.join(" ")).into_owned()
}

/// Handles one `exec`: checks the arguments and the allow list (refused commands run nothing),
/// runs the command, and answers its result, or `exit_status` with the result as the error's
/// `data` when it failed; `timeout` and `cancelled` kill its process group.
pub async fn call(policy: &Policy, c: Context) -> HandlerResult {
    let a = args::parse(&c.args)?;
    let line = shown(&a.argv);
    if !policy.allows(&a.argv) {
        let msg = format!("exec: '{line}' is not allowed by this agent's [exec] allow list; nothing was run");
        return Err(ErrorBody::new(ErrorCode::NotAllowed, msg));
    }
    tracing::info!(cmd = %line, job = c.job.as_deref(), from = %c.from, "exec");
    // Leaving this select drops the run, which kills the command's process group.
    let o = tokio::select! {
        r = run::run(&a, policy, &c.progress) => r?,
        () = tokio::time::sleep(a.timeout) => {
            let t = humantime::format_duration(a.timeout);
            let msg = format!("exec: '{line}' ran past its timeout of {t}; its process group was killed");
            return Err(ErrorBody::new(ErrorCode::Timeout, msg));
        }
        () = c.cancel.cancelled() => {
            let msg = format!("exec: the job was cancelled; the process group of '{line}' was killed");
            return Err(ErrorBody::new(ErrorCode::Cancelled, msg));
        }
    };
    let mut result = serde_json::json!({
        "exit_code": o.exit_code,
        "signal": o.signal,
        "stdout": o.stdout,
        "stderr": o.stderr,
        "truncated": o.truncated,
    });
    if c.progress.is_on() {
        // Lines streamed are best effort: say how many did not go (over the rate, no room).
        result["progress_dropped"] = c.progress.dropped().into();
    }
    let how = match (o.exit_code, &o.signal) {
        (Some(0), _) => return Ok(result),
        (Some(n), _) => format!("exited with status {n}"),
        (None, Some(s)) => format!("was killed by {s}"),
        (None, None) => "ended without an exit status".to_owned(),
    };
    let data = serde_json::value::to_raw_value(&result)
        .map_err(|e| ErrorBody::new(ErrorCode::HandlerError, format!("exec: result of '{line}': {e}")))?;
    Err(ErrorBody::new(ErrorCode::ExitStatus, format!("exec: '{line}' {how}")).with_data(data))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn section(allow: &[&str]) -> ExecSection {
        ExecSection { allow: allow.iter().map(|s| (*s).to_owned()).collect(), ..ExecSection::default() }
    }

    fn ctx(args: &str) -> Context {
        Context {
            cmd: "exec".into(),
            from: "op-1".into(),
            args: Bytes::copy_from_slice(args.as_bytes()),
            job: Some("job-1".into()),
            deadline: Duration::from_secs(30),
            cancel: CancellationToken::new(),
            progress: orb_client::handler::Progress::off(),
        }
    }

    #[test]
    fn an_empty_allow_list_is_off_and_bad_entries_are_named() {
        assert_eq!(Policy::load(&section(&[])).unwrap(), None);
        assert!(Policy::load(&section(&["uname -s"])).unwrap().is_some());
        let e = Policy::load(&section(&["uname -s", "", "* x"])).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("'exec.allow' entry 1: ") && e[0].contains("empty"), "{e:?}");
        assert!(e[1].starts_with("'exec.allow' entry 2: ") && e[1].contains("'* x'"), "{e:?}");
    }

    #[test]
    fn run_as_must_name_a_user_and_max_output_is_bounded() {
        let mut s = section(&["id -u"]);
        s.run_as = Some("no-such-user-orb".into());
        s.max_output = 0;
        let e = Policy::load(&s).unwrap_err();
        assert!(e.iter().any(|m| m.contains("'exec.run_as' = \"no-such-user-orb\": no such user")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("'exec.max_output' = 0")), "{e:?}");
        s.run_as = Some("root".into());
        s.max_output = 10;
        let p = Policy::load(&s).unwrap().unwrap();
        assert_eq!(p.run_as.map(|u| u.uid), Some(0));
    }

    #[tokio::test]
    async fn refused_commands_run_nothing_and_failures_carry_the_result() {
        let p = Policy::load(&section(&["echo *", "false"])).unwrap().unwrap();
        let v = call(&p, ctx(r#"{"cmd": ["echo", "hi"]}"#)).await.unwrap();
        assert_eq!(
            v,
            serde_json::json!({"exit_code": 0, "signal": null, "stdout": "hi\n", "stderr": "", "truncated": false})
        );
        let e = call(&p, ctx(r#"{"cmd": ["touch", "/tmp/orb-exec-refused"]}"#)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NotAllowed);
        assert!(!std::path::Path::new("/tmp/orb-exec-refused").exists());
        let e = call(&p, ctx(r#"{"cmd": ["false"]}"#)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::ExitStatus);
        assert_eq!(e.message, "exec: 'false' exited with status 1");
        let result: serde_json::Value = serde_json::from_str(e.data_json().unwrap()).unwrap();
        assert_eq!(result["exit_code"], 1);
        assert_eq!(result["stdout"], "");
    }

    #[tokio::test]
    async fn a_timeout_answers_timeout() {
        let p = Policy::load(&section(&["sleep *"])).unwrap().unwrap();
        let e = call(&p, ctx(r#"{"cmd": ["sleep", "30"], "timeout": "200ms"}"#)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Timeout);
        assert!(e.message.contains("timeout of 200ms"), "{}", e.message);
    }
}

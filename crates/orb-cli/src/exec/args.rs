//! The arguments of `exec`, `{"cmd": ["program", "arg", ...], "timeout": "30s", "stdin": "..."}`,
//! checked before anything runs; anything else is `bad_args` saying what is wrong.

use std::time::Duration;

use orb_proto::{ErrorBody, ErrorCode};
use serde::Deserialize;

/// How long a command may run when the arguments name no `timeout` (the command's deadline
/// still applies when it comes first).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `timeout` (24h): the server's default `max_deadline`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The JSON Schema of `exec`'s arguments, declared in the agent's hello: the shape [`parse`]
/// takes (it still checks what a schema cannot say: NUL bytes, the timeout's text and bounds).
pub fn schema() -> serde_json::Value {
    serde_json::json!({
        "description": "an argv run without a shell, when [exec] allow permits it",
        "type": "object",
        "properties": {
            "cmd": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "timeout": {"type": "string", "description": "a duration such as \"30s\" (default), at most 24h"},
            "stdin": {"type": "string"}
        },
        "required": ["cmd"],
        "additionalProperties": false
    })
}

/// The arguments as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    cmd: Vec<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    stdin: Option<String>,
}

/// Checked arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecArgs {
    /// The program and its arguments: at least the program, no NUL byte anywhere.
    pub argv: Vec<String>,
    /// How long the command may run before its process group is killed.
    pub timeout: Duration,
    /// Written to the command's standard input (else it reads end of file at once).
    pub stdin: Option<String>,
}

/// Parses and checks the raw JSON arguments.
///
/// # Errors
/// `bad_args` naming the problem (`exec: ...`).
pub fn parse(raw: &[u8]) -> Result<ExecArgs, ErrorBody> {
    let bad = |m: String| ErrorBody::new(ErrorCode::BadArgs, orb_proto::bounded(format!("exec: {m}")));
    let r: Raw = serde_json::from_slice(raw).map_err(|e| {
        bad(format!(r#"{e}; expected {{"cmd": ["program", "arg", ...], "timeout": "30s", "stdin": "..."}}"#))
    })?;
    match r.cmd.first() {
        None => return Err(bad("'cmd' is empty: give at least the program".into())),
        Some(p) if p.is_empty() => return Err(bad("'cmd' names no program (its first string is empty)".into())),
        Some(_) => {}
    }
    if let Some(i) = r.cmd.iter().position(|a| a.contains('\0')) {
        return Err(bad(format!("'cmd' argument {i} contains a NUL byte")));
    }
    let timeout = match r.timeout.as_deref() {
        None => DEFAULT_TIMEOUT,
        Some(t) => {
            let d = humantime::parse_duration(t).map_err(|e| bad(format!("'timeout' = \"{t}\": {e}")))?;
            if d.is_zero() {
                return Err(bad("'timeout' must be above zero".into()));
            }
            if d > MAX_TIMEOUT {
                return Err(bad(format!("'timeout' is at most 24h ({} s asked)", d.as_secs())));
            }
            d
        }
    };
    Ok(ExecArgs { argv: r.cmd, timeout, stdin: r.stdin })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cmd_is_required_timeout_and_stdin_are_optional() {
        let a = parse(br#"{"cmd": ["echo", "hi"]}"#).unwrap();
        assert_eq!(a, ExecArgs { argv: vec!["echo".into(), "hi".into()], timeout: DEFAULT_TIMEOUT, stdin: None });
        let a = parse(br#"{"cmd": ["cat"], "timeout": "1m 30s", "stdin": "x\n"}"#).unwrap();
        assert_eq!(a.timeout, Duration::from_secs(90));
        assert_eq!(a.stdin.as_deref(), Some("x\n"));
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        for (args, says) in [
            ("null", "expected"),
            (r#""uname -s""#, "expected"),
            (r#"{"timeout": "1s"}"#, "missing field `cmd`"),
            (r#"{"cmd": "uname -s"}"#, "invalid type"),
            (r#"{"cmd": ["uname", 1]}"#, "invalid type"),
            (r#"{"cmd": []}"#, "'cmd' is empty"),
            (r#"{"cmd": [""]}"#, "names no program"),
            (r#"{"cmd": ["echo", "a\u0000b"]}"#, "argument 1 contains a NUL"),
            (r#"{"cmd": ["echo"], "shell": true}"#, "unknown field `shell`"),
            (r#"{"cmd": ["echo"], "timeout": "soon"}"#, "'timeout' = \"soon\""),
            (r#"{"cmd": ["echo"], "timeout": "0s"}"#, "above zero"),
            (r#"{"cmd": ["echo"], "timeout": "25h"}"#, "at most 24h"),
            (r#"{"cmd": ["echo"], "stdin": 5}"#, "invalid type"),
        ] {
            let e = parse(args.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadArgs, "{args}");
            assert!(e.message.starts_with("exec: ") && e.message.contains(says), "{args}: {}", e.message);
        }
    }

    #[test]
    fn the_schema_takes_what_parse_takes_and_names_the_path_of_a_wrong_shape() {
        let s = orb_client::schema::ArgsSchema::compile(schema()).unwrap();
        for good in [r#"{"cmd": ["echo", "hi"]}"#, r#"{"cmd": ["cat"], "timeout": "1m 30s", "stdin": "x\n"}"#] {
            s.check("exec", good.as_bytes()).unwrap();
            parse(good.as_bytes()).unwrap();
        }
        for (args, says) in [
            ("null", "exec: (root): null is not of type \"object\""),
            (r#"{"timeout": "1s"}"#, "exec: (root): \"cmd\" is a required property"),
            (r#"{"cmd": ["uname", 1]}"#, "exec: /cmd/1: 1 is not of type \"string\""),
            (r#"{"cmd": []}"#, "exec: /cmd: [] has less than 1 item"),
            (r#"{"cmd": ["echo"], "stdin": 5}"#, "exec: /stdin: 5 is not of type \"string\""),
            (r#"{"cmd": ["echo"], "shell": true}"#, "'shell' was unexpected"),
        ] {
            let e = s.check("exec", args.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgs, "{args}");
            assert!(e.message.starts_with(says) || e.message.contains(says), "{args}: {}", e.message);
        }
    }
}

//! Turning command-line text into protocol values: command arguments (JSON or a bare word)
//! and `KEY=VALUE` pairs.

use std::collections::BTreeMap;

use crate::exit::Failure;

/// Parses `ARGS`: text starting with `{`, `[` or `"` must be valid JSON; a JSON number, `true`,
/// `false` or `null` is taken as such; any other bare word is a JSON string.
pub fn command_args(raw: Option<&str>) -> Result<bytes::Bytes, Failure> {
    json_value(raw, "ARGS")
}

/// Parses a JSON value given on the command line or in a file as [`command_args`] does; an
/// error names it as `what` (`BODY`, `'agent.will_body'`). Absent, it is `null`.
pub fn json_value(raw: Option<&str>, what: &str) -> Result<bytes::Bytes, Failure> {
    let Some(raw) = raw else {
        return Ok(bytes::Bytes::from_static(b"null"));
    };
    let trimmed = raw.trim_start();
    let value: serde_json::Value = if trimmed.starts_with(['{', '[', '"']) {
        serde_json::from_str(raw).map_err(|e| Failure::usage(format!("{what} is not valid JSON: {e}")))?
    } else {
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::Null)) => v,
            _ => serde_json::Value::String(raw.to_owned()),
        }
    };
    let bytes = serde_json::to_vec(&value).map_err(|e| Failure::usage(e.to_string()))?;
    Ok(bytes::Bytes::from(bytes))
}

/// Parses repeated `KEY=VALUE` flags into a map.
pub fn pairs(items: &[String], what: &str) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            return Err(Failure::usage(format!("{what} '{item}' must be KEY=VALUE")));
        };
        if k.is_empty() {
            return Err(Failure::usage(format!("{what} '{item}' has an empty key")));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(s: &str) -> String {
        String::from_utf8(command_args(Some(s)).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn bare_words_become_strings_and_json_stays_json() {
        assert_eq!(parse("hello"), r#""hello""#);
        assert_eq!(parse("web 1"), r#""web 1""#);
        assert_eq!(parse("42"), "42");
        assert_eq!(parse("-1.5"), "-1.5");
        assert_eq!(parse("true"), "true");
        assert_eq!(parse("null"), "null");
        assert_eq!(parse(r#"{"hello":"world"}"#), r#"{"hello":"world"}"#);
        assert_eq!(parse("[1,2]"), "[1,2]");
        assert_eq!(parse(r#""quoted""#), r#""quoted""#);
        assert_eq!(String::from_utf8(command_args(None).unwrap().to_vec()).unwrap(), "null");
    }

    #[test]
    fn broken_json_is_a_usage_error() {
        for bad in ["{", "[1,", r#"{"a":}"#, r#""unterminated"#] {
            assert_eq!(command_args(Some(bad)).unwrap_err().code, crate::exit::USAGE, "{bad}");
        }
    }

    #[test]
    fn pairs_need_an_equals_sign() {
        let m = pairs(&["role=web".into(), "empty=".into()], "tag").unwrap();
        assert_eq!(m["role"], "web");
        assert_eq!(m["empty"], "");
        assert!(pairs(&["role".into()], "tag").is_err());
        assert!(pairs(&["=x".into()], "tag").is_err());
    }
}

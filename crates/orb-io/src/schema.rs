//! JSON Schemas for command arguments (decision 0030): an [`ArgsSchema`] is compiled once, when
//! a handler is registered with it (agents) or when a `hello` declares it (the server checks it),
//! and then checks each command's arguments before the handler runs, answering `invalid_args`
//! with the JSON Pointer path at fault. Compilation never fetches anything: remote and file
//! `$ref`s are refused, and `pattern`s use a linear-time regex engine with a size limit.

use std::sync::Arc;

use jsonschema::{PatternOptions, Validator};
use orb_proto::message::MAX_HELLO_SCHEMA_BYTES;
use orb_proto::{ErrorBody, ErrorCode};
use serde_json::Value;

/// Bytes a compiled `pattern` regex may take (the `regex` crate's size limit): a schema cannot
/// make its validator large, however its patterns are written.
const MAX_PATTERN_SIZE: usize = 1 << 20;

/// Why a schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The text is not JSON.
    #[error("is not JSON: {0}")]
    NotJson(String),
    /// The JSON breaks the body limits (depth 64, valid escapes).
    #[error("breaks the body limits: {0}")]
    Body(String),
    /// The schema (or all schemas of a hello together) is larger than allowed.
    #[error("is {len} bytes, more than the {max} bytes allowed for schemas")]
    TooLarge {
        /// Its size in bytes (as compact JSON).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Neither an object nor a boolean: not a JSON Schema.
    #[error("must be a JSON object or a boolean, not {0}")]
    NotSchema(&'static str),
    /// Not a valid JSON Schema (breaks its meta-schema, a bad regex, a `$ref` that cannot be
    /// resolved without fetching).
    #[error("is not a valid JSON Schema: {0}")]
    Invalid(String),
}

/// A compiled JSON Schema for one command's arguments. Cheap to clone (shared).
#[derive(Clone)]
pub struct ArgsSchema(Arc<Compiled>);

struct Compiled {
    /// The schema as declared.
    source: Value,
    /// Compact JSON bytes of `source`: what counts against [`MAX_HELLO_SCHEMA_BYTES`].
    len: usize,
    validator: Validator,
}

impl std::fmt::Debug for ArgsSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ArgsSchema").field(&self.0.source).finish()
    }
}

impl ArgsSchema {
    /// Compiles `schema` (draft 2020-12 unless its `$schema` names another draft).
    ///
    /// # Errors
    /// [`SchemaError`]: not an object or boolean, larger than [`MAX_HELLO_SCHEMA_BYTES`] as
    /// compact JSON, nested deeper than the body limit, or not a valid schema.
    pub fn compile(schema: Value) -> Result<ArgsSchema, SchemaError> {
        let kind = match &schema {
            Value::Object(_) | Value::Bool(_) => None,
            Value::Null => Some("null"),
            Value::Number(_) => Some("a number"),
            Value::String(_) => Some("a string"),
            Value::Array(_) => Some("an array"),
        };
        if let Some(kind) = kind {
            return Err(SchemaError::NotSchema(kind));
        }
        let text = serde_json::to_vec(&schema).map_err(|e| SchemaError::NotJson(e.to_string()))?;
        if text.len() > MAX_HELLO_SCHEMA_BYTES {
            return Err(SchemaError::TooLarge { len: text.len(), max: MAX_HELLO_SCHEMA_BYTES });
        }
        // The compiler recurses over the schema: hold it to the body depth first.
        orb_proto::body::check(&text).map_err(|e| SchemaError::Body(e.to_string()))?;
        let validator = jsonschema::options()
            .offline()
            .with_pattern_options(PatternOptions::regex().size_limit(MAX_PATTERN_SIZE))
            .build(&schema)
            .map_err(|e| SchemaError::Invalid(orb_proto::bounded(describe(&e))))?;
        Ok(ArgsSchema(Arc::new(Compiled { source: schema, len: text.len(), validator })))
    }

    /// Parses and compiles a schema written as JSON text.
    ///
    /// # Errors
    /// As [`ArgsSchema::compile`], and [`SchemaError::NotJson`].
    pub fn parse(text: &str) -> Result<ArgsSchema, SchemaError> {
        if text.len() > MAX_HELLO_SCHEMA_BYTES {
            return Err(SchemaError::TooLarge { len: text.len(), max: MAX_HELLO_SCHEMA_BYTES });
        }
        orb_proto::body::check(text.as_bytes()).map_err(|e| SchemaError::Body(e.to_string()))?;
        let value = serde_json::from_str(text).map_err(|e| SchemaError::NotJson(orb_proto::bounded(e.to_string())))?;
        ArgsSchema::compile(value)
    }

    /// The schema as declared.
    pub fn source(&self) -> &Value {
        &self.0.source
    }

    /// Its size as compact JSON, in bytes.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Always false: a schema has at least the bytes of `true`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Checks the arguments (raw JSON) of command `cmd`.
    ///
    /// # Errors
    /// `invalid_args`, naming `cmd`, the JSON Pointer path at fault (`(root)` for the arguments
    /// as a whole) and what is wrong there, e.g. `set: /threshold: "hot" is not of type
    /// "number"`; when more than one thing is wrong, the first, and how many more. Arguments that
    /// are not JSON are `invalid_args` too.
    pub fn check(&self, cmd: &str, args: &[u8]) -> Result<(), ErrorBody> {
        let cmd = orb_proto::excerpt(cmd);
        let args: Value = serde_json::from_slice(args).map_err(|e| {
            ErrorBody::new(ErrorCode::InvalidArgs, orb_proto::bounded(format!("{cmd}: arguments are not JSON: {e}")))
        })?;
        let validator = &self.0.validator;
        if validator.is_valid(&args) {
            return Ok(());
        }
        // The slow path only for arguments that fail: which path, what is wrong, how much more.
        let mut errors = validator.iter_errors(&args);
        let Some(first) = errors.next() else { return Ok(()) };
        let more = errors.take(MORE_COUNTED).count();
        let mut message = format!("{cmd}: {}", describe(&first));
        if more > 0 {
            let plus = if more == MORE_COUNTED { "+" } else { "" };
            message = orb_proto::bounded(message);
            message.push_str(&format!(" (and {more}{plus} more)"));
        }
        Err(ErrorBody::new(ErrorCode::InvalidArgs, orb_proto::bounded(message)))
    }
}

/// Further errors counted after the first one reported.
const MORE_COUNTED: usize = 9;

/// `PATH: WHAT`, the path a JSON Pointer into the instance (`(root)` when empty).
fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let path = e.instance_path().as_str();
    let path = if path.is_empty() { "(root)" } else { path };
    format!("{}: {e}", orb_proto::excerpt(path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn threshold() -> ArgsSchema {
        ArgsSchema::compile(json!({
            "type": "object",
            "properties": {"threshold": {"type": "number"}, "unit": {"enum": ["c", "f"]}},
            "required": ["threshold"],
            "additionalProperties": false
        }))
        .unwrap()
    }

    #[test]
    fn good_arguments_pass() {
        threshold().check("set", br#"{"threshold": 21.5, "unit": "c"}"#).unwrap();
    }

    #[test]
    fn a_wrong_type_names_the_path_and_the_problem() {
        let e = threshold().check("set", br#"{"threshold": "hot"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgs);
        assert_eq!(e.message, r#"set: /threshold: "hot" is not of type "number""#);
    }

    #[test]
    fn a_problem_at_the_root_says_root_and_more_problems_are_counted() {
        let e = threshold().check("set", b"null").unwrap_err();
        assert!(e.message.starts_with("set: (root): null is not of type \"object\""), "{}", e.message);
        let e = threshold().check("set", br#"{"threshold": "hot", "unit": "k", "x": 1}"#).unwrap_err();
        assert!(e.message.ends_with("(and 2 more)"), "{}", e.message);
    }

    #[test]
    fn a_nested_path_is_a_json_pointer() {
        let s = ArgsSchema::compile(
            json!({"type": "object", "properties": {"cmd": {"type": "array", "items": {"type": "string"}}}}),
        )
        .unwrap();
        let e = s.check("exec", br#"{"cmd": ["ls", 3]}"#).unwrap_err();
        assert_eq!(e.message, "exec: /cmd/1: 3 is not of type \"string\"");
    }

    #[test]
    fn arguments_that_are_not_json_are_invalid() {
        let e = threshold().check("set", b"{nope").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgs);
        assert!(e.message.starts_with("set: arguments are not JSON"), "{}", e.message);
    }

    #[test]
    fn an_invalid_schema_is_refused_with_the_reason() {
        let e = ArgsSchema::compile(json!({"type": "nmber"})).unwrap_err();
        assert!(matches!(e, SchemaError::Invalid(_)), "{e:?}");
        assert!(e.to_string().contains("/type"), "{e}");
        let e = ArgsSchema::compile(json!({"type": "string", "pattern": "(unclosed"})).unwrap_err();
        assert!(matches!(e, SchemaError::Invalid(_)), "{e:?}");
        assert_eq!(ArgsSchema::compile(json!([1])).unwrap_err(), SchemaError::NotSchema("an array"));
        assert_eq!(ArgsSchema::compile(json!("x")).unwrap_err(), SchemaError::NotSchema("a string"));
        assert!(matches!(ArgsSchema::parse("{").unwrap_err(), SchemaError::NotJson(_)));
    }

    #[test]
    fn a_remote_or_file_ref_is_refused_and_never_fetched() {
        for uri in ["http://127.0.0.1:9/schema.json", "file:///etc/passwd"] {
            let e = ArgsSchema::compile(json!({"$ref": uri})).unwrap_err();
            assert!(matches!(e, SchemaError::Invalid(_)), "{uri}: {e:?}");
        }
        // A local `$ref` into the schema itself is fine.
        let s = ArgsSchema::compile(json!({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"})).unwrap();
        s.check("n", b"3").unwrap();
        assert!(s.check("n", b"3.5").is_err());
    }

    #[test]
    fn an_oversized_or_too_deep_schema_is_refused() {
        let big = json!({"description": "x".repeat(MAX_HELLO_SCHEMA_BYTES)});
        assert!(matches!(ArgsSchema::compile(big).unwrap_err(), SchemaError::TooLarge { .. }));
        let deep = format!("{}true{}", r#"{"not":"#.repeat(80), "}".repeat(80));
        assert!(matches!(ArgsSchema::parse(&deep).unwrap_err(), SchemaError::Body(_)));
    }

    #[test]
    fn boolean_schemas_accept_everything_or_nothing() {
        ArgsSchema::compile(json!(true)).unwrap().check("x", b"[1]").unwrap();
        let e = ArgsSchema::compile(json!(false)).unwrap().check("x", b"1").unwrap_err();
        assert!(e.message.starts_with("x: (root): "), "{}", e.message);
    }
}

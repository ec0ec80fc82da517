//! Body limits: what every body (command arguments, results) must respect so that it stays
//! readable wherever it goes, the job history included. [`check`] is one pass over the bytes of
//! a body already known to be one JSON value: nesting at most [`MAX_BODY_DEPTH`] deep, and no
//! unpaired UTF-16 surrogate escape in any string (serde_json refuses to read those back).

/// How deep arrays and objects may nest in a body.
pub const MAX_BODY_DEPTH: usize = 64;

/// Why a body breaks the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Arrays and objects nest deeper than the limit.
    #[error("the body nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A string holds a `\uD800`-`\uDFFF` escape that is not part of a surrogate pair.
    #[error("the body holds an unpaired surrogate escape at byte {offset}")]
    LoneSurrogate {
        /// Where the escape starts.
        offset: usize,
    },
}

/// Checks a body against the limits. Never panics, whatever the input; for input that is not
/// JSON the answer means nothing.
///
/// # Errors
/// [`BodyError`] naming the first limit broken.
pub fn check(json: &[u8]) -> Result<(), BodyError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        if in_string {
            match b {
                b'"' => in_string = false,
                b'\\' => {
                    if json.get(i + 1) == Some(&b'u') {
                        let unit = hex4(json, i + 2);
                        match unit {
                            Some(0xD800..=0xDBFF) => {
                                let low = (json.get(i + 6) == Some(&b'\\') && json.get(i + 7) == Some(&b'u'))
                                    .then(|| hex4(json, i + 8))
                                    .flatten();
                                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                                    return Err(BodyError::LoneSurrogate { offset: i });
                                }
                                i += 12;
                                continue;
                            }
                            Some(0xDC00..=0xDFFF) => return Err(BodyError::LoneSurrogate { offset: i }),
                            _ => {
                                i += 6;
                                continue;
                            }
                        }
                    }
                    // Any other escape is two bytes.
                    i += 2;
                    continue;
                }
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_BODY_DEPTH {
                        return Err(BodyError::TooDeep { max: MAX_BODY_DEPTH });
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    Ok(())
}

/// The four hex digits at `at` as a number.
fn hex4(json: &[u8], at: usize) -> Option<u32> {
    let digits = json.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    u32::from_str_radix(text, 16).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_limited_and_brackets_in_strings_do_not_count() {
        assert_eq!(check(nested(64).as_bytes()), Ok(()));
        assert_eq!(check(nested(65).as_bytes()), Err(BodyError::TooDeep { max: 64 }));
        let quoted = format!("[\"{}\"]", "[".repeat(500));
        assert_eq!(check(quoted.as_bytes()), Ok(()));
        assert_eq!(check(br#"{"a":{"b":[{"c":"\"[[["}]}}"#), Ok(()));
    }

    #[test]
    fn surrogates_must_come_in_pairs() {
        assert_eq!(check(br#""\ud83d\ude00""#), Ok(()), "a pair is one character");
        assert_eq!(check(br#""\u00e9 \\ud800""#), Ok(()), "an escaped backslash, then text");
        assert_eq!(check(br#""\ud800""#), Err(BodyError::LoneSurrogate { offset: 1 }));
        assert!(check(br#"{"k":"x\ud800y"}"#).is_err());
        assert!(check(br#""\udc00""#).is_err(), "a low surrogate alone");
        assert!(check(br#"{"\ud800":1}"#).is_err(), "keys too");
        assert!(check(br#""\ud800\u0041""#).is_err(), "followed by something else");
    }

    fn arb_json() -> impl Strategy<Value = String> {
        let string = prop::collection::vec(
            prop_oneof![
                Just("a".to_owned()),
                Just("\\\\".to_owned()),
                Just("\\\"".to_owned()),
                Just("[{".to_owned()),
                (0u32..0x1_0000).prop_map(|u| format!("\\u{u:04x}")),
            ],
            0..6,
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat()));
        let leaf = prop_oneof![Just("1".to_owned()), Just("null".to_owned()), string.clone()];
        leaf.prop_recursive(100, 400, 3, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(","))),
                (string.clone(), inner).prop_map(|(k, v)| format!("{{{k}:{v}}}")),
            ]
        })
    }

    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    proptest! {
        #[test]
        fn check_agrees_with_what_serde_json_can_read_back(text in arb_json()) {
            let parsed = serde_json::from_str::<serde_json::Value>(&text);
            let readable = parsed.as_ref().is_ok_and(|v| depth(v) <= MAX_BODY_DEPTH);
            prop_assert_eq!(check(text.as_bytes()).is_ok(), readable, "{}", text);
        }

        #[test]
        fn check_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = check(&data);
        }
    }
}

//! Body limits: what a body (command arguments, a result) must respect beyond being one JSON
//! value, so that whoever stores it can read it back (the job history does, with serde_json).
//! [`check`] makes one pass over the bytes: arrays and objects nest at most [`MAX_BODY_DEPTH`]
//! deep, and no string (key or value) holds an unpaired UTF-16 surrogate escape. The codecs
//! only check that a body is one JSON value; whoever accepts a body to store or relay it calls
//! [`check`] and refuses a failure with `bad_body`.

/// How deep arrays and objects may nest in a body (`[]` is depth 1, a scalar depth 0).
///
/// Half of serde_json's own recursion limit (128), so a body within it always reads back, also
/// when it is embedded a few levels deep in another document (a job history record).
pub const MAX_BODY_DEPTH: usize = 64;

/// Why a body breaks the body limits (answered with `bad_body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Arrays and objects nest deeper than [`MAX_BODY_DEPTH`].
    #[error("body nests arrays and objects deeper than {max} levels")]
    TooDeep {
        /// The limit that was passed ([`MAX_BODY_DEPTH`]).
        max: usize,
    },
    /// A string holds a `\uD800`–`\uDBFF` escape not followed by a `\uDC00`–`\uDFFF` one, or a
    /// `\uDC00`–`\uDFFF` escape without one before it: text no JSON reader can decode.
    #[error("body string has an unpaired surrogate escape at byte {offset}")]
    LoneSurrogate {
        /// Offset in the body of the backslash that starts the escape.
        offset: usize,
    },
}

/// Why an error's `data` was refused (a `bad_frame`: it is part of the envelope's `error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// The bytes are not exactly one JSON value.
    #[error("not one JSON value: {0}")]
    NotJson(String),
    /// One JSON value, but beyond the body limits.
    #[error(transparent)]
    Limits(#[from] BodyError),
}

/// Reads an error's `data` (`docs/protocol.md` section 3): exactly one JSON value within the
/// body limits, as it will be stored and relayed; `None` for `null`, which is no data (as an
/// absent member is, in every codec).
///
/// # Errors
/// [`DataError::NotJson`] for bytes that are not one JSON value; [`DataError::Limits`] for one
/// that breaks the body limits.
pub fn error_data(json: &[u8]) -> Result<Option<Box<serde_json::value::RawValue>>, DataError> {
    let raw: Box<serde_json::value::RawValue> =
        serde_json::from_slice(json).map_err(|e| DataError::NotJson(crate::text::bounded(e.to_string())))?;
    check(raw.get().as_bytes())?;
    Ok((raw.get() != "null").then_some(raw))
}

/// Checks a body that is already known to be one valid JSON value against the body limits.
///
/// One linear pass, no allocation. On bytes that are not JSON it never panics (and its answer
/// means nothing).
///
/// # Errors
/// The first limit broken, in byte order: [`BodyError::TooDeep`] or [`BodyError::LoneSurrogate`].
pub fn check(json: &[u8]) -> Result<(), BodyError> {
    let mut depth = 0usize;
    let mut i = 0;
    // Outside strings only brackets and quotes matter; every other byte is part of a number,
    // a literal, a separator or whitespace.
    while let Some(skip) =
        json.get(i..).and_then(|rest| rest.iter().position(|b| matches!(b, b'"' | b'[' | b']' | b'{' | b'}')))
    {
        i += skip;
        match json[i] {
            b'"' => i = string_end(json, i + 1)?,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_BODY_DEPTH {
                    return Err(BodyError::TooDeep { max: MAX_BODY_DEPTH });
                }
                i += 1;
            }
            // `]` or `}`; more closers than openers is not JSON, so just do not underflow.
            _ => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
        }
    }
    Ok(())
}

/// Scans a string whose contents start at `i` (just after the opening quote) and returns the
/// offset just after its closing quote, or the end of `json` when it is unterminated.
fn string_end(json: &[u8], mut i: usize) -> Result<usize, BodyError> {
    loop {
        let Some(skip) = json.get(i..).and_then(|rest| rest.iter().position(|b| matches!(b, b'"' | b'\\'))) else {
            return Ok(json.len());
        };
        i += skip;
        if json[i] == b'"' {
            return Ok(i + 1);
        }
        // A backslash: `\uXXXX` is six bytes (twelve for a surrogate pair), any other escape two.
        if json.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        match hex4(json, i + 2) {
            Some(0xD800..=0xDBFF) => {
                let low = json.get(i + 6) == Some(&b'\\') && json.get(i + 7) == Some(&b'u');
                if !(low && matches!(hex4(json, i + 8), Some(0xDC00..=0xDFFF))) {
                    return Err(BodyError::LoneSurrogate { offset: i });
                }
                i += 12;
            }
            Some(0xDC00..=0xDFFF) => return Err(BodyError::LoneSurrogate { offset: i }),
            // Another code point, or not four hex digits (not JSON): move past `\u`.
            Some(_) => i += 6,
            None => i += 2,
        }
    }
}

/// The four hex digits at `at` as a number; `None` unless there are four of them.
fn hex4(json: &[u8], at: usize) -> Option<u16> {
    let digits = json.get(at..at.checked_add(4)?)?;
    digits.iter().try_fold(0u16, |n, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some((n << 4) | u16::from(d))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nested(depth: usize, open: &str, close: &str) -> String {
        format!("{}1{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_one_more_level_fails() {
        for (open, close) in [("[", "]"), ("{\"k\":", "}")] {
            assert_eq!(check(nested(MAX_BODY_DEPTH, open, close).as_bytes()), Ok(()));
            let deep = nested(MAX_BODY_DEPTH + 1, open, close);
            assert_eq!(check(deep.as_bytes()), Err(BodyError::TooDeep { max: MAX_BODY_DEPTH }));
        }
        // Siblings do not add up: depth is how deep, not how many.
        let wide = format!("[{}]", vec![nested(MAX_BODY_DEPTH - 1, "[", "]"); 100].join(","));
        assert_eq!(check(wide.as_bytes()), Ok(()));
        // What serde_json itself refuses (past 128 levels) is refused here too.
        assert!(check(nested(200, "[", "]").as_bytes()).is_err());
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let quoted = format!("[\"{}\",{{\"{}\":1}}]", "[".repeat(500), "{".repeat(500));
        assert_eq!(check(quoted.as_bytes()), Ok(()));
        assert_eq!(check(br#"{"a":{"b":[{"c":"\"[[[\\"}]}}"#), Ok(()));
    }

    #[test]
    fn surrogate_escapes_must_come_in_pairs() {
        assert_eq!(check(br#""\ud83d\ude00""#), Ok(()), "a pair is one character");
        assert_eq!(check(br#""\uD83D\uDE00 \u00e9 \u0000 \uFFFF""#), Ok(()), "upper case, other code points");
        assert_eq!(check(br#""\\ud800""#), Ok(()), "an escaped backslash, then text");
        assert_eq!(check(br#""\\\ud83d\ude00""#), Ok(()));
        assert_eq!(check(br#""\ud800""#), Err(BodyError::LoneSurrogate { offset: 1 }));
        assert_eq!(check(br#""\\\ud800""#), Err(BodyError::LoneSurrogate { offset: 3 }));
        assert_eq!(check(br#"{"k":"x\ud800y"}"#), Err(BodyError::LoneSurrogate { offset: 7 }));
        assert_eq!(check(br#""\udc00""#), Err(BodyError::LoneSurrogate { offset: 1 }), "a low one alone");
        assert_eq!(check(br#"{"\udbff":1}"#), Err(BodyError::LoneSurrogate { offset: 2 }), "keys too");
        assert!(check(br#""\ud800\u0041""#).is_err(), "followed by another escape");
        assert!(check(br#""\ud800\ud800""#).is_err(), "two high ones");
        assert!(check(br#""\ud800\n""#).is_err());
        assert!(check(br#"["\ude00\ud83d"]"#).is_err(), "a pair in the wrong order");
        assert!(check(br#"["a","\ud83d"]"#).is_err(), "high at the end of the string");
    }

    #[test]
    fn messages_name_the_limit_and_the_place() {
        assert_eq!(
            BodyError::TooDeep { max: MAX_BODY_DEPTH }.to_string(),
            "body nests arrays and objects deeper than 64 levels"
        );
        assert_eq!(
            BodyError::LoneSurrogate { offset: 7 }.to_string(),
            "body string has an unpaired surrogate escape at byte 7"
        );
    }

    #[test]
    fn bytes_that_are_not_json_do_not_panic() {
        for junk in [
            &b""[..],
            b"\"",
            b"\"\\",
            b"\"\\u",
            b"\"\\ud8",
            b"\"\\ud800\\",
            b"\"\\ud800\\u",
            b"\"\\ud800\\udc",
            b"\"\\uzzzz\"",
            b"]]]}}}",
            b"\xff\xfe\"\\u\xff\xff\xff\xff",
        ] {
            let _ = check(junk);
        }
        assert_eq!(check(b"\"\\ud800\\udc"), Err(BodyError::LoneSurrogate { offset: 1 }));
    }

    // ---- property tests

    /// One piece of a JSON string's contents, written the way a sender might spell it; with
    /// `lone`, also surrogate escapes that are not part of a pair.
    fn arb_string_piece(lone: bool) -> BoxedStrategy<String> {
        let hex = |u: u16, upper: bool| if upper { format!("\\u{u:04X}") } else { format!("\\u{u:04x}") };
        let good = prop_oneof![
            4 => "[a-z é🦀\\[\\]{}:,]{1,4}",
            2 => prop::sample::select(vec!["\\\\", "\\\"", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\\\u", "\\\\ud800"])
                .prop_map(str::to_owned),
            1 => (0u16..0xd800, any::<bool>()).prop_map(move |(u, up)| hex(u, up)),
            1 => (0xe000u16..=0xffff, any::<bool>()).prop_map(move |(u, up)| hex(u, up)),
            1 => (0xd800u16..0xdc00, 0xdc00u16..0xe000, any::<bool>())
                .prop_map(move |(h, l, up)| format!("{}{}", hex(h, up), hex(l, !up))),
        ];
        if !lone {
            return good.boxed();
        }
        prop_oneof![
            12 => good,
            1 => (0xd800u16..0xdc00, any::<bool>()).prop_map(move |(u, up)| hex(u, up)),
            1 => (0xdc00u16..0xe000, any::<bool>()).prop_map(move |(u, up)| hex(u, up)),
        ]
        .boxed()
    }

    fn arb_string(lone: bool) -> BoxedStrategy<String> {
        prop::collection::vec(arb_string_piece(lone), 0..4)
            .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
            .boxed()
    }

    /// A small JSON value (depth at most 3), as text.
    fn arb_small(lone: bool) -> BoxedStrategy<String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("-1.5e-3".to_owned()),
            arb_string(lone),
        ];
        leaf.prop_recursive(3, 12, 3, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[ {} ]", v.join(" , "))),
                prop::collection::vec((arb_string(lone), inner), 0..3).prop_map(|kv| {
                    // Keys start with their index, so no two are equal (serde_json keeps only the
                    // last of equal keys, and `depth` below would not see the others).
                    let members: Vec<String> =
                        kv.into_iter().enumerate().map(|(i, (k, v))| format!("\"{i}{}:{v}", &k[1..])).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
        .boxed()
    }

    /// A JSON value as text whose depth is anywhere from 0 to about 100 (often near the limit):
    /// a small value wrapped in arrays and objects with small siblings. Strings may hold lone
    /// surrogates in the innermost value and in one wrapping layer.
    fn arb_json() -> impl Strategy<Value = String> {
        let layer = (any::<bool>(), arb_string(false), prop::option::weighted(0.3, arb_small(false)));
        let layers =
            prop_oneof![0usize..=97, 58usize..=68].prop_flat_map(move |n| prop::collection::vec(layer.clone(), n));
        let poison = prop::option::of((any::<prop::sample::Index>(), arb_string(true)));
        (arb_small(true), layers, poison).prop_map(|(core, mut layers, poison)| {
            if let Some((at, bad)) = poison.filter(|_| !layers.is_empty()) {
                let i = at.index(layers.len());
                layers[i].1 = bad;
            }
            layers.into_iter().fold(core, |inner, (array, key, sibling)| match (array, sibling) {
                // Member names start with `k` or are `s`, so none repeats (see `arb_small`).
                (true, None) => format!("[{inner}]"),
                (true, Some(s)) => format!("[{s},{key},{inner}]"),
                (false, None) => format!("{{\"k{}:{inner}}}", &key[1..]),
                (false, Some(s)) => format!("{{\"s\":{s},\"k{}:{inner}}}", &key[1..]),
            })
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
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The point of the limits: a body passes exactly when serde_json can read it back
        /// (no unpaired surrogates) within the depth limit.
        #[test]
        fn check_passes_exactly_what_serde_json_reads_back_within_the_depth_limit(text in arb_json()) {
            // Every generated text is JSON as far as a router is concerned (what the codecs check).
            prop_assert!(serde_json::from_str::<&serde_json::value::RawValue>(&text).is_ok(), "{}", text);
            let value = serde_json::from_slice::<serde_json::Value>(text.as_bytes());
            let readable = value.as_ref().is_ok_and(|v| depth(v) <= MAX_BODY_DEPTH);
            prop_assert_eq!(check(text.as_bytes()).is_ok(), readable, "{} -> {:?}", text, value.err());
        }

        #[test]
        fn check_never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = check(&data);
        }

        /// Almost-JSON (a valid body cut short or with bytes changed) is the likelier hostile input.
        #[test]
        fn check_never_panics_on_damaged_json(
            text in arb_json(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = text.into_bytes();
            for (i, b) in edits {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = check(&bytes);
        }
    }
}

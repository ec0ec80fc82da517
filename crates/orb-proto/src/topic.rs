//! Topics and subscription patterns (section 7 of the pub/sub protocol): a topic is
//! dot-separated segments (`telemetry.gw-1.cpu`); a pattern may use `*` for exactly one segment
//! and a final `>` for one or more remaining segments (`telemetry.*.cpu`, `telemetry.>`). Topics
//! whose first segment starts with `$` are the server's (its events under `$orb.`; the others kept
//! for it, as in MQTT): only it publishes there. Checked and matched here, sans I/O.

use crate::envelope::ErrorBody;
use crate::error::ErrorCode;

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC: usize = 256;
/// Most segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 32;
/// The namespace of the server's own events.
pub const RESERVED: &str = "$orb.";
/// What the first segment of every topic only the server publishes on starts with.
pub const SERVER_PREFIX: char = '$';

/// A checked topic a message is published on: no wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

/// A checked subscription pattern: a topic whose segments may be `*`, and whose last may be `>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern(String);

impl Topic {
    /// Checks `text` as a topic to publish on.
    ///
    /// # Errors
    /// `bad_topic` naming the segment or character at fault.
    pub fn parse(text: &str) -> Result<Topic, ErrorBody> {
        for (i, seg) in segments(text)?.enumerate() {
            if seg == "*" || seg == ">" {
                return Err(bad(text, &format!("segment {} is a wildcard; publish on a topic without * or >", i + 1)));
            }
        }
        Ok(Topic(text.to_owned()))
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether only the server publishes on it: its first segment starts with `$` (`$orb`, the
    /// server's `$orb.` events, and any other `$` topic, kept for the server as in MQTT).
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(SERVER_PREFIX)
    }

    /// The topic as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// A topic as the server relayed it (checked there): taken as is, without checking it again
    /// (a client's hot path). A malformed one merely matches nothing sensible.
    pub fn relayed(text: String) -> Topic {
        Topic(text)
    }
}

impl Pattern {
    /// Checks `text` as a subscription pattern.
    ///
    /// # Errors
    /// `bad_topic` naming the segment at fault (a `>` that is not last, a wildcard inside a
    /// segment).
    pub fn parse(text: &str) -> Result<Pattern, ErrorBody> {
        let segs: Vec<&str> = segments(text)?.collect();
        for (i, seg) in segs.iter().enumerate() {
            if *seg == ">" && i + 1 != segs.len() {
                return Err(bad(text, &format!("segment {}: > stands for the rest and must come last", i + 1)));
            }
        }
        Ok(Pattern(text.to_owned()))
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `topic` matches. A pattern without wildcards is one comparison, and `a.b.>` a
    /// prefix test; others are matched segment by segment.
    pub fn matches(&self, topic: &Topic) -> bool {
        let (p, t) = (self.0.as_str(), topic.0.as_str());
        if !p.contains(['*', '>']) {
            return p == t;
        }
        if let Some(prefix) = p.strip_suffix(".>").filter(|pre| !pre.contains(['*', '>'])) {
            return t.len() > prefix.len() + 1 && t.starts_with(prefix) && t.as_bytes()[prefix.len()] == b'.';
        }
        matches(p, t)
    }

    /// The pattern's segments.
    pub fn segments(&self) -> std::str::Split<'_, char> {
        self.0.split('.')
    }

    /// Whether every topic `other` matches, this pattern matches too (an allow-list entry
    /// `telemetry.>` covers a subscription to `telemetry.*.cpu`, not one to `>`).
    pub fn covers(&self, other: &Pattern) -> bool {
        let (mine, theirs): (Vec<&str>, Vec<&str>) = (self.segments().collect(), other.segments().collect());
        // A leading wildcard here does not match `$` topics, which a leading `$x` there names.
        if matches!(mine[0], "*" | ">") && theirs[0].starts_with('$') {
            return false;
        }
        covers(&mine, &theirs)
    }
}

fn covers(mine: &[&str], theirs: &[&str]) -> bool {
    match (mine.first(), theirs.first()) {
        (None, None) => true,
        // Whatever `theirs` still needs is one segment or more, all of which `>` takes.
        (Some(&">"), Some(_)) => true,
        (Some(&"*"), Some(t)) if *t != ">" => covers(&mine[1..], &theirs[1..]),
        (Some(m), Some(t)) if m == t && *m != "*" => covers(&mine[1..], &theirs[1..]),
        _ => false,
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether checked `pattern` matches checked `topic`, segment by segment. A pattern starting
/// with a wildcard does not match a topic whose first segment starts with `$` (the server's
/// `$orb.` events reach only those who name them, as MQTT does for `$` topics).
fn matches(pattern: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (pattern.starts_with('*') || pattern.starts_with('>')) {
        return false;
    }
    let mut topic = topic.split('.');
    for p in pattern.split('.') {
        match (p, topic.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    topic.next().is_none()
}

/// The segments of `text`, each checked: not empty, no whitespace or control characters, a
/// wildcard only as a whole segment.
fn segments(text: &str) -> Result<std::str::Split<'_, char>, ErrorBody> {
    if text.is_empty() {
        return Err(bad(text, "it is empty"));
    }
    if text.len() > MAX_TOPIC {
        return Err(bad(text, &format!("it is longer than {MAX_TOPIC} bytes")));
    }
    let count = text.split('.').count();
    if count > MAX_SEGMENTS {
        return Err(bad(text, &format!("it has {count} segments, more than {MAX_SEGMENTS}")));
    }
    for (i, seg) in text.split('.').enumerate() {
        let n = i + 1;
        if seg.is_empty() {
            return Err(bad(text, &format!("segment {n} is empty (two dots, or a dot at an end)")));
        }
        if seg.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(text, &format!("segment {n} contains whitespace or a control character")));
        }
        if seg != "*" && seg != ">" && (seg.contains('*') || seg.contains('>')) {
            return Err(bad(text, &format!("segment {n}: * and > stand alone as a whole segment")));
        }
    }
    Ok(text.split('.'))
}

fn bad(text: &str, why: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadTopic, format!("topic '{}': {why}", crate::excerpt(text)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(pattern: &str, topic: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(&Topic::parse(topic).unwrap())
    }

    #[test]
    fn the_fast_paths_agree_with_the_segment_matcher() {
        for (p, t) in [
            ("a.b", "a.b"),
            ("a.b", "a.bc"),
            ("a.b.>", "a.b.c"),
            ("a.b.>", "a.b"),
            ("a.b.>", "a.bc.d"),
            ("a.b.>", "a.b.c.d"),
            ("$orb.>", "$orb.x"),
        ] {
            let pattern = Pattern::parse(p).unwrap();
            assert_eq!(pattern.matches(&Topic::parse(t).unwrap()), matches(p, t), "{p} vs {t}");
        }
    }

    #[test]
    fn wildcards_match_one_segment_or_the_rest() {
        assert!(m("a.b.c", "a.b.c"));
        assert!(!m("a.b.c", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(m("a.*.c", "a.x.c"));
        assert!(!m("a.*.c", "a.x.y.c"));
        assert!(m("a.>", "a.b"));
        assert!(m("a.>", "a.b.c.d"));
        assert!(!m("a.>", "a"), "> is one or more segments");
        assert!(m(">", "anything.at.all"));
        assert!(m("*", "one"));
        assert!(!m("*", "one.two"));
        assert!(m("*.*.>", "a.b.c"));
        assert!(!m("*.*.>", "a.b"));
        assert!(!m(">", "$orb.presence.gw-1"), "wildcards do not reach $ topics");
        assert!(!m("*.presence.>", "$orb.presence.gw-1"));
        assert!(m("$orb.>", "$orb.presence.gw-1"));
        assert!(m("$orb.*.gw-1", "$orb.presence.gw-1"));
    }

    #[test]
    fn bad_topics_and_patterns_name_the_segment() {
        for (text, says) in [
            ("", "empty"),
            ("a..b", "segment 2 is empty"),
            (".a", "segment 1 is empty"),
            ("a.", "segment 2 is empty"),
            ("a b", "whitespace"),
            ("a.b*", "stand alone"),
            ("a.>.c", "must come last"),
        ] {
            let e = Pattern::parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadTopic);
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
        assert!(Topic::parse("a.*").unwrap_err().message.contains("segment 2 is a wildcard"));
        assert!(Topic::parse(&"a".repeat(MAX_TOPIC + 1)).is_err());
        assert!(Topic::parse(&vec!["a"; MAX_SEGMENTS + 1].join(".")).is_err());
        assert!(Topic::parse("$orb.presence.gw-1").unwrap().is_reserved());
        for reserved in ["$orb", "$foo.x", "$SYS.broker", "$"] {
            assert!(Topic::parse(reserved).unwrap().is_reserved(), "{reserved}");
        }
        for open in ["orb.presence", "orb", "a.$orb", "a.$b.c", "x$"] {
            assert!(!Topic::parse(open).unwrap().is_reserved(), "{open}");
        }
    }

    /// The obvious matcher, written independently: wildcards expanded recursively.
    fn brute(p: &[&str], t: &[&str]) -> bool {
        if t.first().is_some_and(|s| s.starts_with('$')) && matches!(p.first(), Some(&"*" | &">")) {
            return false;
        }
        brute_segments(p, t)
    }

    fn brute_segments(p: &[&str], t: &[&str]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(&">"), Some(_)) => p.len() == 1,
            (Some(&"*"), Some(_)) => brute_segments(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => brute_segments(&p[1..], &t[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn the_matcher_agrees_with_the_brute_force_one(
            topic in prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "$orb"]), 1..6),
            pattern in prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "$orb"]), 1..6),
            tail in any::<bool>(),
        ) {
            let mut pattern = pattern;
            if tail {
                pattern.push(">");
            }
            let (p, t) = (pattern.join("."), topic.join("."));
            prop_assert_eq!(m(&p, &t), brute(&pattern, &topic), "{} vs {}", p, t);
        }

        /// `a.covers(b)` exactly when no topic (up to one segment longer than either pattern)
        /// matches `b` but not `a`.
        #[test]
        fn covers_agrees_with_trying_every_short_topic(
            a in prop::collection::vec(prop::sample::select(vec!["a", "$orb", "*", ">"]), 1..4),
            b in prop::collection::vec(prop::sample::select(vec!["a", "$orb", "*", ">"]), 1..4),
        ) {
            let (a, b) = (a.join("."), b.join("."));
            let (Ok(pa), Ok(pb)) = (Pattern::parse(&a), Pattern::parse(&b)) else { return Ok(()) };
            let alphabet = ["a", "b", "$orb"];
            let mut topics: Vec<Vec<&str>> = vec![vec![]];
            let mut all = Vec::new();
            for _ in 0..5 {
                topics = topics
                    .iter()
                    .flat_map(|t| alphabet.iter().map(move |s| [t.as_slice(), &[*s]].concat()))
                    .collect();
                all.extend(topics.iter().map(|t| Topic::parse(&t.join(".")).unwrap()));
            }
            let brute = all.iter().all(|t| !pb.matches(t) || pa.matches(t));
            prop_assert_eq!(pa.covers(&pb), brute, "{} covers {}", a, b);
        }
    }
}

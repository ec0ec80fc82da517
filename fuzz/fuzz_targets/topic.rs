//! Topics and subscription patterns (`orb_proto::topic`) over arbitrary text: checking never
//! panics, the matcher (with its fast paths) agrees with a brute-force one over segments, a
//! topic is a pattern that matches itself, `covers` is reflexive and sound (a pattern that
//! covers another matches every topic the other matches).
//!
//! Input: pattern, pattern and topic, separated by NUL bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orb_proto::topic::{MAX_SEGMENTS, MAX_TOPIC, Pattern, Topic};

/// Segment by segment, by the letter of the specification: `*` is one segment, a final `>` one
/// or more, and a leading wildcard does not match a topic whose first segment starts with `$`.
fn reference(pattern: &str, topic: &str) -> bool {
    fn segs(p: &[&str], t: &[&str]) -> bool {
        match (p.split_first(), t.split_first()) {
            (None, None) => true,
            (Some((&">", [])), Some(_)) => true,
            (Some((&"*", p_rest)), Some((_, t_rest))) => segs(p_rest, t_rest),
            (Some((p0, p_rest)), Some((t0, t_rest))) if p0 == t0 => segs(p_rest, t_rest),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    if matches!(p[0], "*" | ">") && t[0].starts_with('$') {
        return false;
    }
    segs(&p, &t)
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    let (a, rest) = orb_fuzz::split_at_byte(data, 0);
    let (b, t) = orb_fuzz::split_at_byte(rest, 0);
    let (Some(a), Some(b), Some(t)) = (text(a), text(b), text(t)) else { return };
    let patterns: Vec<Pattern> = [a, b].into_iter().filter_map(|p| Pattern::parse(p).ok()).collect();
    for p in &patterns {
        assert!(p.as_str().len() <= MAX_TOPIC && p.segments().count() <= MAX_SEGMENTS);
        assert!(p.covers(p), "{p} covers itself");
    }
    let topic = match Topic::parse(t) {
        Ok(topic) => topic,
        Err(e) => {
            assert_eq!(e.code, orb_proto::ErrorCode::BadTopic);
            return;
        }
    };
    let itself = Pattern::parse(topic.as_str()).expect("a topic is a valid pattern");
    assert!(itself.matches(&topic), "{topic} matches itself");
    for p in &patterns {
        assert_eq!(p.matches(&topic), reference(p.as_str(), topic.as_str()), "{p} against {topic}");
    }
    if let [p, q] = patterns.as_slice()
        && p.covers(q)
        && q.matches(&topic)
    {
        assert!(p.matches(&topic), "{p} covers {q}, which matches {topic}, so {p} must match it");
    }
});

//! Bounded echoes of input in error messages: [`excerpt`] shows a short prefix of what was
//! refused, so a 1 MiB bad id or command name costs a line in a log or an error frame, not a MiB.

use std::borrow::Cow;

/// Characters of input an error message echoes at most (before the `…` that marks a cut).
pub const EXCERPT_CHARS: usize = 64;

/// `s` itself when it has at most [`EXCERPT_CHARS`] characters, else its first
/// [`EXCERPT_CHARS`] characters (cut on a character boundary) followed by `…`.
///
/// Borrows in the common case (short input), so calling it on every echo costs nothing.
pub fn excerpt(s: &str) -> Cow<'_, str> {
    cut(s, EXCERPT_CHARS)
}

/// Longest message, in characters, of an error that wraps another library's text (serde_json
/// quotes a string of the wrong type whole, whatever its length).
pub const MAX_WRAPPED_MESSAGE: usize = 256;

/// `message` cut to [`MAX_WRAPPED_MESSAGE`] characters, marked with `…` when cut.
pub fn bounded(message: String) -> String {
    match cut(&message, MAX_WRAPPED_MESSAGE) {
        Cow::Borrowed(_) => message,
        Cow::Owned(short) => short,
    }
}

/// `s` cut after `max` characters, marked with `…` when anything was left out.
fn cut(s: &str, max: usize) -> Cow<'_, str> {
    // A char is at least one byte: a string of at most `max` bytes needs no look at its chars.
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((end, _)) => {
            let mut out = String::with_capacity(end + '…'.len_utf8());
            out.push_str(&s[..end]);
            out.push('…');
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_borrowed_unchanged() {
        for s in ["", "web-1", &"x".repeat(EXCERPT_CHARS), &"é".repeat(EXCERPT_CHARS)] {
            assert!(matches!(excerpt(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
    }

    #[test]
    fn long_text_keeps_its_first_64_characters_and_a_mark() {
        let s = "x".repeat(EXCERPT_CHARS + 1);
        assert_eq!(excerpt(&s), format!("{}…", "x".repeat(EXCERPT_CHARS)));
        // Multi-byte characters are never split: 64 characters, not 64 bytes.
        let s = "é".repeat(1 << 20);
        let e = excerpt(&s);
        assert_eq!(e, format!("{}…", "é".repeat(EXCERPT_CHARS)));
        let s = format!("{}🦀🦀", "a".repeat(63));
        assert_eq!(excerpt(&s), format!("{}🦀…", "a".repeat(63)));
    }

    #[test]
    fn a_mebibyte_of_input_gives_a_short_excerpt() {
        let s = "a".repeat(1 << 20);
        assert!(excerpt(&s).len() <= EXCERPT_CHARS + '…'.len_utf8());
    }

    #[test]
    fn wrapped_messages_are_bounded_and_short_ones_kept() {
        assert_eq!(bounded("short".into()), "short");
        let long = bounded("m".repeat(1 << 20));
        assert_eq!(long.chars().count(), MAX_WRAPPED_MESSAGE + 1);
    }

    #[test]
    fn cut_takes_any_limit() {
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abc", 0), "…");
        assert_eq!(cut("", 0), "");
    }
}

//! Bounded echoes of input: [`excerpt`] keeps an error message short whatever the input it
//! refuses (a 1 MiB id is shown as its first 64 characters); [`bounded`] shortens a whole message
//! that quotes input (a parser's), keeping its start and its end (where a position is given).

use std::borrow::Cow;

/// Characters of input an error message shows at most.
pub const EXCERPT_CHARS: usize = 64;

/// `s` when it has at most [`EXCERPT_CHARS`] characters, else its first ones followed by `…`.
pub fn excerpt(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(EXCERPT_CHARS) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// Characters of a message [`bounded`] keeps whole.
pub const BOUNDED_CHARS: usize = 200;

/// `message` when it has at most [`BOUNDED_CHARS`] characters, else its first 120 and last 60
/// characters around `…`: a parser's message quoting megabytes of input stays short and keeps
/// its position (`at line 1 column 9`).
pub fn bounded(message: &str) -> Cow<'_, str> {
    let count = message.chars().count();
    if count <= BOUNDED_CHARS {
        return Cow::Borrowed(message);
    }
    let head: String = message.chars().take(120).collect();
    let tail: String = message.chars().skip(count - 60).collect();
    Cow::Owned(format!("{head}…{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_on_a_character_boundary() {
        assert_eq!(excerpt("web-1"), "web-1");
        let long = "é".repeat(1 << 20);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
    }

    #[test]
    fn a_long_message_keeps_its_start_and_its_position() {
        let msg = format!("invalid type: string \"{}\", expected u32 at line 1 column 9", "x".repeat(1 << 20));
        let b = bounded(&msg);
        assert!(b.chars().count() <= BOUNDED_CHARS + 1);
        assert!(b.starts_with("invalid type") && b.ends_with("at line 1 column 9"), "{b}");
        assert_eq!(bounded("short"), "short");
    }
}

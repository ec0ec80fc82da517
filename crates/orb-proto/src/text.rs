//! Bounded echoes of input: [`excerpt`] keeps an error message short whatever the input it
//! refuses (a 1 MiB id is shown as its first 64 characters).

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
}

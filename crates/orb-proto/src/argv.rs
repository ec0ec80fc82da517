//! Argv patterns of an agent's `exec` allow list (`[exec] allow` in the agent's configuration,
//! `exec_allow` in the settings a server pushes): parsed once, matched against a command line.

/// One argument position of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    /// Matches this argument exactly.
    Literal(String),
    /// `*` before the last word: matches exactly one argument, whatever it is.
    One,
}

/// An allowed argv: a named program, its argument words and, when the entry ends with `*`, any
/// number of further arguments (none included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    program: String,
    args: Vec<Word>,
    rest: bool,
}

impl Pattern {
    /// Parses an entry: words split on whitespace; the first names the program and is never a
    /// `*`; a `*` alone matches one argument, or any remaining ones (zero or more) as the last
    /// word; a word with a `*` among other characters is refused (write `*` on its own).
    ///
    /// # Errors
    /// What is wrong with the entry, for a configuration problem naming it.
    pub fn parse(entry: &str) -> Result<Pattern, String> {
        let words: Vec<&str> = entry.split_whitespace().collect();
        let Some((program, rest_words)) = words.split_first() else {
            return Err("an entry is empty: give a program and its arguments".into());
        };
        if program.contains('*') {
            return Err(format!("'{entry}': the program (first word) must be named, not matched with '*'"));
        }
        let mut args = Vec::with_capacity(rest_words.len());
        let mut rest = false;
        for (i, w) in rest_words.iter().enumerate() {
            match *w {
                "*" if i + 1 == rest_words.len() => rest = true,
                "*" => args.push(Word::One),
                w if w.contains('*') => {
                    return Err(format!(
                        "'{entry}': '{w}': '*' is a whole word (one argument, or any remaining ones when last)"
                    ));
                }
                w => args.push(Word::Literal(w.to_owned())),
            }
        }
        Ok(Pattern { program: (*program).to_owned(), args, rest })
    }

    /// Whether `argv` (program first) matches.
    pub fn matches(&self, argv: &[String]) -> bool {
        let Some((program, args)) = argv.split_first() else { return false };
        let count_fits = if self.rest { args.len() >= self.args.len() } else { args.len() == self.args.len() };
        *program == self.program
            && count_fits
            && self.args.iter().zip(args).all(|(w, a)| match w {
                Word::One => true,
                Word::Literal(l) => l == a,
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').filter(|w| !w.is_empty()).map(str::to_owned).collect()
    }

    #[test]
    fn literal_words_match_exactly_and_only_that_many() {
        let p = Pattern::parse("uname -s").unwrap();
        assert!(p.matches(&argv("uname -s")));
        for no in ["uname", "uname -a", "uname -s -n", "/bin/uname -s", "unamе -s", ""] {
            assert!(!p.matches(&argv(no)), "{no}");
        }
    }

    #[test]
    fn a_middle_star_is_exactly_one_argument() {
        let p = Pattern::parse("systemctl restart * --no-block").unwrap();
        assert!(p.matches(&argv("systemctl restart nginx --no-block")));
        assert!(p.matches(&argv("systemctl restart --now --no-block")));
        assert!(!p.matches(&argv("systemctl restart --no-block")));
        assert!(!p.matches(&argv("systemctl restart a b --no-block")));
        assert!(!p.matches(&argv("systemctl restart nginx")));
    }

    #[test]
    fn a_final_star_is_any_remaining_arguments_none_included() {
        let p = Pattern::parse("echo *").unwrap();
        for yes in ["echo", "echo hi", "echo -n a b c", "echo *"] {
            assert!(p.matches(&argv(yes)), "{yes}");
        }
        assert!(!p.matches(&argv("printf hi")));
        let p = Pattern::parse("sh -c *").unwrap();
        assert!(p.matches(&argv("sh -c")));
        assert!(p.matches(&argv("sh -c true")));
        assert!(!p.matches(&argv("sh -x -c true")));
    }

    /// Every argv of up to three words over a small alphabet, against patterns of up to three
    /// words, agrees with a direct statement of the rules.
    #[test]
    fn exhaustive_small_cases_agree_with_the_rules() {
        let alphabet = ["a", "b", "*"];
        let mut patterns = vec![vec!["p"]];
        let mut argvs: Vec<Vec<&str>> = vec![vec![], vec!["p"], vec!["q"]];
        for n in 1..=3 {
            let mut combos: Vec<Vec<&str>> = vec![vec![]];
            for _ in 0..n {
                combos = combos
                    .into_iter()
                    .flat_map(|c| alphabet.iter().map(move |w| [c.clone(), vec![*w]].concat()))
                    .collect();
            }
            for c in combos {
                patterns.push([vec!["p"], c.clone()].concat());
                argvs.push([vec!["p"], c].concat());
            }
        }
        for pat in &patterns {
            let p = Pattern::parse(&pat.join(" ")).unwrap();
            let words = &pat[1..];
            let (fixed, rest) = match words.split_last() {
                Some((&"*", before)) => (before, true),
                _ => (words, false),
            };
            for a in &argvs {
                let owned: Vec<String> = a.iter().map(|s| (*s).to_owned()).collect();
                let expected = a.first() == Some(&"p")
                    && if rest { a[1..].len() >= fixed.len() } else { a[1..].len() == fixed.len() }
                    && fixed.iter().zip(&a[1..]).all(|(w, x)| *w == "*" || w == x);
                assert_eq!(p.matches(&owned), expected, "pattern {pat:?} argv {a:?}");
            }
        }
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        assert!(Pattern::parse("").unwrap_err().contains("empty"));
        assert!(Pattern::parse("   ").unwrap_err().contains("empty"));
        assert!(Pattern::parse("* -s").unwrap_err().contains("program"));
        assert!(Pattern::parse("*").unwrap_err().contains("program"));
        let e = Pattern::parse("ls -l*").unwrap_err();
        assert!(e.contains("'-l*'"), "{e}");
        assert_eq!(Pattern::parse("  uname   -s ").unwrap(), Pattern::parse("uname -s").unwrap());
    }
}

//! `orb man`: man pages (roff) generated from the command line definition with clap_mangen, one
//! per command and sub-command (`orb.1`, `orb-send.1`, `orb-devices-show.1`, ...), with the
//! sections of the help texts ([`crate::help`]: Examples, Exit codes, ...) as their own sections.

use std::io::Write;
use std::path::Path;

use clap::Command;

use crate::cli::ManArgs;
use crate::exit::{self, Failure};

/// `orb man [SUBCOMMAND...] [--out DIR]`.
pub fn run(args: ManArgs) -> Result<u8, Failure> {
    let root = built();
    if let Some(dir) = &args.out {
        for path in write_all(&root, dir)? {
            outln!("{}", path.display());
        }
        return Ok(exit::OK);
    }
    let cmd = find(&root, &args.command)?;
    let page = page(cmd).map_err(|e| Failure::new(exit::FAILED, format!("cannot render the man page: {e}")))?;
    out!("{page}");
    Ok(exit::OK)
}

/// The command tree with every name and usage resolved, without the `help` sub-commands.
fn built() -> Command {
    let mut root = crate::help::command().disable_help_subcommand(true);
    root.build();
    root
}

/// The sub-command `path` names (`["devices", "show"]`), by name or alias.
fn find<'a>(root: &'a Command, path: &[String]) -> Result<&'a Command, Failure> {
    let mut cmd = root;
    for word in path {
        cmd = cmd.find_subcommand(word).filter(|c| !c.is_hide_set()).ok_or_else(|| {
            let here = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name());
            let known: Vec<&str> = visible(cmd).map(Command::get_name).collect();
            if known.is_empty() {
                Failure::usage(format!("`{here}` has no sub-command '{word}' (it has none)"))
            } else {
                Failure::usage(format!("`{here}` has no sub-command '{word}'; it has: {}", known.join(", ")))
            }
        })?;
    }
    Ok(cmd)
}

/// The sub-commands that get pages.
fn visible(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|c| !c.is_hide_set())
}

/// Writes the page of `root` and of every visible sub-command into `dir` (created if missing);
/// returns the files written.
fn write_all(root: &Command, dir: &Path) -> Result<Vec<std::path::PathBuf>, Failure> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        Failure::new(exit::FAILED, format!("cannot {what} {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("create folder", dir, e))?;
    let mut written = Vec::new();
    let mut stack = vec![root];
    while let Some(cmd) = stack.pop() {
        let path = dir.join(format!("{}.1", page_name(cmd)));
        let text = page(cmd).map_err(|e| fail("render", &path, e))?;
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| fail("write", &path, e))?;
        written.push(path);
        stack.extend(visible(cmd));
    }
    written.sort();
    Ok(written)
}

/// `orb`, `orb-send`, `orb-devices-show`: the page's name (its file is NAME.1).
fn page_name(cmd: &Command) -> &str {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name())
}

/// One man page in roff.
fn page(cmd: &Command) -> std::io::Result<String> {
    let man = clap_mangen::Man::new(cmd.clone()).source(format!("orb {}", crate::cli::VERSION));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    // Each section clap_mangen renders repeats the definition of the `Aq` string; once is enough.
    let mut section = |render: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| -> std::io::Result<()> {
        let mut buf = Vec::new();
        render(&mut buf)?;
        let text = String::from_utf8(buf).map_err(std::io::Error::other)?;
        out.extend_from_slice(text.strip_prefix(AQ_PREAMBLE).unwrap_or(&text).as_bytes());
        Ok(())
    };
    section(&|w| man.render_name_section(w))?;
    section(&|w| man.render_synopsis_section(w))?;
    section(&|w| man.render_description_section(w))?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        section(&|w| man.render_options_section(w))?;
    }
    if visible(cmd).next().is_some() {
        section(&|w| man.render_subcommands_section(w))?;
    }
    if let Some(text) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        let sections = help_sections(&text.to_string());
        section(&|w| w.write_all(sections.as_bytes()))?;
    }
    if cmd.get_version().is_some() {
        section(&|w| man.render_version_section(w))?;
    }
    String::from_utf8(out).map_err(std::io::Error::other)
}

/// What clap_mangen writes before every section (the definition of the `Aq` quote string).
const AQ_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// Turns a help text into roff sections: a line ending in `:` at the left margin becomes a
/// `.SH` heading, the lines under it are kept as they are (no filling, so examples stay aligned).
fn help_sections(text: &str) -> String {
    let mut roff = String::new();
    let mut open = false;
    for line in text.lines() {
        let heading = !line.starts_with(' ') && line.ends_with(':');
        if heading {
            if open {
                roff.push_str(".fi\n");
            }
            roff.push_str(&format!(".SH {}\n.nf\n", line.trim_end_matches(':').to_uppercase()));
            open = true;
        } else {
            if !open {
                roff.push_str(".SH NOTES\n.nf\n");
                open = true;
            }
            roff.push_str(&format!("\\&{}\n", escape(line)));
        }
    }
    if open {
        roff.push_str(".fi\n");
    }
    roff
}

/// Escapes text for a roff line: backslashes, and the characters man renders typographically
/// (`-` as a hyphen, `'` and `` ` `` as quotes) so that examples can be copied and pasted.
fn escape(line: &str) -> String {
    let mut s = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '\\' => s.push_str("\\e"),
            '-' => s.push_str("\\-"),
            '\'' => s.push_str("\\(aq"),
            '`' => s.push_str("\\(ga"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn help_sections_become_unfilled_roff_sections() {
        let roff = help_sections("Examples:\n  orb send '*' ping --json\n\nExit codes:\n  0    ok");
        assert_eq!(
            roff,
            ".SH EXAMPLES\n.nf\n\\&  orb send \\(aq*\\(aq ping \\-\\-json\n\\&\n.fi\n.SH EXIT CODES\n.nf\n\\&  0    ok\n.fi\n"
        );
    }

    #[test]
    fn text_before_any_heading_goes_under_notes() {
        assert_eq!(help_sections("see `orb`\\n"), ".SH NOTES\n.nf\n\\&see \\(gaorb\\(ga\\en\n.fi\n");
    }

    #[test]
    fn sub_commands_are_found_by_name_and_alias() {
        let root = built();
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(page_name(find(&root, &path(&["devices", "show"])).unwrap()), "orb-devices-show");
        assert_eq!(page_name(find(&root, &path(&["devices", "remove"])).unwrap()), "orb-devices-rm");
        let err = find(&root, &path(&["devices", "frob"])).unwrap_err();
        assert_eq!(err.code, exit::USAGE);
        assert!(err.message.contains("show"), "{}", err.message);
        assert!(find(&root, &path(&["help"])).is_err(), "no page for the help sub-command");
    }

    #[test]
    fn every_page_names_its_command_and_has_examples() {
        let root = built();
        let mut stack = vec![&root];
        while let Some(cmd) = stack.pop() {
            let text = page(cmd).unwrap();
            let name = page_name(cmd);
            assert!(text.contains(&format!("\n.TH {name} 1 ")), "{name}: {}", &text[..text.len().min(200)]);
            assert!(text.contains(".SH EXAMPLES"), "{name} has no EXAMPLES section");
            stack.extend(visible(cmd));
        }
    }
}

//! The precedence of a client command's settings as pure functions: which context applies
//! ([`choose_context`]), then for the server and for the token the first of the flags, the
//! environment, the context, the configuration file's `[client]`, the zero-config default
//! ([`resolve`]). Each result says where it came from, so errors can name the source.

use std::path::PathBuf;

use orb_client::ServerUrl;
use orb_io::secret::Secret;

use crate::exit::{self, Failure};

/// The server when nothing else names one.
pub const DEFAULT_SERVER: &str = "tcp://127.0.0.1:7700";

/// Settings given by flags or by environment variables.
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// `--server` / `ORB_SERVER`.
    pub server: Option<String>,
    /// `--token` / `ORB_TOKEN`.
    pub token: Option<Secret>,
    /// `--token-file` / `ORB_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
}

/// The context in force: its name and values.
#[derive(Debug, Clone, Default)]
pub struct InContext {
    /// Its name.
    pub name: String,
    /// Its server URL.
    pub server: Option<String>,
    /// Its token file.
    pub token_file: Option<PathBuf>,
}

/// One `[client]` value and where it was set (the file's path, or `environment ORB_CLIENT__KEY`).
#[derive(Debug, Clone)]
pub struct Configured<T> {
    /// The value.
    pub value: T,
    /// Where it was set.
    pub origin: String,
}

/// Everything the precedence looks at.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `--server`, `--token`, `--token-file`.
    pub flags: Given,
    /// `ORB_SERVER`, `ORB_TOKEN`, `ORB_TOKEN_FILE` (empty values count as unset).
    pub env: Given,
    /// The context in force, if any ([`choose_context`]).
    pub context: Option<InContext>,
    /// `[client] server`.
    pub config_server: Option<Configured<String>>,
    /// `[client] token_file`.
    pub config_token_file: Option<Configured<PathBuf>>,
    /// `./orb-data/admin.token`, when it exists (used only for a loopback server).
    pub local_token: Option<PathBuf>,
}

/// Where the server URL came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSource {
    /// `--server`.
    Flag,
    /// `ORB_SERVER`.
    Env,
    /// The context of that name.
    Context(String),
    /// `[client] server`, set there.
    Config(String),
    /// [`DEFAULT_SERVER`].
    Default,
}

impl ServerSource {
    /// How an error message names it.
    pub fn label(&self) -> String {
        match self {
            ServerSource::Flag => "--server".into(),
            ServerSource::Env => "ORB_SERVER".into(),
            ServerSource::Context(name) => format!("context {name}"),
            ServerSource::Config(origin) => format!("[client] in {origin}"),
            ServerSource::Default => "the default".into(),
        }
    }
}

/// Where the token comes from. Literal tokens are [`Secret`]s, so `Debug` never shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token`.
    Flag(Secret),
    /// `--token-file FILE`.
    FlagFile(PathBuf),
    /// `ORB_TOKEN`.
    Env(Secret),
    /// `ORB_TOKEN_FILE=FILE`.
    EnvFile(PathBuf),
    /// The context's token file.
    Context {
        /// The context.
        name: String,
        /// Its token file.
        file: PathBuf,
    },
    /// `[client] token_file`.
    Config {
        /// Where it was set.
        origin: String,
        /// The file.
        file: PathBuf,
    },
    /// The local server's `./orb-data/admin.token` (loopback server only).
    Local(PathBuf),
    /// No token at all.
    None,
}

impl TokenSource {
    /// How an error message names it.
    pub fn label(&self) -> String {
        match self {
            TokenSource::Flag(_) => "--token flag".into(),
            TokenSource::FlagFile(f) => format!("--token-file {}", f.display()),
            TokenSource::Env(_) => "ORB_TOKEN".into(),
            TokenSource::EnvFile(f) => format!("ORB_TOKEN_FILE={}", f.display()),
            TokenSource::Context { name, file } => format!("context {name} (token file {})", file.display()),
            TokenSource::Config { origin, file } => format!("[client] in {origin} (token file {})", file.display()),
            TokenSource::Local(_) => "./orb-data/admin.token".into(),
            TokenSource::None => "none".into(),
        }
    }

    /// What to do when the server refuses this token (or its absence).
    pub fn hint(&self) -> String {
        const ADD: &str = "orb context add NAME --server URL --token-file FILE";
        match self {
            TokenSource::None => format!(
                "no token given: pass the admin token with --token-file FILE (or ORB_TOKEN_FILE), or save it in a context: {ADD}, then orb context use NAME"
            ),
            TokenSource::Local(_) => format!(
                "./orb-data/admin.token belongs to the server started in this folder; for another server pass --token-file FILE, or use a context: {ADD}"
            ),
            TokenSource::Flag(_) | TokenSource::Env(_) | TokenSource::FlagFile(_) | TokenSource::EnvFile(_) => {
                "give the server's admin token (DATA/admin.token on the server's machine, or its server.admin_token)"
                    .into()
            }
            TokenSource::Context { name, .. } => format!(
                "put the server's admin token in that file, or point the context at the right one: orb context add {name} --server URL --token-file FILE --force"
            ),
            TokenSource::Config { origin, .. } => {
                format!("put the server's admin token in that file, or fix [client] token_file in {origin}")
            }
        }
    }

    /// The file to read the token from, if the source is a file.
    pub fn file(&self) -> Option<&PathBuf> {
        match self {
            TokenSource::FlagFile(f)
            | TokenSource::EnvFile(f)
            | TokenSource::Local(f)
            | TokenSource::Context { file: f, .. }
            | TokenSource::Config { file: f, .. } => Some(f),
            TokenSource::Flag(_) | TokenSource::Env(_) | TokenSource::None => None,
        }
    }
}

/// Where a client command connects and with which token.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The parsed server URL.
    pub url: ServerUrl,
    /// Where the URL came from.
    pub server_source: ServerSource,
    /// Where the token comes from.
    pub token: TokenSource,
    /// Set when the token is a context's (or `[client]`'s) and goes to a server other than the
    /// one saved beside it, given by a flag or the environment: said on stderr before connecting.
    pub borrowed: Option<String>,
    /// For `tls://` and `wss://`: the CA and client certificate (flags and environment, else the
    /// context's; set by `connect::plan`).
    pub tls: orb_io::tls::ClientTls,
}

/// Applies the precedence: for the server and for the token separately, flags, then the
/// environment, then the context, then `[client]`; the server defaults to [`DEFAULT_SERVER`] and
/// the token, for a loopback server only, to `./orb-data/admin.token`. A literal token and a token
/// file of the same layer: the literal one wins (clap refuses both as flags).
///
/// # Errors
/// A server URL that does not parse: usage (2) when given as a flag or variable, configuration
/// (78) when it comes from a context or a file; the message names the source.
pub fn resolve(i: &Inputs) -> Result<Plan, Failure> {
    let ctx = i.context.as_ref();
    let (server, server_source) = if let Some(s) = &i.flags.server {
        (s.clone(), ServerSource::Flag)
    } else if let Some(s) = &i.env.server {
        (s.clone(), ServerSource::Env)
    } else if let Some((c, s)) = ctx.and_then(|c| c.server.as_ref().map(|s| (c, s))) {
        (s.clone(), ServerSource::Context(c.name.clone()))
    } else if let Some(s) = &i.config_server {
        (s.value.clone(), ServerSource::Config(s.origin.clone()))
    } else {
        (DEFAULT_SERVER.to_owned(), ServerSource::Default)
    };
    let url = ServerUrl::parse(&server).map_err(|e| {
        let code = match server_source {
            ServerSource::Flag | ServerSource::Env | ServerSource::Default => exit::USAGE,
            ServerSource::Context(_) | ServerSource::Config(_) => exit::CONFIG,
        };
        Failure::new(code, format!("{e} (server from {})", server_source.label()))
    })?;

    let token = if let Some(t) = &i.flags.token {
        TokenSource::Flag(t.clone())
    } else if let Some(f) = &i.flags.token_file {
        TokenSource::FlagFile(f.clone())
    } else if let Some(t) = &i.env.token {
        TokenSource::Env(t.clone())
    } else if let Some(f) = &i.env.token_file {
        TokenSource::EnvFile(f.clone())
    } else if let Some((c, f)) = ctx.and_then(|c| c.token_file.as_ref().map(|f| (c, f))) {
        TokenSource::Context { name: c.name.clone(), file: f.clone() }
    } else if let Some(f) = &i.config_token_file {
        TokenSource::Config { origin: f.origin.clone(), file: f.value.clone() }
    } else if let Some(local) = i.local_token.as_ref().filter(|_| url.is_loopback()) {
        TokenSource::Local(local.clone())
    } else {
        TokenSource::None
    };
    let own_server = match &token {
        TokenSource::Context { .. } => ctx.and_then(|c| c.server.clone()),
        TokenSource::Config { .. } => i.config_server.as_ref().map(|s| s.value.clone()),
        _ => None,
    };
    let borrowed = own_server.filter(|own| *own != server).map(|own| {
        format!("the token of {} (saved for {own}) goes to {server} from {}", token.label(), server_source.label())
    });
    Ok(Plan { url, server_source, token, borrowed, tls: orb_io::tls::ClientTls::default() })
}

/// How the context in force was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextChoice {
    /// `--context`.
    Flag,
    /// `ORB_CONTEXT`.
    Env,
    /// `orb context use`, recorded in that file.
    Selected(PathBuf),
    /// `[client] context`, set there.
    Config(String),
}

impl ContextChoice {
    /// How an error message names it.
    pub fn label(&self) -> String {
        match self {
            ContextChoice::Flag => "--context".into(),
            ContextChoice::Env => "ORB_CONTEXT".into(),
            ContextChoice::Selected(file) => format!("selected by orb context use, in {}", file.display()),
            ContextChoice::Config(origin) => format!("[client] context in {origin}"),
        }
    }
}

/// The context in force: `--context`, else `ORB_CONTEXT`, else the one `orb context use`
/// selected, else `[client] context`; none when none of them names one.
pub fn choose_context(
    flag: Option<&str>,
    env: Option<&str>,
    selected: Option<(&str, PathBuf)>,
    config: Option<Configured<&str>>,
) -> Option<(String, ContextChoice)> {
    if let Some(n) = flag {
        return Some((n.to_owned(), ContextChoice::Flag));
    }
    if let Some(n) = env {
        return Some((n.to_owned(), ContextChoice::Env));
    }
    if let Some((n, file)) = selected {
        return Some((n.to_owned(), ContextChoice::Selected(file)));
    }
    config.map(|c| (c.value.to_owned(), ContextChoice::Config(c.origin)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn full() -> Inputs {
        Inputs {
            flags: Given {
                server: Some("tcp://flag:1".into()),
                token: Some(Secret::new("flag-token")),
                token_file: None,
            },
            env: Given { server: Some("tcp://env:2".into()), token: None, token_file: Some("/env.token".into()) },
            context: Some(InContext {
                name: "prod".into(),
                server: Some("tcp://ctx:3".into()),
                token_file: Some("/ctx.token".into()),
            }),
            config_server: Some(Configured { value: "tcp://cfg:4".into(), origin: "/c.toml".into() }),
            config_token_file: Some(Configured { value: "/cfg.token".into(), origin: "/c.toml".into() }),
            local_token: Some("orb-data/admin.token".into()),
        }
    }

    fn server(i: &Inputs) -> (String, String) {
        let p = resolve(i).unwrap();
        (p.url.to_string(), p.server_source.label())
    }

    #[test]
    fn each_layer_wins_over_the_ones_below_it() {
        let mut i = full();
        assert_eq!(server(&i), ("tcp://flag:1".into(), "--server".into()));
        assert_eq!(resolve(&i).unwrap().token.label(), "--token flag");
        i.flags = Given::default();
        assert_eq!(server(&i), ("tcp://env:2".into(), "ORB_SERVER".into()));
        assert_eq!(resolve(&i).unwrap().token.label(), "ORB_TOKEN_FILE=/env.token");
        i.env = Given::default();
        assert_eq!(server(&i), ("tcp://ctx:3".into(), "context prod".into()));
        assert_eq!(resolve(&i).unwrap().token.label(), "context prod (token file /ctx.token)");
        i.context = None;
        assert_eq!(server(&i), ("tcp://cfg:4".into(), "[client] in /c.toml".into()));
        assert_eq!(resolve(&i).unwrap().token.label(), "[client] in /c.toml (token file /cfg.token)");
        i.config_server = None;
        i.config_token_file = None;
        assert_eq!(server(&i), (DEFAULT_SERVER.into(), "the default".into()));
        let p = resolve(&i).unwrap();
        assert_eq!(p.token, TokenSource::Local("orb-data/admin.token".into()));
        assert_eq!(p.token.label(), "./orb-data/admin.token");
        i.local_token = None;
        assert_eq!(resolve(&i).unwrap().token, TokenSource::None);
        assert!(resolve(&i).unwrap().token.hint().contains("no token given"));
    }

    #[test]
    fn server_and_token_are_resolved_each_on_its_own() {
        // A flag for the server keeps the context's token file (as `nats --server` does).
        let mut i = full();
        i.flags.token = None;
        i.env = Given::default();
        let p = resolve(&i).unwrap();
        assert_eq!(p.server_source, ServerSource::Flag);
        assert_eq!(p.token, TokenSource::Context { name: "prod".into(), file: "/ctx.token".into() });
        // ...and says so, since that token was saved for another server.
        let warning = p.borrowed.expect("a warning");
        assert!(warning.contains("context prod") && warning.contains("from --server"), "{warning}");
        // A context with a server but no token file falls through to [client] token_file.
        i.flags.server = None;
        i.context.as_mut().unwrap().token_file = None;
        let p = resolve(&i).unwrap();
        assert_eq!(p.server_source, ServerSource::Context("prod".into()));
        assert_eq!(p.token.label(), "[client] in /c.toml (token file /cfg.token)");
        // The token file flag and ORB_TOKEN: the flag.
        let mut i = full();
        i.flags.token = None;
        i.flags.token_file = Some("/f.token".into());
        i.env.token = Some(Secret::new("e"));
        assert_eq!(resolve(&i).unwrap().token.label(), "--token-file /f.token");
        // Within one layer the literal token wins over the file.
        i.flags.token_file = None;
        assert_eq!(resolve(&i).unwrap().token.label(), "ORB_TOKEN");
    }

    #[test]
    fn the_local_token_is_used_only_for_a_loopback_server_without_any_other_token() {
        let base = Inputs { local_token: Some("orb-data/admin.token".into()), ..Inputs::default() };
        for (url, local) in [
            ("tcp://127.0.0.1:7700", true),
            ("tcp://localhost:9", true),
            ("ws://127.0.0.1:7780/v1/ws", true),
            ("tcp://[::1]:7700", true),
            ("tcp://10.0.0.5:7700", false),
            ("tcp://orb.example.net:7700", false),
        ] {
            let i = Inputs { flags: Given { server: Some(url.into()), ..Given::default() }, ..base.clone() };
            let p = resolve(&i).unwrap();
            assert_eq!(matches!(p.token, TokenSource::Local(_)), local, "{url}");
        }
        // A loopback server from a context still finds the local token when the context has none.
        let i = Inputs {
            context: Some(InContext {
                name: "here".into(),
                server: Some("tcp://127.0.0.1:1".into()),
                token_file: None,
            }),
            ..base
        };
        assert!(matches!(resolve(&i).unwrap().token, TokenSource::Local(_)));
    }

    #[test]
    fn a_bad_url_names_its_source_with_the_right_exit_code() {
        let i = Inputs { flags: Given { server: Some("http://x".into()), ..Given::default() }, ..Inputs::default() };
        let e = resolve(&i).unwrap_err();
        assert_eq!(e.code, exit::USAGE);
        assert!(e.message.contains("--server"), "{}", e.message);
        let i = Inputs {
            context: Some(InContext { name: "prod".into(), server: Some("nope://".into()), token_file: None }),
            ..Inputs::default()
        };
        let e = resolve(&i).unwrap_err();
        assert_eq!(e.code, exit::CONFIG);
        assert!(e.message.contains("context prod"), "{}", e.message);
    }

    #[test]
    fn literal_tokens_never_show_and_every_source_has_a_hint() {
        let p = resolve(&full()).unwrap();
        assert!(!format!("{p:?}").contains("flag-token"));
        for t in [
            TokenSource::Flag(Secret::new("x")),
            TokenSource::FlagFile("/a".into()),
            TokenSource::Env(Secret::new("x")),
            TokenSource::EnvFile("/a".into()),
            TokenSource::Context { name: "n".into(), file: "/a".into() },
            TokenSource::Config { origin: "/c".into(), file: "/a".into() },
            TokenSource::Local("/a".into()),
            TokenSource::None,
        ] {
            assert!(!t.hint().is_empty() && !t.label().is_empty());
            assert_eq!(
                t.file().is_some(),
                !matches!(t, TokenSource::Flag(_) | TokenSource::Env(_) | TokenSource::None)
            );
        }
        assert!(TokenSource::Context { name: "n".into(), file: "/a".into() }.hint().contains("orb context add n"));
    }

    #[test]
    fn the_context_comes_from_the_flag_the_environment_the_selection_then_the_file() {
        let cfg = || Some(Configured { value: "c", origin: "/c.toml".into() });
        let sel = || Some(("s", PathBuf::from("/d/context")));
        let name = |r: Option<(String, ContextChoice)>| r.map(|(n, c)| (n, c.label()));
        assert_eq!(name(choose_context(Some("f"), Some("e"), sel(), cfg())), Some(("f".into(), "--context".into())));
        assert_eq!(name(choose_context(None, Some("e"), sel(), cfg())), Some(("e".into(), "ORB_CONTEXT".into())));
        assert_eq!(
            name(choose_context(None, None, sel(), cfg())),
            Some(("s".into(), "selected by orb context use, in /d/context".into()))
        );
        assert_eq!(
            name(choose_context(None, None, None, cfg())),
            Some(("c".into(), "[client] context in /c.toml".into()))
        );
        assert_eq!(choose_context(None, None, None, None), None);
    }
}

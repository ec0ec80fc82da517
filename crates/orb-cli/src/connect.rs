//! Where a client command connects and with which token. Gathers the inputs — flags, then
//! `ORB_SERVER` / `ORB_TOKEN` / `ORB_TOKEN_FILE`, then the context (`--context`, `ORB_CONTEXT`,
//! `orb context use`, `[client] context`), then the configuration file's `[client]`, then the
//! zero-config default (`tcp://127.0.0.1:7700` and, for a loopback server only, the token the
//! local server generated in `./orb-data`) — and applies the precedence in [`resolve`]. A refusal
//! names the token's source and what to do.

pub mod resolve;

use std::path::{Path, PathBuf};

use orb_client::{Client, ClientConfig, Handlers, ServerUrl};
use orb_io::secret::Secret;
use orb_io::tls::ClientTls;

use crate::cli::{ConnectArgs, TlsArgs};
use crate::config::{self, ClientSettings};
use crate::context::store::Store;
use crate::exit::{self, Failure};
use resolve::{Configured, ContextChoice, Given, InContext, Inputs, Plan, ServerSource, TokenSource};

/// The local server's data folder, read for tokens when the server is on loopback.
pub const LOCAL_DATA: &str = "orb-data";

/// Largest frame an operator command accepts from the server. Operator answers can be large (a
/// 100k-device `orb devices` list, `orb jobs show` of a fleet-wide job), far above the protocol's
/// 1 MiB default; agents keep that default, since what they receive is small.
pub const OPERATOR_MAX_FRAME: usize = 64 << 20;

/// Which of the local server's tokens a command needs.
#[derive(Debug, Clone, Copy)]
pub enum TokenKind {
    /// `admin.token`, for operator commands.
    Admin,
    /// `agent.token`, for agents.
    Agent,
}

impl TokenKind {
    /// The local server's file for this kind.
    fn local_path(self) -> PathBuf {
        let file = match self {
            TokenKind::Admin => "admin.token",
            TokenKind::Agent => "agent.token",
        };
        PathBuf::from(LOCAL_DATA).join(file)
    }
}

/// The local server's token for `kind`, read from `./orb-data` — only for a loopback `url`.
pub fn local_token(url: &ServerUrl, kind: TokenKind) -> Result<Option<String>, Failure> {
    let path = kind.local_path();
    if url.is_loopback() && path.exists() {
        return read_token(&path, &format!("./{}", path.display())).map(Some);
    }
    Ok(None)
}

/// Reads a token file; its content, trimmed, must not be empty. `source` names where the file
/// was given, for the message.
fn read_token(path: &Path, source: &str) -> Result<String, Failure> {
    let s = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(exit::CONFIG, format!("cannot read token file {}: {e} (token from {source})", path.display()))
    })?;
    let token = s.trim();
    if token.is_empty() {
        return Err(Failure::new(
            exit::CONFIG,
            format!("token file {} is empty (token from {source})", path.display()),
        ));
    }
    Ok(token.to_owned())
}

/// An environment variable; empty counts as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A configuration problem list as one exit-78 failure.
pub fn config_failure(problems: Vec<String>) -> Failure {
    Failure::new(exit::CONFIG, format!("invalid configuration:\n  {}", problems.join("\n  ")))
}

/// The `[client]` settings (exit 78 with every problem when they are invalid).
pub fn client_settings(config_file: Option<&Path>) -> Result<ClientSettings, Failure> {
    config::client_settings(config_file).map_err(config_failure)
}

/// The contexts of this user: `None` when neither `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn context_store() -> Option<Store> {
    config::user_dir().map(Store::new)
}

/// The name of the context in force and how it was chosen ([`resolve::choose_context`]).
pub fn context_choice(
    flag: Option<&str>,
    settings: &ClientSettings,
    store: Option<&Store>,
) -> Result<Option<(String, ContextChoice)>, Failure> {
    let selected = match store {
        Some(s) => s.selected().map_err(|e| Failure::new(exit::CONFIG, e))?.map(|n| (n, s.selection_path())),
        None => None,
    };
    let in_config = settings
        .section
        .context
        .as_deref()
        .map(|value| Configured { value, origin: settings.origin("context").to_owned() });
    let env_context = env("ORB_CONTEXT");
    Ok(resolve::choose_context(
        flag,
        env_context.as_deref(),
        selected.as_ref().map(|(n, p)| (n.as_str(), p.clone())),
        in_config,
    ))
}

/// The error for a context that does not exist (exit 78), naming how it was chosen, if it was,
/// and the known ones.
pub fn unknown_context(name: &str, how: Option<&ContextChoice>, store: Option<&Store>) -> Failure {
    let known = store.and_then(|s| s.names().ok()).unwrap_or_default();
    let known = if known.is_empty() {
        "there are no contexts yet: orb context add NAME --server URL --token-file FILE".to_owned()
    } else {
        format!("known contexts: {} (orb context ls)", known.join(", "))
    };
    let (from, fix) = match how {
        Some(ContextChoice::Selected(f)) => (
            format!(" (selected by orb context use, in {})", f.display()),
            "; select another with orb context use NAME",
        ),
        Some(how) => (format!(" (from {})", how.label()), ""),
        None => (String::new(), ""),
    };
    Failure::new(exit::CONFIG, format!("context '{name}'{from} does not exist; {known}{fix}"))
}

/// The context in force, loaded, with its TLS files; a context that is named but missing is an
/// error (exit 78).
fn context_in_force(flag: Option<&str>, settings: &ClientSettings) -> Result<Option<(InContext, ClientTls)>, Failure> {
    let store = context_store();
    let Some((name, how)) = context_choice(flag, settings, store.as_ref())? else { return Ok(None) };
    let Some(s) = store.as_ref() else {
        return Err(Failure::new(
            exit::CONFIG,
            format!(
                "context '{name}' ({}): no configuration folder to find it in (set HOME or XDG_CONFIG_HOME)",
                how.label()
            ),
        ));
    };
    match s.load(&name).map_err(|e| Failure::new(exit::CONFIG, e))? {
        Some(c) => {
            let tls = ClientTls { ca_cert: c.ca_cert, cert: c.cert, key: c.key };
            Ok(Some((InContext { name, server: Some(c.server), token_file: c.token_file }, tls)))
        }
        None => Err(unknown_context(&name, Some(&how), store.as_ref())),
    }
}

/// Gathers every input and applies the precedence.
pub fn plan(args: &ConnectArgs) -> Result<Plan, Failure> {
    let settings = client_settings(args.config.as_deref())?;
    let (context, context_tls) = context_in_force(args.context.as_deref(), &settings)?.unzip();
    let configured = |key: &str, v: &Option<String>| {
        v.clone().map(|value| Configured { value, origin: settings.origin(key).to_owned() })
    };
    let local = TokenKind::Admin.local_path();
    let inputs = Inputs {
        flags: Given {
            server: args.server.clone(),
            token: args.token.clone().map(Secret::new),
            token_file: args.token_file.clone(),
        },
        env: Given {
            server: env("ORB_SERVER"),
            token: env("ORB_TOKEN").map(Secret::new),
            token_file: env("ORB_TOKEN_FILE").map(PathBuf::from),
        },
        context,
        config_server: configured("server", &settings.section.server),
        config_token_file: configured("token_file", &settings.section.token_file)
            .map(|c| Configured { value: PathBuf::from(c.value), origin: c.origin }),
        local_token: local.exists().then_some(local),
    };
    let mut plan = resolve::resolve(&inputs)?;
    plan.tls = tls(&args.tls, context_tls.unwrap_or_default());
    Ok(plan)
}

/// The TLS files: the CA from `--ca-cert` / `ORB_CA_CERT`, else the context's; the client
/// certificate and key as a pair, from the flags / environment, else the context's.
pub fn tls(given: &TlsArgs, context: ClientTls) -> ClientTls {
    let (cert, key) = match (&given.cert, &given.key) {
        (None, None) => (context.cert, context.key),
        (c, k) => (c.clone(), k.clone()),
    };
    ClientTls { ca_cert: given.ca_cert.clone().or(context.ca_cert), cert, key }
}

/// Reads the TLS files of a `tls://` or `wss://` `url` now, so a missing or bad one is a
/// configuration error (exit 78) naming it, before anything connects.
pub fn check_tls(url: &ServerUrl, tls: &ClientTls) -> Result<(), Failure> {
    if url.is_tls() {
        tls.load().map_err(|e| Failure::new(exit::CONFIG, format!("TLS for {url}: {e}")))?;
    }
    Ok(())
}

/// The token the plan names, read from its file when it is one.
fn token(plan: &Plan) -> Result<Option<String>, Failure> {
    match &plan.token {
        TokenSource::Flag(t) | TokenSource::Env(t) => Ok(Some(t.expose().to_owned())),
        TokenSource::None => Ok(None),
        source => match source.file() {
            Some(f) => read_token(f, &source.label()).map(Some),
            None => Ok(None),
        },
    }
}

/// Adds to a connection failure where its inputs came from: for a refusal (77), the token's
/// source and what to do; for an unreachable server (69) not given by `--server`, the URL's source.
fn explain(plan: &Plan, mut f: Failure) -> Failure {
    match f.code {
        exit::DENIED => {
            f.message = format!("{}\n  token: {}\n  hint: {}", f.message, plan.token.label(), plan.token.hint());
        }
        exit::UNREACHABLE if plan.server_source != ServerSource::Flag => {
            f.message = format!("{}\n  server: {} from {}", f.message, plan.url, plan.server_source.label());
        }
        _ => {}
    }
    f
}

/// Connects as an operator, turning failures into exit codes (69 unreachable, 77 refused).
pub async fn operator(args: &ConnectArgs) -> Result<Client, Failure> {
    let plan = plan(args)?;
    if let Some(warning) = &plan.borrowed {
        eprintln!("warning: {warning}");
    }
    let token = token(&plan)?;
    check_tls(&plan.url, &plan.tls)?;
    let cfg = ClientConfig {
        max_frame: OPERATOR_MAX_FRAME,
        tls: plan.tls.clone(),
        ..ClientConfig::operator(plan.url.clone(), token)
    };
    Client::connect(cfg, Handlers::new()).await.map_err(|e| explain(&plan, Failure::from(e)))
}

//! Resolving where a client command connects and with which token: flags, then `ORB_SERVER` /
//! `ORB_TOKEN` / `ORB_TOKEN_FILE`, then — only for a loopback server — the token files the
//! local server generated in `./orb-data`, so local use needs no setup and tokens never leave.

use std::path::{Path, PathBuf};

use orb_client::{Client, ClientConfig, Handlers, ServerUrl};

use crate::cli::ConnectArgs;
use crate::exit::{self, Failure};

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

/// Parses the server URL.
pub fn url(args: &ConnectArgs) -> Result<ServerUrl, Failure> {
    ServerUrl::parse(&args.server).map_err(|e| Failure::usage(e.to_string()))
}

/// The token to present: `--token`, `--token-file`, or the local server's file on loopback.
pub fn token(args: &ConnectArgs, url: &ServerUrl, kind: TokenKind) -> Result<Option<String>, Failure> {
    if let Some(t) = &args.token {
        return Ok(Some(t.clone()));
    }
    if let Some(path) = &args.token_file {
        return read_token(path).map(Some);
    }
    local_token(url, kind)
}

/// The local server's token for `kind`, read from `./orb-data` — only for a loopback `url`.
pub fn local_token(url: &ServerUrl, kind: TokenKind) -> Result<Option<String>, Failure> {
    if url.is_loopback() {
        let file = match kind {
            TokenKind::Admin => "admin.token",
            TokenKind::Agent => "agent.token",
        };
        let path = PathBuf::from(LOCAL_DATA).join(file);
        if path.exists() {
            return read_token(&path).map(Some);
        }
    }
    Ok(None)
}

fn read_token(path: &Path) -> Result<String, Failure> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(exit::CONFIG, format!("cannot read token file {}: {e}", path.display())))?;
    Ok(s.trim().to_owned())
}

/// Connects as an operator, turning failures into exit codes (69 unreachable, 77 refused).
pub async fn operator(args: &ConnectArgs) -> Result<Client, Failure> {
    let url = url(args)?;
    let token = token(args, &url, TokenKind::Admin)?;
    let no_token = token.is_none();
    let cfg = ClientConfig { max_frame: OPERATOR_MAX_FRAME, ..ClientConfig::operator(url, token) };
    Client::connect(cfg, Handlers::new()).await.map_err(|e| {
        let mut f = Failure::from(e);
        if no_token && f.code == exit::DENIED {
            f.message.push_str(" (no token given: use --token, ORB_TOKEN or ORB_TOKEN_FILE)");
        }
        f
    })
}

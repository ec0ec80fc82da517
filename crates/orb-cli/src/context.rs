//! `orb context add|use|ls|show|rm`: named servers with their token files, kept by [`store`] in
//! the user's configuration folder. Client commands pick one with `--context`, `ORB_CONTEXT`,
//! `orb context use` or `[client] context` ([`crate::connect`]).

pub mod store;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use orb_client::ServerUrl;
use serde_json::json;

use crate::cli::{ContextAddArgs, ContextCommand};
use crate::connect::{self, resolve::ContextChoice};
use crate::exit::{self, Failure};
use store::{Context, Store};

/// Runs one `orb context` sub-command.
pub fn run(cmd: ContextCommand, config_file: Option<&Path>) -> Result<u8, Failure> {
    let store = connect::context_store().ok_or_else(|| {
        Failure::new(exit::CONFIG, "no configuration folder to keep contexts in: set HOME or XDG_CONFIG_HOME")
    })?;
    match cmd {
        ContextCommand::Add(args) => add(&store, args),
        ContextCommand::Use { name } => select(&store, &name),
        ContextCommand::Ls { json } => list(&store, config_file, json),
        ContextCommand::Show { name, json } => show(&store, config_file, name, json),
        ContextCommand::Rm { name } => remove(&store, &name),
    }
}

/// `orb context add`: checks everything first, so a mistake changes nothing.
fn add(store: &Store, a: ContextAddArgs) -> Result<u8, Failure> {
    if a.token.is_some() {
        return Err(Failure::usage(
            "a context keeps no token, only the path of a file holding it: write the token to a file \
             readable only by you (chmod 600 FILE) and pass --token-file FILE",
        ));
    }
    store::check_name(&a.name).map_err(Failure::usage)?;
    ServerUrl::parse(&a.server).map_err(|e| Failure::usage(format!("--server: {e}")))?;
    if let Some(d) = &a.description
        && (d.chars().count() > store::MAX_DESCRIPTION || d.chars().any(char::is_control))
    {
        return Err(Failure::usage(format!(
            "--description: one line of at most {} characters",
            store::MAX_DESCRIPTION
        )));
    }
    let token_file = a.token_file.as_deref().map(checked_token_file).transpose()?;
    let absolute = |p: &Option<std::path::PathBuf>, flag: &str| -> Result<Option<std::path::PathBuf>, Failure> {
        p.as_deref()
            .map(|p| {
                std::path::absolute(p)
                    .ok()
                    .filter(|abs| abs.is_file())
                    .ok_or_else(|| Failure::usage(format!("{flag} {}: no such file", p.display())))
            })
            .transpose()
    };
    let (ca_cert, cert, key) =
        (absolute(&a.ca_cert, "--ca-cert")?, absolute(&a.cert, "--cert")?, absolute(&a.key, "--key")?);
    let existing = store.load(&a.name).map_err(|e| Failure::new(exit::CONFIG, e))?;
    if let Some(old) = existing.filter(|_| !a.force) {
        return Err(Failure::usage(format!(
            "context '{}' exists ({}): add --force to replace it, or remove it with orb context rm {}",
            a.name, old.server, a.name
        )));
    }
    let context = Context { server: a.server, token_file, description: a.description, ca_cert, cert, key };
    store.save(&a.name, &context).map_err(|e| Failure::new(exit::FAILED, e))?;
    let token = context.token_file.as_ref().map_or_else(String::new, |f| format!(", token file {}", f.display()));
    outln!("context {} saved: {}{token}", a.name, context.server);
    if a.select {
        store.select(Some(&a.name)).map_err(|e| Failure::new(exit::FAILED, e))?;
        outln!("using context {}", a.name);
        env_overrides(&a.name);
    } else {
        outln!("use it with --context {0}, ORB_CONTEXT={0}, or orb context use {0}", a.name);
    }
    Ok(exit::OK)
}

/// The absolute path of a token file that holds something; warns when others may read it.
fn checked_token_file(path: &Path) -> Result<PathBuf, Failure> {
    let abs = std::path::absolute(path).map_err(|e| Failure::usage(format!("--token-file {}: {e}", path.display())))?;
    let text = std::fs::read_to_string(&abs)
        .map_err(|e| Failure::usage(format!("cannot read token file {}: {e}", abs.display())))?;
    if text.trim().is_empty() {
        return Err(Failure::usage(format!("token file {} is empty", abs.display())));
    }
    if let Ok(meta) = std::fs::metadata(&abs) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!("warning: {} is readable by others (mode {mode:o}): chmod 600 {}", abs.display(), abs.display());
        }
    }
    Ok(abs)
}

/// Warns when `ORB_CONTEXT` names another context, since it wins over `orb context use`.
fn env_overrides(name: &str) {
    if let Some(env) = std::env::var("ORB_CONTEXT").ok().filter(|v| !v.is_empty() && v != name) {
        eprintln!("note: ORB_CONTEXT={env} is set and wins over this selection where it is set");
    }
}

/// Loads context `name` or fails naming the known ones.
fn load(store: &Store, name: &str) -> Result<Context, Failure> {
    store
        .load(name)
        .map_err(|e| Failure::new(exit::CONFIG, e))?
        .ok_or_else(|| connect::unknown_context(name, None, Some(store)))
}

/// `orb context use NAME`.
fn select(store: &Store, name: &str) -> Result<u8, Failure> {
    let c = load(store, name)?;
    store.select(Some(name)).map_err(|e| Failure::new(exit::FAILED, e))?;
    outln!("using context {name} ({})", c.server);
    env_overrides(name);
    Ok(exit::OK)
}

/// The context client commands use without `--context`, and how it was chosen.
fn in_force(store: &Store, config_file: Option<&Path>) -> Result<Option<(String, ContextChoice)>, Failure> {
    let settings = connect::client_settings(config_file)?;
    connect::context_choice(None, &settings, Some(store))
}

/// One context as JSON (the shape of `ls --json` items).
fn to_json(name: &str, c: &Context, current: bool) -> serde_json::Value {
    json!({
        "name": name,
        "server": c.server,
        "token_file": c.token_file,
        "description": c.description,
        "ca_cert": c.ca_cert,
        "cert": c.cert,
        "key": c.key,
        "current": current,
    })
}

/// `orb context ls [--json]`.
fn list(store: &Store, config_file: Option<&Path>, as_json: bool) -> Result<u8, Failure> {
    let current = in_force(store, config_file)?;
    let names = store.names().map_err(|e| Failure::new(exit::CONFIG, e))?;
    let mut rows = Vec::with_capacity(names.len());
    for name in &names {
        rows.push((name.as_str(), load(store, name)?));
    }
    let is_current = |n: &str| current.as_ref().is_some_and(|(c, _)| c == n);
    if let Some((name, how)) = current.as_ref().filter(|(n, _)| !names.contains(n)) {
        eprintln!("warning: context '{name}' ({}) does not exist", how.label());
    }
    if as_json {
        let list: Vec<_> = rows.iter().map(|(n, c)| to_json(n, c, is_current(n))).collect();
        outln!("{}", serde_json::Value::Array(list));
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        eprintln!("no contexts yet: orb context add NAME --server URL --token-file FILE");
        return Ok(exit::OK);
    }
    let name_w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max("NAME".len());
    let server_w = rows.iter().map(|(_, c)| c.server.len()).max().unwrap_or(0).max("SERVER".len());
    outln!("  {:name_w$}  {:server_w$}  DESCRIPTION", "NAME", "SERVER");
    for (name, c) in &rows {
        let mark = if is_current(name) { '*' } else { ' ' };
        let line = format!("{mark} {name:name_w$}  {:server_w$}  {}", c.server, c.description.as_deref().unwrap_or(""));
        outln!("{}", line.trim_end());
    }
    Ok(exit::OK)
}

/// `orb context show [NAME] [--json]`.
fn show(store: &Store, config_file: Option<&Path>, name: Option<String>, as_json: bool) -> Result<u8, Failure> {
    let current = in_force(store, config_file)?;
    let name = match (name, &current) {
        (Some(n), _) => n,
        (None, Some((n, _))) => n.clone(),
        (None, None) => {
            return Err(Failure::usage(
                "no context in use: name one (orb context show NAME), or select one with orb context use NAME",
            ));
        }
    };
    let c = load(store, &name)?;
    let how = current.as_ref().filter(|(n, _)| *n == name).map(|(_, how)| how.label());
    let token_status = c.token_file.as_deref().map(|f| match std::fs::read_to_string(f) {
        Ok(t) if t.trim().is_empty() => "empty".to_owned(),
        Ok(_) => "readable".to_owned(),
        Err(e) => format!("unreadable: {e}"),
    });
    if as_json {
        let mut v = to_json(&name, &c, how.is_some());
        v["path"] = json!(store.path(&name));
        v["token_file_status"] = json!(token_status);
        outln!("{v}");
        return Ok(exit::OK);
    }
    outln!("name         {name}");
    outln!("server       {}", c.server);
    match (&c.token_file, &token_status) {
        (Some(f), Some(s)) => outln!("token file   {} ({s})", f.display()),
        _ => outln!("token file   none (for a loopback server: ./orb-data/admin.token)"),
    }
    outln!("description  {}", c.description.as_deref().unwrap_or(""));
    if let Some(f) = &c.ca_cert {
        outln!("ca cert      {}", f.display());
    }
    if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
        outln!("client cert  {} (key {})", cert.display(), key.display());
    }
    outln!("in use       {}", how.map_or_else(|| "no".to_owned(), |h| format!("yes ({h})")));
    outln!("file         {}", store.path(&name).display());
    Ok(exit::OK)
}

/// `orb context rm NAME`; clears the selection when it named this context.
fn remove(store: &Store, name: &str) -> Result<u8, Failure> {
    if !store.remove(name).map_err(|e| Failure::new(exit::FAILED, e))? {
        return Err(connect::unknown_context(name, None, Some(store)));
    }
    outln!("context {name} removed");
    if store.selected().ok().flatten().as_deref() == Some(name) {
        store.select(None).map_err(|e| Failure::new(exit::FAILED, e))?;
        outln!("it was in use: select another with orb context use NAME");
    }
    Ok(exit::OK)
}

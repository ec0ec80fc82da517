//! `orb cert dev`: a development CA with a server certificate and client certificates, written
//! into one folder (`./orb-certs` by default) with the keys private (0600), so TLS and mTLS can be
//! tried in a minute (`docs/security.md`). The generator is `orb_io::tls::dev` (tests use it too).
//! A CA already in the folder is reused, so clients can be added later; a server or client file
//! that exists is never replaced without `--force`, and nothing is written when one would be.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use orb_io::tls::dev::{DevCa, Issued};

use crate::cli::{CertCommand, CertDevArgs};
use crate::exit::{self, Failure};

/// Runs `orb cert ...`.
pub fn run(cmd: CertCommand) -> Result<u8, Failure> {
    match cmd {
        CertCommand::Dev(args) => dev(&args),
    }
}

/// What happens to the server certificate.
#[derive(Debug, PartialEq, Eq)]
enum ServerPlan {
    /// Made (new, or replaced with `--force`).
    Write,
    /// Both files exist and nothing asks for a new one: kept.
    Keep,
}

fn io_failure(path: &Path, e: &std::io::Error) -> Failure {
    Failure::new(exit::FAILED, format!("cannot write {}: {e}", path.display()))
}

/// Decides what to write, refusing before anything is written.
fn plan(args: &CertDevArgs) -> Result<ServerPlan, Failure> {
    let out = &args.out;
    let exists = |name: &str| out.join(name).exists();
    let refuse = |name: &str| {
        Failure::new(
            exit::FAILED,
            format!(
                "{} exists; nothing was written (give --force to replace server and client files, or another --out)",
                out.join(name).display()
            ),
        )
    };
    for id in &args.clients {
        orb_proto::DeviceId::new(id).map_err(|e| Failure::usage(format!("--client {id}: {e}")))?;
        for file in [format!("client-{id}.crt"), format!("client-{id}.key")] {
            if exists(&file) && !args.force {
                return Err(refuse(&file));
            }
        }
    }
    match (exists("ca.crt"), exists("ca.key")) {
        (true, false) => return Err(refuse_ca(out, "ca.crt", "ca.key")),
        (false, true) => return Err(refuse_ca(out, "ca.key", "ca.crt")),
        _ => {}
    }
    let (crt, key) = (exists("server.crt"), exists("server.key"));
    Ok(match (crt, key) {
        (false, false) => ServerPlan::Write,
        _ if args.force => ServerPlan::Write,
        // Adding clients later: the server certificate stays as it is.
        (true, true) if args.hosts.is_empty() && !args.clients.is_empty() && exists("ca.crt") => ServerPlan::Keep,
        (true, _) => return Err(refuse("server.crt")),
        (false, true) => return Err(refuse("server.key")),
    })
}

fn refuse_ca(out: &Path, present: &str, missing: &str) -> Failure {
    Failure::new(
        exit::FAILED,
        format!(
            "{} exists without {}; nothing was written (restore it, or use another --out for a new CA)",
            out.join(present).display(),
            out.join(missing).display()
        ),
    )
}

/// Writes a certificate (0644) and its key (0600) as `NAME.crt` and `NAME.key`.
fn write_pair(out: &Path, name: &str, issued: &Issued) -> Result<(PathBuf, PathBuf), Failure> {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    write_file(out, &crt, issued.cert_pem.as_bytes(), 0o644)?;
    write_file(out, &key, issued.key_pem.as_bytes(), 0o600)?;
    Ok((out.join(crt), out.join(key)))
}

fn write_file(out: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    let path = out.join(name);
    crate::private_file::write(out, name, bytes).map_err(|e| io_failure(&path, &e))?;
    if mode != 0o600 {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| io_failure(&path, &e))?;
    }
    Ok(())
}

fn dev(args: &CertDevArgs) -> Result<u8, Failure> {
    let server_plan = plan(args)?;
    let out = &args.out;
    let generate = |e: orb_io::tls::TlsError| Failure::new(exit::FAILED, e.to_string());
    let (ca_crt, ca_key) = (out.join("ca.crt"), out.join("ca.key"));
    let (ca, reused) = if ca_crt.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| Failure::new(exit::FAILED, format!("cannot read {}: {e}", p.display())))
        };
        (DevCa::from_pem(&read(&ca_crt)?, &read(&ca_key)?, &ca_crt).map_err(generate)?, true)
    } else {
        (DevCa::generate(&format!("orb development CA {}", short_random())).map_err(generate)?, false)
    };
    // Everything is generated before the first file is written.
    let server = match server_plan {
        ServerPlan::Write => Some(ca.server(&args.hosts).map_err(generate)?),
        ServerPlan::Keep => None,
    };
    let clients = args
        .clients
        .iter()
        .map(|id| Ok((id, ca.client(id).map_err(generate)?)))
        .collect::<Result<Vec<_>, Failure>>()?;
    crate::private_file::create_dir(out).map_err(|e| io_failure(out, &e))?;
    if reused {
        eprintln!("reusing the CA in {} (ca.crt, ca.key)", out.display());
    } else {
        write_pair(out, "ca", &ca.ca)?;
        eprintln!("wrote {} and {} (the CA; keep ca.key private)", ca_crt.display(), ca_key.display());
    }
    match &server {
        Some(s) => {
            let (crt, key) = write_pair(out, "server", s)?;
            let mut names: Vec<&str> = orb_io::tls::dev::LOCAL_NAMES.to_vec();
            names.extend(args.hosts.iter().map(String::as_str));
            eprintln!("wrote {} and {} for {}", crt.display(), key.display(), names.join(", "));
        }
        None => eprintln!("kept {} (exists; --force replaces it)", out.join("server.crt").display()),
    }
    for (id, issued) in &clients {
        let (crt, key) = write_pair(out, &format!("client-{id}"), issued)?;
        eprintln!("wrote {} and {} for device {id}", crt.display(), key.display());
    }
    print_next(out, &args.clients);
    Ok(exit::OK)
}

/// The commands that use what was written.
fn print_next(out: &Path, clients: &[String]) {
    let d = out.display();
    outln!("Next:");
    outln!("  orb serve --tls-cert {d}/server.crt --tls-key {d}/server.key --tls-client-ca {d}/ca.crt");
    match clients.first() {
        Some(id) => outln!(
            "  orb agent --server tls://localhost:7700 --ca-cert {d}/ca.crt --cert {d}/client-{id}.crt --key {d}/client-{id}.key"
        ),
        None => outln!(
            "  orb agent --server tls://localhost:7700 --ca-cert {d}/ca.crt --id web-1      # or a client certificate: orb cert dev --client ID"
        ),
    }
    outln!("  orb send '*' ping --server tls://localhost:7700 --ca-cert {d}/ca.crt");
    outln!(
        "  curl --cacert {d}/ca.crt -H \"Authorization: Bearer $(cat orb-data/admin.token)\" https://localhost:7780/v1/status"
    );
}

/// Eight hex digits, so two development CAs are told apart by name.
fn short_random() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(out: &Path, hosts: &[&str], clients: &[&str], force: bool) -> CertDevArgs {
        CertDevArgs {
            out: out.to_path_buf(),
            hosts: hosts.iter().map(|s| (*s).to_owned()).collect(),
            clients: clients.iter().map(|s| (*s).to_owned()).collect(),
            force,
        }
    }

    #[test]
    fn existing_files_are_kept_or_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        assert_eq!(plan(&args(out, &[], &[], false)).unwrap(), ServerPlan::Write);
        for f in ["ca.crt", "ca.key", "server.crt", "server.key", "client-cam-1.crt"] {
            std::fs::write(out.join(f), "x").unwrap();
        }
        // Adding a client later keeps the server certificate ...
        assert_eq!(plan(&args(out, &[], &["cam-2"], false)).unwrap(), ServerPlan::Keep);
        // ... but a new host name would replace it, and a client file exists: refused.
        let e = plan(&args(out, &["orb.example"], &[], false)).unwrap_err();
        assert!(e.message.contains("server.crt exists") && e.message.contains("--force"), "{}", e.message);
        let e = plan(&args(out, &[], &["cam-1"], false)).unwrap_err();
        assert!(e.message.contains("client-cam-1.crt exists"), "{}", e.message);
        assert_eq!(plan(&args(out, &["orb.example"], &["cam-1"], true)).unwrap(), ServerPlan::Write);
        // Running again with nothing new is refused rather than silently replacing.
        assert!(plan(&args(out, &[], &[], false)).is_err());
        assert_eq!(plan(&args(out, &[], &["bad id"], true)).unwrap_err().code, exit::USAGE);
        std::fs::remove_file(out.join("ca.key")).unwrap();
        let e = plan(&args(out, &[], &["cam-3"], false)).unwrap_err();
        assert!(e.message.contains("ca.crt exists without"), "{}", e.message);
    }
}

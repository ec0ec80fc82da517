//! TLS with rustls and one crypto provider, aws-lc-rs (decision 0022): certificates and keys
//! read from PEM files ([`ServerTls::load`], [`ClientTls::load`]), the identity a client
//! certificate gives a device ([`identity`]), the plain-text words for TLS failures a person
//! can act on ([`explain`]), and with the `dev-certs` feature a development CA ([`dev`]).
//!
//! Every configuration is built with the aws-lc-rs provider explicitly, so a library user need
//! not install a process-wide default provider.

#[cfg(feature = "dev-certs")]
pub mod dev;
pub mod identity;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls;

/// Why a TLS configuration could not be built. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file it is (`certificate`, `private key`, `CA certificate`).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A file holds no PEM block of the expected kind, or a malformed one.
    #[error("{path}: {reason}")]
    Pem {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificates or key (a key that does not match the certificate, an
    /// unsupported key type, a CA certificate it cannot use).
    #[error("{what}: {reason}")]
    Config {
        /// What was being set up.
        what: String,
        /// rustls's reason.
        reason: String,
    },
    /// A client certificate without its key, or the other way round.
    #[error("a client certificate needs its private key: give both --cert and --key (or neither)")]
    Incomplete,
    /// No `--ca-cert` and the system's trust store holds no certificate.
    #[error(
        "no trusted CA: the system's trust store is empty or unreadable ({0}); give the server's CA with --ca-cert FILE"
    )]
    NoSystemRoots(String),
    /// A certificate could not be generated ([`dev`]).
    #[error("cannot generate {what}: {reason}")]
    Generate {
        /// What was being generated.
        what: String,
        /// Why not.
        reason: String,
    },
}

/// The one crypto provider of the whole tree: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs aws-lc-rs as the process's default provider (for libraries that use the default,
/// such as an HTTP client); a second call changes nothing. Call it at the top of `main`.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

/// Every certificate in the PEM file at `path` (at least one).
///
/// # Errors
/// [`TlsError::Read`], or [`TlsError::Pem`] when it holds no certificate or a malformed one.
pub fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), reason: format!("not a PEM certificate file: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: format!("no {what} in it (expected a -----BEGIN CERTIFICATE----- block)"),
        });
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// [`TlsError::Read`], or [`TlsError::Pem`] when it holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: format!("no private key in it (expected a -----BEGIN PRIVATE KEY----- block): {e}"),
    })
}

/// The CA certificates in `path` as a trust store.
fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        store.add(cert).map_err(|e| TlsError::Config {
            what: format!("{what} {}", path.display()),
            reason: format!("not usable as a trust anchor: {e}"),
        })?;
    }
    Ok(store)
}

/// The server side: its certificate chain and key, and optionally the CA client certificates
/// are verified against. Paths are kept (not the contents), so [`ServerTls::load`] re-reads
/// them: what a reload does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; without it, no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients that present no certificate (needs `client_ca`).
    pub require_client_cert: bool,
}

impl ServerTls {
    /// Reads the files and builds the rustls configuration.
    ///
    /// # Errors
    /// [`TlsError`] naming the file at fault; `require_client_cert` without `client_ca` is a
    /// [`TlsError::Config`].
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config { what: "TLS protocol versions".into(), reason: e.to_string() })?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let roots = roots("client CA certificate", ca)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if self.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
                let verifier = verifier.build().map_err(|e| TlsError::Config {
                    what: format!("client CA certificate {}", ca.display()),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None if self.require_client_cert => {
                return Err(TlsError::Config {
                    what: "require_client_cert".into(),
                    reason: "needs the CA that client certificates are checked against (client_ca)".into(),
                });
            }
            None => builder.with_no_client_auth(),
        };
        let certs = load_certs("certificate", &self.cert)?;
        let key = load_key(&self.key)?;
        builder.with_single_cert(certs, key).map(Arc::new).map_err(|e| TlsError::Config {
            what: format!("certificate {} with key {}", self.cert.display(), self.key.display()),
            reason: e.to_string(),
        })
    }
}

/// The client side: which CA to trust (else the system's trust store) and optionally a client
/// certificate with its key (mTLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates (PEM) the server's certificate must chain to; `None`: the system's.
    pub ca_cert: Option<PathBuf>,
    /// This client's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM).
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// Reads the files (or the system's trust store) and builds the rustls configuration.
    ///
    /// # Errors
    /// [`TlsError`] naming the file at fault; [`TlsError::Incomplete`] for a certificate
    /// without its key or a key without its certificate.
    pub fn load(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let roots = match &self.ca_cert {
            Some(ca) => roots("CA certificate", ca)?,
            None => system_roots()?,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config { what: "TLS protocol versions".into(), reason: e.to_string() })?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let certs = load_certs("client certificate", cert)?;
                builder.with_client_auth_cert(certs, load_key(key)?).map_err(|e| TlsError::Config {
                    what: format!("client certificate {} with key {}", cert.display(), key.display()),
                    reason: e.to_string(),
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::Incomplete),
        };
        Ok(Arc::new(config))
    }
}

/// The system's trust store (rustls-native-certs: the same store the OS's other programs use).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.first().map_or_else(|| "no certificates found".to_owned(), ToString::to_string);
        return Err(TlsError::NoSystemRoots(why));
    }
    Ok(store)
}

/// The server name a client checks the certificate against (and sends as SNI): `host` as a DNS
/// name or an IP address.
///
/// # Errors
/// [`TlsError::Config`] when `host` is neither.
pub fn server_name(host: &str) -> Result<rustls_pki_types::ServerName<'static>, TlsError> {
    rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| TlsError::Config { what: format!("server name '{host}'"), reason: e.to_string() })
}

/// A TLS failure in words a person can act on, when `e` (from a TLS handshake, read or write)
/// carries one from rustls; `None` for other I/O errors.
pub fn explain(e: &io::Error) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    let text = match tls {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature | C::UnhandledCriticalExtension) => {
            "the server's certificate is not signed by a CA this client trusts; give the CA that issued it with --ca-cert FILE"
                .to_owned()
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for the host name connected to; connect with a name the certificate lists, or reissue it with that name (orb cert dev --host NAME)".to_owned()
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "the server's certificate has expired".to_owned(),
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet (check the clocks)".to_owned()
        }
        E::AlertReceived(A::CertificateRequired) => {
            "the server requires a client certificate; give one with --cert FILE --key FILE".to_owned()
        }
        E::AlertReceived(A::UnknownCA | A::BadCertificate | A::DecryptError | A::CertificateUnknown) => {
            "the server refused this client certificate: it is not issued by the CA the server trusts for clients"
                .to_owned()
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the server did not answer in TLS: is this a plain tcp:// or ws:// port?".to_owned()
        }
        other => return Some(format!("TLS failed: {other}")),
    };
    Some(format!("{text} ({tls})"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let tls = ServerTls {
            cert: dir.path().join("nope.crt"),
            key: empty.clone(),
            client_ca: None,
            require_client_cert: false,
        };
        let e = tls.load().unwrap_err().to_string();
        assert!(e.contains("cannot read certificate") && e.contains("nope.crt"), "{e}");
        let tls = ServerTls { cert: empty.clone(), ..tls };
        let e = tls.load().unwrap_err().to_string();
        assert!(e.contains("empty.pem") && e.contains("no certificate"), "{e}");
        let tls = ServerTls { require_client_cert: true, ..tls };
        assert!(tls.load().unwrap_err().to_string().contains("client_ca"));
        let client = ClientTls { ca_cert: Some(empty.clone()), cert: None, key: Some(empty) };
        assert!(client.load().unwrap_err().to_string().contains("no CA certificate"));
    }

    #[test]
    fn a_host_is_a_dns_name_or_an_ip() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("::1").is_ok());
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn only_rustls_errors_are_explained() {
        assert_eq!(explain(&io::Error::other("plain")), None);
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(explain(&e).unwrap().contains("--ca-cert"));
    }
}

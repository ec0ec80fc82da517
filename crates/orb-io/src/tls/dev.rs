//! A development certificate authority (rcgen, aws-lc-rs): what `orb cert dev` writes and what
//! tests generate per test. [`DevCa::generate`] makes a new CA (or [`DevCa::from_pem`] takes back
//! one made earlier, so clients can be added later), which issues a server certificate
//! ([`DevCa::server`]: SANs `localhost`, `127.0.0.1`, `::1` and the names given) and client
//! certificates ([`DevCa::client`]: CN and URI SAN `urn:orb:device:ID`, client-auth usage).
//! Keys are ECDSA P-256. The CA is valid for 10 years, what it issues for 2.

use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::TlsError;
use super::identity::DEVICE_URN;

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM): keep it private (mode 0600).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// A development CA.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate and key.
    pub ca: Issued,
}

/// The name hosts of every server certificate carry.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn generate_err(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Generate { what: what.to_owned(), reason: e.to_string() }
}

/// Valid from the start of today (UTC) for `years`.
fn validity(params: &mut CertificateParams, years: i32) {
    let today = chrono::Utc::now().date_naive();
    // Day 28 at most: every month has it, in every year.
    let day = u8::try_from(today.day().min(28)).unwrap_or(28);
    let month = u8::try_from(today.month()).unwrap_or(1);
    params.not_before = rcgen::date_time_ymd(today.year(), month, day);
    params.not_after = rcgen::date_time_ymd(today.year() + years, month, day);
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

impl DevCa {
    /// A new CA named `name` (its CN).
    ///
    /// # Errors
    /// [`TlsError::Generate`].
    pub fn generate(name: &str) -> Result<DevCa, TlsError> {
        let key = KeyPair::generate().map_err(generate_err("the CA key"))?;
        let mut params = ca_params(name);
        validity(&mut params, 10);
        let cert = params.self_signed(&key).map_err(generate_err("the CA certificate"))?;
        let ca = Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        Ok(DevCa { issuer: Issuer::new(params, key), ca })
    }

    /// The CA from its certificate and key as [`DevCa::generate`] wrote them (a CA whose
    /// subject is one CN).
    ///
    /// # Errors
    /// [`TlsError::Pem`] (`path` names the files) when they do not parse, the key is not the
    /// certificate's, or the certificate is not one this module made.
    pub fn from_pem(cert_pem: &str, key_pem: &str, path: &std::path::Path) -> Result<DevCa, TlsError> {
        let bad = |reason: String| TlsError::Pem { path: path.to_path_buf(), reason };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad(format!("no CA certificate in it: {e}")))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("the CA key does not parse: {e}")))?;
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| bad(format!("the CA certificate does not parse: {e}")))?;
        if cert.subject_public_key_info().as_ref() != key.subject_public_key_info().as_slice() {
            return Err(bad("the CA key does not belong to the CA certificate".into()));
        }
        let name = match super::identity::common_names(cert.subject()) {
            Ok(names) if names.len() == 1 => names.into_iter().next().unwrap_or_default(),
            _ => return Err(bad("the CA certificate was not made by orb cert dev (its subject is not one CN)".into())),
        };
        let params = ca_params(&name);
        // The subject children name as their issuer must be the CA's, byte for byte.
        if cn_subject(&name) != cert.subject() {
            return Err(bad(
                "the CA certificate was not made by orb cert dev (its subject is encoded otherwise)".into()
            ));
        }
        let ca = Issued { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() };
        Ok(DevCa { issuer: Issuer::new(params, key), ca })
    }

    /// A server certificate for `localhost`, `127.0.0.1`, `::1` and each of `hosts` (DNS names
    /// or IP addresses).
    ///
    /// # Errors
    /// [`TlsError::Generate`], e.g. for a host name that is not ASCII.
    pub fn server(&self, hosts: &[String]) -> Result<Issued, TlsError> {
        let mut names: Vec<String> = LOCAL_NAMES.iter().map(|s| (*s).to_owned()).collect();
        for h in hosts {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
        let mut params = CertificateParams::new(names).map_err(generate_err("the server certificate"))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "orb server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params, "the server certificate")
    }

    /// A client certificate for device `id`: CN `id`, URI SAN `urn:orb:device:ID`, client-auth
    /// usage.
    ///
    /// # Errors
    /// [`TlsError::Generate`] when `id` is not a valid device id.
    pub fn client(&self, id: &str) -> Result<Issued, TlsError> {
        orb_proto::DeviceId::new(id).map_err(|e| TlsError::Generate {
            what: format!("a client certificate for '{id}'"),
            reason: e.to_string(),
        })?;
        let what = format!("the client certificate of {id}");
        let uri = format!("{DEVICE_URN}{id}").try_into().map_err(generate_err(&what))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, id);
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params, &what)
    }

    /// A client certificate with exactly the subject CN and URI SANs given (tests of the
    /// identity rule).
    ///
    /// # Errors
    /// [`TlsError::Generate`].
    pub fn client_named(&self, cn: Option<&str>, uris: &[&str]) -> Result<Issued, TlsError> {
        let what = "a client certificate";
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        for u in uris {
            params.subject_alt_names.push(SanType::URI((*u).try_into().map_err(generate_err(what))?));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, what)
    }

    fn issue(&self, mut params: CertificateParams, what: &str) -> Result<Issued, TlsError> {
        validity(&mut params, 2);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(generate_err(what))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate_err(what))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// The DER content of a subject that is one CN as a UTF8String (what rcgen writes).
fn cn_subject(name: &str) -> Vec<u8> {
    let mut value = vec![0x0c];
    push_len(&mut value, name.len());
    value.extend_from_slice(name.as_bytes());
    let mut atv_content = vec![0x06, 0x03, 0x55, 0x04, 0x03];
    atv_content.extend_from_slice(&value);
    let mut atv = vec![0x30];
    push_len(&mut atv, atv_content.len());
    atv.extend_from_slice(&atv_content);
    let mut set = vec![0x31];
    push_len(&mut set, atv.len());
    set.extend_from_slice(&atv);
    set
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tls::identity::device_id;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn a_client_certificate_names_its_device_and_the_ca_comes_back_from_pem() {
        let ca = DevCa::generate("orb test CA").unwrap();
        let cam = ca.client("cam-1").unwrap();
        let der = CertificateDer::from_pem_slice(cam.cert_pem.as_bytes()).unwrap();
        assert_eq!(device_id(&der).unwrap(), "cam-1");
        assert!(ca.client("not valid").is_err());
        assert!(!format!("{cam:?}").contains("PRIVATE KEY"));

        let again = DevCa::from_pem(&ca.ca.cert_pem, &ca.ca.key_pem, std::path::Path::new("ca.crt")).unwrap();
        let other = DevCa::generate("other").unwrap();
        let e = DevCa::from_pem(&ca.ca.cert_pem, &other.ca.key_pem, std::path::Path::new("ca.crt")).err().unwrap();
        assert!(e.to_string().contains("does not belong"), "{e}");
        // A certificate the reloaded CA issues chains to the original CA certificate.
        let server = again.server(&["orb.example".into()]).unwrap();
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            r.add(CertificateDer::from_pem_slice(ca.ca.cert_pem.as_bytes()).unwrap()).unwrap();
            std::sync::Arc::new(r)
        };
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, crate::tls::provider()).build().unwrap();
        let leaf = CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap();
        for name in ["orb.example", "localhost", "::1"] {
            let name = crate::tls::server_name(name).unwrap();
            verifier.verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now()).unwrap();
        }
    }

    #[test]
    fn the_identity_rule_prefers_the_device_urn_then_one_cn() {
        let ca = DevCa::generate("orb test CA").unwrap();
        let id = |cn: Option<&str>, uris: &[&str]| {
            let c = ca.client_named(cn, uris).unwrap();
            device_id(&CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap())
        };
        assert_eq!(id(Some("cn-name"), &["urn:orb:device:urn-name"]).unwrap(), "urn-name");
        assert_eq!(id(Some("cn-name"), &["https://example.org/x"]).unwrap(), "cn-name");
        assert_eq!(id(None, &["URN:ORB:DEVICE:upper"]).unwrap(), "upper");
        assert!(matches!(id(None, &[]), Err(crate::tls::identity::IdentityError::None)));
        assert!(matches!(
            id(None, &["urn:orb:device:a", "urn:orb:device:b"]),
            Err(crate::tls::identity::IdentityError::Ambiguous(_))
        ));
    }
}

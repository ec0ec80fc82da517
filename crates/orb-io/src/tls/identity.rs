//! The device identity of a verified client certificate (mTLS): the URI SAN
//! `urn:orb:device:ID` when the certificate has one, else the subject's common name (CN). A
//! certificate with two different `urn:orb:device:` URIs, or with no such URI and several CNs,
//! names no one. The certificate has been verified against the client CA before this runs; the
//! caller checks the id's syntax.

use rustls_pki_types::CertificateDer;

/// The URI SAN prefix of a device identity.
pub const DEVICE_URN: &str = "urn:orb:device:";

/// Why a client certificate gives no device identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate does not parse.
    #[error("the client certificate does not parse: {0}")]
    Malformed(String),
    /// Neither a `urn:orb:device:` URI SAN nor a CN.
    #[error("the client certificate names no device: no URI SAN {DEVICE_URN}ID and no CN")]
    None,
    /// More than one candidate.
    #[error("the client certificate names several devices ({0}); it must name one")]
    Ambiguous(String),
}

/// The device id a client certificate names (see the module documentation for the rule).
///
/// # Errors
/// [`IdentityError`] when it names none or several.
pub fn device_id(cert: &CertificateDer<'_>) -> Result<String, IdentityError> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let mut uris: Vec<&str> = ee
        .valid_uri_names()
        .filter_map(|u| {
            let prefix = u.get(..DEVICE_URN.len())?;
            prefix.eq_ignore_ascii_case(DEVICE_URN).then(|| &u[DEVICE_URN.len()..])
        })
        .collect();
    uris.dedup();
    match uris.as_slice() {
        [one] => return Ok((*one).to_owned()),
        [] => {}
        many => return Err(IdentityError::Ambiguous(many.join(", "))),
    }
    let names = common_names(ee.subject())?;
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(IdentityError::None),
        many => Err(IdentityError::Ambiguous(many.join(", "))),
    }
}

/// DER tag of an OID.
const OID: u8 = 0x06;
/// The attribute type of the common name, 2.5.4.3, as DER content.
const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];

/// The common names in a subject (the content of its `Name` SEQUENCE).
pub(crate) fn common_names(subject: &[u8]) -> Result<Vec<String>, IdentityError> {
    let mut names = Vec::new();
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (set, rest) = tlv(rdns, 0x31)?;
        rdns = rest;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (atv, rest) = tlv(atvs, 0x30)?;
            atvs = rest;
            let (oid, value) = tlv(atv, OID)?;
            if oid != CN_OID {
                continue;
            }
            let tag = *value.first().ok_or_else(|| malformed("empty CN"))?;
            let (text, _) = tlv(value, tag)?;
            // UTF8String, PrintableString, IA5String.
            if !matches!(tag, 0x0c | 0x13 | 0x16) {
                return Err(malformed("the CN is not a UTF8String, PrintableString or IA5String"));
            }
            let text = std::str::from_utf8(text).map_err(|_| malformed("the CN is not UTF-8"))?;
            names.push(text.to_owned());
        }
    }
    Ok(names)
}

fn malformed(why: &str) -> IdentityError {
    IdentityError::Malformed(why.to_owned())
}

/// One DER element of tag `want` at the start of `input`: its content and what follows it.
fn tlv(input: &[u8], want: u8) -> Result<(&[u8], &[u8]), IdentityError> {
    let (&tag, rest) = input.split_first().ok_or_else(|| malformed("truncated subject"))?;
    if tag != want {
        return Err(malformed("unexpected element in the subject"));
    }
    let (&first, rest) = rest.split_first().ok_or_else(|| malformed("truncated subject"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(malformed("bad length in the subject"));
        }
        let bytes = rest.get(..n).ok_or_else(|| malformed("truncated subject"))?;
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), &rest[n..])
    };
    let content = rest.get(..len).ok_or_else(|| malformed("truncated subject"))?;
    Ok((content, &rest[len..]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_odd_subjects_are_errors_not_panics() {
        assert_eq!(common_names(&[]).unwrap(), Vec::<String>::new());
        for bad in [&[0x31][..], &[0x31, 0x05, 0x30], &[0x31, 0x85, 1, 1, 1, 1, 1], &[0x30, 0x00], &[0x31, 0x81]] {
            assert!(common_names(bad).is_err(), "{bad:?}");
        }
        // SET { SEQ { OID 2.5.4.3, UTF8String "cam-1" } }
        let cn = [0x31, 0x0e, 0x30, 0x0c, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x05, b'c', b'a', b'm', b'-', b'1'];
        assert_eq!(common_names(&cn).unwrap(), vec!["cam-1".to_owned()]);
        // The same with a BMPString value: refused, not misread.
        let mut bmp = cn;
        bmp[9] = 0x1e;
        assert!(common_names(&bmp).is_err());
    }
}

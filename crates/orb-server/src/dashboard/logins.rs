//! Dashboard sign-ins: a token typed into the login page is exchanged for a random session id
//! sent back as an `HttpOnly; SameSite=Strict` cookie, so the token itself never sits in the
//! browser or in a URL. The server keeps only each id's SHA-256 with who signed in and until
//! when, in memory (a restart signs everyone out), bounded in count: past `MAX_LOGINS` the one
//! closest to expiry goes. The [`Browser`] extractor turns the cookie back into a requester for
//! the dashboard's pages and for the API's read-only calls (`crate::api::auth`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::identity::Requester;
use crate::session::Shared;

/// The cookie's name.
pub(crate) const COOKIE: &str = "orb_session";
/// How long a sign-in lasts.
pub(crate) const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sign-ins held at most; past it the one closest to expiry is dropped.
pub(crate) const MAX_LOGINS: usize = 1024;

/// One sign-in.
struct Login {
    who: Requester,
    expires: Instant,
}

/// The server's sign-ins, by the SHA-256 of their session id.
#[derive(Default)]
pub(crate) struct Logins {
    held: Mutex<HashMap<[u8; 32], Login>>,
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Logins {
    /// Starts a sign-in for `who`; returns the session id for the cookie.
    pub(crate) fn start(&self, who: Requester) -> String {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let id = hex::encode(raw);
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.retain(|_, l| l.expires > now);
        if held.len() >= MAX_LOGINS
            && let Some(oldest) = held.iter().min_by_key(|(_, l)| l.expires).map(|(k, _)| *k)
        {
            held.remove(&oldest);
        }
        held.insert(digest(&id), Login { who, expires: now + LOGIN_TTL });
        id
    }

    /// Who a session id belongs to, while it lasts.
    pub(crate) fn find(&self, id: &str) -> Option<Requester> {
        let held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.get(&digest(id)).filter(|l| l.expires > Instant::now()).map(|l| l.who.clone())
    }

    /// Ends a sign-in.
    pub(crate) fn end(&self, id: &str) {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&digest(id));
    }

    /// The requester a request's session cookie belongs to.
    pub(crate) fn signed_in(&self, headers: &HeaderMap) -> Option<Requester> {
        self.find(&session_cookie(headers)?)
    }
}

/// The value of the `orb_session` cookie, if the request carries one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The `Set-Cookie` value that holds `id` (`Secure` when the page was served over TLS).
pub(crate) fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", LOGIN_TTL.as_secs())
}

/// The `Set-Cookie` value that clears it.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether a request that changes something comes from the dashboard's own pages: the browser's
/// `Sec-Fetch-Site` (when sent) says `same-origin`, and the `Origin` (when sent) names the host
/// the request was sent to. The `SameSite=Strict` cookie already keeps other sites out; this is
/// the second lock.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && site != "same-origin"
    {
        return false;
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, rest)| rest == host),
        (Some(_), None) => false,
    }
}

/// A signed-in browser: the requester its session cookie belongs to.
pub(crate) struct Browser(pub(crate) Requester);

/// Why a page needs a sign-in first.
pub(crate) struct SignInFirst;

impl axum::response::IntoResponse for SignInFirst {
    fn into_response(self) -> axum::response::Response {
        // htmx follows `HX-Redirect`; a plain navigation follows the `303`.
        let mut r = axum::response::Redirect::to("/").into_response();
        r.headers_mut().insert("hx-redirect", axum::http::HeaderValue::from_static("/"));
        r
    }
}

impl FromRequestParts<Arc<Shared>> for Browser {
    type Rejection = SignInFirst;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        let who = shared.logins.signed_in(&parts.headers).ok_or(SignInFirst)?;
        // Where this request comes from (the audit log's source), not where the sign-in did.
        let peer = parts.extensions.get::<crate::listener::http::Admitted>().map(|a| a.peer);
        Ok(Browser(match peer {
            Some(addr) => who.from_addr("dashboard", addr),
            None => who,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_session_lasts_until_it_ends_and_unknown_ids_find_nobody() {
        let logins = Logins::default();
        let id = logins.start(Requester::new(Identity::admin("dashboard")));
        assert_eq!(id.len(), 64);
        assert_eq!(logins.find(&id).map(|r| r.identity.name), Some("dashboard".to_owned()));
        assert!(logins.find("0000").is_none());
        logins.end(&id);
        assert!(logins.find(&id).is_none());
    }

    #[test]
    fn sign_ins_are_bounded() {
        let logins = Logins::default();
        let first = logins.start(Requester::new(Identity::admin("a")));
        for _ in 0..MAX_LOGINS {
            logins.start(Requester::new(Identity::admin("b")));
        }
        assert_eq!(logins.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len(), MAX_LOGINS);
        assert!(logins.find(&first).is_none(), "the oldest sign-in made room");
    }

    #[test]
    fn the_cookie_is_read_among_others_and_written_strict() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; orb_session=abc; b=2".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        let cookie = set_cookie("abc", false);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap_or_else(|_| unreachable!()));
            }
            h
        };
        assert!(same_origin(&headers(&[("host", "orb:7780")])));
        assert!(same_origin(&headers(&[("host", "orb:7780"), ("origin", "http://orb:7780")])));
        assert!(!same_origin(&headers(&[("host", "orb:7780"), ("origin", "http://evil.example")])));
        assert!(!same_origin(&headers(&[("host", "orb:7780"), ("sec-fetch-site", "cross-site")])));
    }
}

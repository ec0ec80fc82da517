//! CORS for the HTTP port (`[http] cors_origins`, none by default): the pages of the listed
//! origins may call the API from a browser (bearer token in the `Authorization` header; the
//! dashboard's cookie is `SameSite=Strict` and never goes with them). The list is read on every
//! request, so a reload applies at once.

use std::sync::{Arc, RwLock};

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The origins allowed now.
#[derive(Debug, Default)]
pub struct CorsOrigins(RwLock<Vec<HeaderValue>>);

impl CorsOrigins {
    /// The origins of `list` (checked by [`problems`] before).
    pub fn new(list: &[String]) -> CorsOrigins {
        let origins = CorsOrigins::default();
        origins.set(list);
        origins
    }

    /// Replaces the list (configuration reload).
    pub fn set(&self, list: &[String]) {
        let values = list.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = values;
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).iter().any(|o| o == origin)
    }
}

/// What is wrong with the entries of `[http] cors_origins`: each must be `http(s)://host[:port]`,
/// nothing after.
pub fn problems(list: &[String]) -> Vec<String> {
    list.iter()
        .filter(|o| {
            let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
            !rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '?', '#', ' ']))
                || HeaderValue::from_str(o).is_err()
        })
        .map(|o| {
            format!(
                "'http.cors_origins': \"{}\" is not an origin like https://ops.example.com[:port]",
                orb_proto::excerpt(o)
            )
        })
        .collect()
}

/// The layer answering preflights and marking responses for the allowed origins.
pub(crate) fn layer(origins: Arc<CorsOrigins>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| origins.allows(origin)))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_matched_exactly() {
        let good = vec!["https://ops.example.com".to_owned(), "http://127.0.0.1:8080".to_owned()];
        assert!(problems(&good).is_empty());
        let bad = ["ops.example.com", "https://", "https://a.example/path", "ftp://a"].map(String::from);
        assert_eq!(problems(&bad).len(), 4);
        let o = CorsOrigins::new(&good);
        assert!(o.allows(&HeaderValue::from_static("https://ops.example.com")));
        assert!(!o.allows(&HeaderValue::from_static("https://ops.example.com.evil.example")));
        o.set(&[]);
        assert!(!o.allows(&HeaderValue::from_static("https://ops.example.com")));
    }
}

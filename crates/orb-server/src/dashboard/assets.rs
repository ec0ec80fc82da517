//! The dashboard's static files, compiled into the binary (no CDN, no internet needed): the
//! stylesheet, the page script and the vendored htmx (pinned by its SHA-256, `vendor/README.md`).
//! Served under `/assets/NAME` with a content type and a cache lifetime; public, as the sign-in
//! page needs them.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", bytes: include_bytes!("assets/app.css") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("assets/app.js") },
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/vendor/htmx.min.js"),
    },
];

/// `GET /assets/{name}`.
pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, "public, max-age=3600")], a.bytes)
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// The vendored htmx is the file `vendor/README.md` names.
    const HTMX_SHA256: &str = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717";

    #[test]
    fn vendored_files_are_the_pinned_ones() {
        let htmx = ASSETS.iter().find(|a| a.name == "htmx.min.js").map(|a| a.bytes).unwrap_or_default();
        assert_eq!(hex::encode(Sha256::digest(htmx)), HTMX_SHA256);
    }
}

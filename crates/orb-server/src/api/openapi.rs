//! The OpenAPI 3.1 document of the HTTP port, `GET /v1/openapi.json` (public): assembled from the
//! handlers' `#[utoipa::path]` and the types' `ToSchema` as `api::routes` registers them with
//! `routes!` (a route cannot exist without its documentation), then given this server's limits
//! in force: the longest `wait`/`deadline_ms` (`limits.max_deadline`) and `ttl`/`ttl_ms`
//! (`limits.max_ttl`), which a reload may change, and the request body limit (`limits.max_frame`
//! when the port started).
//!
//! Refusals are documented by their codes: [`refusals!`] declares the codes an operation may
//! answer, and each becomes the response of its HTTP status from the one code table
//! (`ErrorCode::http_status`), so the document and `ApiError` cannot disagree on a status.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use orb_proto::{ErrorBody, ErrorCode};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use super::Api;
use crate::config::Limits;

/// The name of the bearer token's security scheme.
pub(crate) const BEARER: &str = "bearer";

/// Longest duration text (`"5s"`, `"1h 30m"`) a duration field takes.
pub(crate) const MAX_DURATION_TEXT: usize = 64;

/// The document's fixed parts; `api::routes` adds the operations and their schemas.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "orb",
        description = "The orb broker's HTTP API: status, devices, jobs, schedules, publications, the \
                       event feed and the audit log, as adapters over the same broker calls the wire protocol's `$orb.` queries \
                       use. Authenticate with `Authorization: Bearer TOKEN` (the admin token); refusals are \
                       `{\"code\", \"message\"}` with the code's HTTP status (docs/errors.md).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(ErrorBody, super::events::Publication)),
    modifiers(&Bearer),
    tags(
        (name = "server", description = "What the server is and holds"),
        (name = "devices", description = "The device inventory"),
        (name = "jobs", description = "Commands sent to devices, and their results"),
        (name = "schedules", description = "Stored schedules that fire jobs"),
        (name = "audit", description = "Operator actions that changed something (admin only)"),
        (name = "events", description = "Publications, as they happen"),
        (name = "health", description = "Liveness and readiness, public"),
        (name = "agents", description = "The agent WebSocket (wire protocol)"),
    )
)]
pub(crate) struct Base;

/// Adds the bearer token's security scheme.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The admin token (DATA/admin.token, or server.admin_token), or an operator token \
                 (`orb tokens add`) acting with its role; never read from the URL.",
            ))
            .build();
        doc.components.get_or_insert_with(Default::default).add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// Declares `$name`, the refusals of one operation for `responses(...)`: the codes listed, plus
/// `internal` and `too_many_connections` (any request), plus with `secured` the bearer token's
/// `auth_failed` and `forbidden`. Each status gets one response naming its codes.
macro_rules! refusals {
    ($(#[$doc:meta])* $name:ident, $secured:literal: $($code:ident),* $(,)?) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::api::openapi::responses_for($secured, &[$(orb_proto::ErrorCode::$code),*])
            }
        }
    };
}
pub(crate) use refusals;

/// The responses of `codes` (with the common ones), one per HTTP status.
pub(crate) fn responses_for(secured: bool, codes: &[ErrorCode]) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    let mut all: Vec<ErrorCode> = codes.to_vec();
    if secured {
        // A wrong token counts against its address: past `limits.auth_failures_per_ip`, 429.
        all.extend([ErrorCode::AuthFailed, ErrorCode::Forbidden, ErrorCode::RateLimited]);
    }
    all.extend([ErrorCode::Internal, ErrorCode::TooManyConnections]);
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in all {
        let list = by_status.entry(code.http_status()).or_default();
        if !list.contains(&code) {
            list.push(code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let lines: Vec<String> = codes.iter().map(|c| format!("`{}`: {}", c.as_str(), meaning(c))).collect();
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            let response = ResponseBuilder::new().description(lines.join("; ")).content("application/json", content);
            (status.to_string(), RefOr::T(response.build()))
        })
        .collect()
}

/// What a code means on the HTTP API (the table's words, but for the codes whose words speak of
/// the wire protocol's frames).
fn meaning(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::AuthFailed => "no `Authorization: Bearer TOKEN` header, or a token the server does not know",
        ErrorCode::Forbidden => "the token is valid but not the admin token, or a policy refuses the action",
        ErrorCode::BadRequest => {
            "the path, query or JSON body is not what the operation takes (a missing, unknown or mistyped field, \
             a value out of its documented range); the message names it"
        }
        ErrorCode::FrameTooLarge => "the body is larger than the server's frame limit (`limits.max_frame`)",
        ErrorCode::TooManyConnections => {
            "the server's connection limit (total or per address) is reached; the connection is closed"
        }
        other => other.description(),
    }
}

/// The assembled document, and the last one rendered with the limits in force.
pub(crate) struct Document {
    base: Value,
    /// The request body limit, fixed when the port started serving.
    max_body: usize,
    rendered: Mutex<Option<(Arc<Limits>, axum::body::Bytes)>>,
}

impl Document {
    /// Keeps `doc` (with its operations) to render with the limits in force and `max_body`.
    pub(crate) fn new(doc: &utoipa::openapi::OpenApi, max_body: usize) -> Document {
        let base = serde_json::to_value(doc).expect("an OpenAPI document always serialises");
        Document { base, max_body, rendered: Mutex::new(None) }
    }

    /// The document as JSON, with `limits`.
    pub(crate) fn render(&self, limits: &Arc<Limits>) -> axum::body::Bytes {
        let mut cached = self.rendered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((for_limits, bytes)) = cached.as_ref()
            && Arc::ptr_eq(for_limits, limits)
        {
            return bytes.clone();
        }
        let doc = with_limits(&self.base, limits, self.max_body);
        let bytes = axum::body::Bytes::from(serde_json::to_vec(&doc).expect("JSON always serialises"));
        *cached = Some((Arc::clone(limits), bytes.clone()));
        bytes
    }
}

/// A maximum that depends on the configuration.
enum Bound {
    /// A duration written as text (`"5s"`): its maximum in words, the text at most
    /// [`MAX_DURATION_TEXT`] characters.
    Text(Duration, &'static str),
    /// A duration in milliseconds.
    Millis(Duration, &'static str),
}

/// Where each configured maximum goes (JSON pointers into the document).
fn bounds(limits: &Limits) -> Vec<(&'static str, Bound)> {
    vec![
        ("/components/schemas/NewJob/properties/wait", Bound::Text(limits.max_deadline, "limits.max_deadline")),
        ("/components/schemas/NewJob/properties/ttl", Bound::Text(limits.max_ttl, "limits.max_ttl")),
        (
            "/components/schemas/NewSchedule/properties/deadline_ms",
            Bound::Millis(limits.max_deadline, "limits.max_deadline"),
        ),
        ("/components/schemas/NewSchedule/properties/ttl_ms", Bound::Millis(limits.max_ttl, "limits.max_ttl")),
    ]
}

/// Milliseconds of `d`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `base` with this server's maxima: each bounded field's `maximum` (or `maxLength`) and a
/// sentence saying so, and every request body's size limit (`max_body`).
pub(crate) fn with_limits(base: &Value, limits: &Limits, max_body: usize) -> Value {
    let mut doc = base.clone();
    for (pointer, bound) in bounds(limits) {
        let Some(Value::Object(field)) = doc.pointer_mut(pointer) else { continue };
        let (max, key) = match bound {
            Bound::Text(d, key) => {
                field.insert("maxLength".into(), MAX_DURATION_TEXT.into());
                (humantime::format_duration(d).to_string(), key)
            }
            Bound::Millis(d, key) => {
                field.insert("maximum".into(), millis(d).into());
                (format!("{} ms", millis(d)), key)
            }
        };
        let said = field.get("description").and_then(Value::as_str).unwrap_or_default().trim_end().to_owned();
        let sentence = format!("At most {max} on this server (`{key}`); longer is refused with `bad_request`.");
        let text = if said.is_empty() { sentence } else { format!("{said}\n\n{sentence}") };
        field.insert("description".into(), text.into());
    }
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for operation in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|item| item.values_mut()) {
            if let Some(Value::Object(body)) = operation.get_mut("requestBody") {
                let said = body.get("description").and_then(Value::as_str).unwrap_or_default().to_owned();
                let sentence = format!(
                    "At most {max_body} bytes on this server (`limits.max_frame` when it started); larger is \
                     refused with `413` `frame_too_large`."
                );
                let text = if said.is_empty() { sentence } else { format!("{said}\n\n{sentence}") };
                body.insert("description".into(), text.into());
            }
        }
    }
    doc
}

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "server",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this server's HTTP port, with its limits in force",
         body = Object, content_type = "application/json"),
        DocumentRefusals,
    )
)]
pub(crate) async fn document(State(api): State<Arc<Api>>) -> Response {
    let bytes = api.document.render(&api.shared.broker.limits());
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

refusals!(
    /// Refusals of `GET /v1/openapi.json`.
    DocumentRefusals, false:
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grouped_by_their_status_with_the_common_ones() {
        let r = responses_for(true, &[ErrorCode::BadSelector, ErrorCode::BadRequest, ErrorCode::NoMatch]);
        let statuses: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(statuses, ["400", "401", "403", "404", "429", "500", "503"]);
        let RefOr::T(bad) = &r["400"] else { panic!("inline response") };
        assert!(bad.description.starts_with("`bad_selector`: "), "{}", bad.description);
        assert!(bad.description.contains("; `bad_request`: "), "{}", bad.description);
        let public = responses_for(false, &[]);
        assert_eq!(public.keys().map(String::as_str).collect::<Vec<_>>(), ["500", "503"]);
    }

    #[test]
    fn bounds_land_as_maxima_and_sentences() {
        let base = serde_json::json!({
            "paths": {"/x": {"post": {"requestBody": {"content": {}}}}},
            "components": {"schemas": {
                "NewJob": {"properties": {"wait": {"description": "Deadline."}, "ttl": {}}},
                "NewSchedule": {"properties": {"deadline_ms": {}, "ttl_ms": {}}}
            }}
        });
        let limits =
            Limits { max_deadline: Duration::from_secs(90), max_ttl: Duration::from_secs(3600), ..Limits::default() };
        let doc = with_limits(&base, &limits, 4096);
        let wait = &doc["components"]["schemas"]["NewJob"]["properties"]["wait"];
        assert_eq!(wait["maxLength"], MAX_DURATION_TEXT);
        assert_eq!(
            wait["description"],
            "Deadline.\n\nAt most 1m 30s on this server (`limits.max_deadline`); longer is refused with `bad_request`."
        );
        let ttl_ms = &doc["components"]["schemas"]["NewSchedule"]["properties"]["ttl_ms"];
        assert_eq!(ttl_ms["maximum"], 3_600_000);
        assert!(ttl_ms["description"].as_str().unwrap_or_default().starts_with("At most 3600000 ms"));
        let body = &doc["paths"]["/x"]["post"]["requestBody"]["description"];
        assert!(body.as_str().unwrap_or_default().starts_with("At most 4096 bytes"), "{body}");
    }
}

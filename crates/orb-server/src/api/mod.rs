//! The HTTP port's routes: the REST API under `/v1/` (issue 14), an adapter over the broker's one
//! door like the wire session: each handler authenticates the bearer token through the same
//! [`Authenticator`] a `hello` goes through, calls one typed service (the ones the `$orb.` queries
//! use) or `Broker::submit`/`publish`, and answers JSON. Refusals are `{"code", "message"}` with
//! the code's HTTP status, as `docs/errors.md` lists them. Beside it: health (`/healthz`,
//! `/v1/health`, `/readyz`), the agent WebSocket (`/v1/ws`, served by `listener::http`) and the
//! OpenAPI document (`/v1/openapi.json`).
//!
//! Every route is registered with `utoipa_axum::routes!`, which takes the path and method from the
//! handler's `#[utoipa::path]`: a route cannot exist without its documentation (a test holds this
//! file to it).
//!
//! Modules: `error` (refusals as responses), `auth` (the bearer token), `body` (JSON objects),
//! `jobs`, `devices`,
//! `schedules`, `audit`, `server` (status, publish), `events` (publications as Server-Sent Events or
//! WebSocket messages), `health`, `openapi` (the document).
//!
//! [`Authenticator`]: crate::auth::Authenticator

mod audit;
pub(crate) mod auth;
mod body;
mod devices;
mod error;
mod events;
mod health;
mod jobs;
mod metrics;
pub(crate) mod openapi;
mod schedules;
mod server;

use std::sync::Arc;

use axum::Router;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

pub(crate) use error::ApiError;

use crate::identity::{Identity, Requester};
use crate::session::Shared;

/// What every handler gets.
pub(crate) struct Api {
    pub(crate) shared: Arc<Shared>,
    /// The requester every admin-token call acts as: one quota of running jobs for the API,
    /// its name in the job history.
    pub(crate) admin: Requester,
    /// The OpenAPI document of these routes.
    pub(crate) document: openapi::Document,
}

/// Every operation of the HTTP port: its route and documentation, from the handler's
/// `#[utoipa::path]`.
fn operations() -> Vec<UtoipaMethodRouter<Arc<Api>>> {
    vec![
        routes!(openapi::document),
        routes!(metrics::render),
        routes!(health::live),
        routes!(health::live_v1),
        routes!(health::ready),
        routes!(crate::listener::http::upgrade),
        routes!(server::status),
        routes!(server::publish),
        routes!(events::stream),
        routes!(events::websocket),
        routes!(devices::list),
        routes!(devices::show),
        routes!(jobs::list, jobs::submit),
        routes!(jobs::show, jobs::cancel),
        routes!(schedules::list, schedules::create),
        routes!(schedules::show, schedules::remove),
        routes!(schedules::pause),
        routes!(schedules::resume),
        routes!(audit::list),
    ]
}

/// The routes with their documentation, before they get their state.
fn documented() -> OpenApiRouter<Arc<Api>> {
    operations().into_iter().fold(OpenApiRouter::with_openapi(openapi::Base::openapi()), OpenApiRouter::routes)
}

/// Every route of the HTTP port, request bodies limited to the frame limit in force now.
pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    let max_body = shared.broker.limits().max_frame;
    let (router, doc) = documented().split_for_parts();
    let api = Arc::new(Api {
        shared,
        admin: Requester::new(Identity::admin("http")),
        document: openapi::Document::new(&doc, max_body),
    });
    router.fallback(error::not_found).with_state(api).layer(axum::extract::DefaultBodyLimit::max(max_body))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Routes come only from `routes!` (path and method from the handler's documentation):
    /// neither this file nor the HTTP listener adds one by hand, except the dashboard's pages.
    #[test]
    fn no_route_is_added_without_its_documentation() {
        for (file, text) in
            [("api/mod.rs", include_str!("mod.rs")), ("listener/http.rs", include_str!("../listener/http.rs"))]
        {
            // The code, not these tests (which name what they look for).
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let plain = [".route(", ".route_service(", ".nest(", ".nest_service(", ".merge("];
            // The dashboard's HTML pages are the one thing merged beside the API (no API, so
            // not in its document).
            let pages = |l: &str| l.contains(".merge(crate::dashboard::routes(");
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//") && !pages(l)) {
                for p in plain {
                    assert!(!line.contains(p), "{file} adds a route without documentation: {}", line.trim());
                }
            }
        }
    }

    /// Every operation the router serves is in the document, with its method, a unique
    /// operation id, a tag, and either the bearer token or no security at all (public).
    #[test]
    fn every_operation_is_documented_once_with_its_security() {
        let doc = documented().into_openapi();
        let json = serde_json::to_value(&doc).expect("serialises");
        let mut ids = BTreeSet::new();
        let mut served = BTreeSet::new();
        for (path, item) in json["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                served.insert(format!("{} {path}", method.to_uppercase()));
                let id = op["operationId"].as_str().expect("an operation id");
                assert!(ids.insert(id.to_owned()), "operation id {id} twice");
                assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {path} has a tag");
                let public = ["/v1/openapi.json", "/healthz", "/v1/health", "/readyz", "/v1/ws"];
                match op.get("security") {
                    None => assert!(public.contains(&path.as_str()), "{method} {path} says who may call it"),
                    Some(s) => assert_eq!(s, &serde_json::json!([{"bearer": []}]), "{method} {path}"),
                }
            }
        }
        let want: BTreeSet<String> = [
            "GET /v1/openapi.json",
            "GET /healthz",
            "GET /v1/health",
            "GET /readyz",
            "GET /v1/ws",
            "GET /metrics",
            "GET /v1/status",
            "POST /v1/publish",
            "GET /v1/events",
            "GET /v1/events/ws",
            "GET /v1/devices",
            "GET /v1/devices/{id}",
            "GET /v1/jobs",
            "POST /v1/jobs",
            "GET /v1/jobs/{id}",
            "DELETE /v1/jobs/{id}",
            "GET /v1/schedules",
            "POST /v1/schedules",
            "GET /v1/schedules/{id}",
            "DELETE /v1/schedules/{id}",
            "POST /v1/schedules/{id}/pause",
            "POST /v1/schedules/{id}/resume",
            "GET /v1/audit",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(served, want);
        assert!(served.contains(&format!("GET {}", orb_proto::WS_PATH)));
    }

    /// Schemas are named by their type's name alone: two types of one name (say a `Status` of
    /// the API and the protocol's) would leave the document one of them for both.
    #[test]
    fn no_two_schemas_share_a_name() {
        let mut seen: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
        let base = openapi::Base::openapi();
        let fixed = base.components.iter().flat_map(|c| c.schemas.clone());
        let collected = operations().into_iter().flat_map(|(schemas, _, _)| schemas);
        for (name, schema) in fixed.chain(collected) {
            let schema = serde_json::to_value(&schema).expect("serialises");
            if let Some(before) = seen.insert(name.clone(), schema.clone()) {
                assert_eq!(before, schema, "two schemas are named {name}");
            }
        }
        for name in ["ServerStatus", "Status", "NewPublication", "Publication", "NewJob", "NewSchedule", "ErrorBody"] {
            assert!(seen.contains_key(name), "{name} is in the document");
        }
    }

    /// The maxima written as literals in the attributes are the constants the server checks.
    #[test]
    fn literal_maxima_are_the_limits_the_server_checks() {
        use orb_proto::rollout::{MAX_BATCH_WAIT, MAX_SPLAY};
        use orb_schedule::{MAX_EVERY, MIN_EVERY};

        let json = serde_json::to_value(documented().into_openapi()).expect("serialises");
        let ms = |d: std::time::Duration| serde_json::json!(openapi::millis(d));
        let schemas = &json["components"]["schemas"];
        let every = schemas["Spec"]["oneOf"]
            .as_array()
            .and_then(|kinds| kinds.iter().find(|k| k["properties"].get("every_ms").is_some()))
            .map(|k| &k["properties"]["every_ms"])
            .expect("the every spec");
        assert_eq!((&every["minimum"], &every["maximum"]), (&ms(MIN_EVERY), &ms(MAX_EVERY)));
        assert_eq!(schemas["Rollout"]["properties"]["splay_ms"]["maximum"], ms(MAX_SPLAY));
        assert_eq!(schemas["Rollout"]["properties"]["batch_wait_ms"]["maximum"], ms(MAX_BATCH_WAIT));
        assert_eq!(schemas["Rollout"]["properties"]["abort_on_failure_pct"]["maximum"], 100);
        let command = orb_proto::message::MAX_COMMAND_NAME;
        assert_eq!(schemas["NewJob"]["properties"]["command"]["maxLength"], command);
        assert_eq!(schemas["NewSchedule"]["properties"]["command"]["maxLength"], command);
        assert_eq!(schemas["NewPublication"]["properties"]["topic"]["maxLength"], orb_proto::topic::MAX_TOPIC);
        let param = |path: &str, method: &str, name: &str| -> serde_json::Value {
            let params = json["paths"][path][method]["parameters"].as_array().cloned().unwrap_or_default();
            params.into_iter().find(|p| p["name"] == name).map(|p| p["schema"].clone()).unwrap_or_default()
        };
        assert_eq!(param("/v1/devices", "get", "limit")["maximum"], devices::MAX_PAGE);
        assert_eq!(param("/v1/jobs", "get", "limit")["maximum"], crate::broker::services::history::MAX_LIMIT);
        assert_eq!(param("/v1/events", "get", "pattern")["maxLength"], orb_proto::topic::MAX_TOPIC);
        // The selector's limit is private to its parser: one byte past it is refused.
        let max_selector = param("/v1/devices", "get", "selector")["maxLength"].as_u64().expect("a maxLength");
        assert_eq!(schemas["NewJob"]["properties"]["target"]["maxLength"], max_selector);
        assert_eq!(schemas["NewSchedule"]["properties"]["target"]["maxLength"], max_selector);
        let at_most = format!("*{}", " ".repeat(usize::try_from(max_selector).expect("small") - 1));
        assert!(orb_proto::Selector::parse(&at_most).is_ok());
        assert!(orb_proto::Selector::parse(&format!("{at_most} ")).is_err());
    }

    /// Every `$ref` names a schema the document holds.
    #[test]
    fn every_reference_resolves() {
        let json = serde_json::to_value(documented().into_openapi()).expect("serialises");
        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        refs(&json, &mut found);
        assert!(found.len() > 20, "the document refers to its schemas");
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").expect("a local schema");
            assert!(json["components"]["schemas"].get(name).is_some(), "{r} names no schema");
        }
    }
}

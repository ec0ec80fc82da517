//! The reserved `$orb.` operator queries, answered by the server from the router's state:
//! device inventory, selector dry runs and server information.

use orb_proto::message::{DevicesQuery, ResolveQuery, Resolved, ServerInfo, commands};
use orb_proto::{ErrorBody, ErrorCode, PROTOCOL_VERSION};

use crate::router::Router;
use orb_client::handler::{Context as Request, HandlerResult};

/// The server's software name and version, as sent in `welcome`.
pub const SERVER_NAME: &str = concat!("orb/", env!("CARGO_PKG_VERSION"));

/// Answers a reserved command, or `None` when `req.cmd` is not one.
pub fn answer(router: &Router, req: &Request) -> Option<HandlerResult> {
    let result = match req.cmd.as_str() {
        commands::DEVICES_LIST => devices_list(router, req),
        commands::SELECTOR_RESOLVE => resolve(router, req),
        commands::SERVER_INFO => Ok(server_info(router)),
        _ => return None,
    };
    Some(result)
}

fn devices_list(router: &Router, req: &Request) -> HandlerResult {
    let q: DevicesQuery = if req.args.as_ref() == b"null" { DevicesQuery::default() } else { req.args()? };
    let sel = q.selector.as_deref().map(|s| router.parse_selector(s)).transpose()?;
    to_value(&router.device_infos(sel.as_ref()))
}

fn resolve(router: &Router, req: &Request) -> HandlerResult {
    let q: ResolveQuery = req.args()?;
    let sel = router.parse_selector(&q.selector)?;
    let devices = router.resolve(&sel).into_iter().map(|s| s.record.id.to_string()).collect();
    let canonical =
        orb_proto::Selector::parse(&q.selector).map(|s| s.to_string()).unwrap_or_else(|_| q.selector.clone());
    to_value(&Resolved { selector: canonical, devices })
}

fn server_info(router: &Router) -> serde_json::Value {
    let (agents, operators) = router.counts();
    serde_json::json!(ServerInfo {
        server: SERVER_NAME.to_owned(),
        version: PROTOCOL_VERSION,
        agents,
        operators,
        jobs_in_flight: router.jobs_in_flight() as u64,
        started_at: router.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        closed: router.close_counts().into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        draining: router.is_draining(),
    })
}

fn to_value<T: serde::Serialize>(v: &T) -> HandlerResult {
    serde_json::to_value(v).map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))
}

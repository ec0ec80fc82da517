//! The reserved `$orb.` operator commands, answered by the server itself: selector dry runs and
//! server information here; the device registry in `inventory`, the job history in
//! `history`. Operator sessions only (the session checks).

use std::sync::Arc;

use orb_proto::message::{ResolveQuery, Resolved, ServerInfo, commands};
use orb_proto::{ErrorBody, ErrorCode, PROTOCOL_VERSION};

use crate::router::Router;
use crate::{history, inventory};
use orb_io::handler::{Context as Request, HandlerResult};

/// The server's software name and version, as sent in `welcome`.
pub const SERVER_NAME: &str = concat!("orb/", env!("CARGO_PKG_VERSION"));

/// Answers a reserved command, or `None` when `req.cmd` is not one.
pub async fn answer(router: &Arc<Router>, req: &Request) -> Option<HandlerResult> {
    let result = match req.cmd.as_str() {
        commands::SELECTOR_RESOLVE => resolve(router, req),
        commands::SERVER_INFO => Ok(server_info(router)),
        commands::DEVICES_LIST => inventory::list(router, req).await,
        commands::DEVICES_SHOW => inventory::show(router, req).await,
        commands::DEVICES_SUMMARY => inventory::summary(router),
        commands::DEVICES_ADD => inventory::add(router, req).await,
        commands::DEVICES_REMOVE => inventory::remove(router, req).await,
        commands::DEVICES_REVOKE => inventory::revoke(router, req).await,
        commands::DEVICES_TAG => inventory::tag(router, req).await,
        commands::JOBS_LIST => history::list(router, req).await,
        commands::JOBS_SHOW => history::show(router, req).await,
        commands::JOBS_CANCEL => history::cancel(router, req).await,
        _ => return None,
    };
    Some(result)
}

fn resolve(router: &Router, req: &Request) -> HandlerResult {
    let q: ResolveQuery = req.args()?;
    let sel = router.parse_selector(&q.selector)?;
    let devices = router.resolve(&sel).into_iter().map(|t| t.id.to_string()).collect();
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
        devices_known: router.registry().counts().0,
        jobs_in_flight: router.jobs_in_flight() as u64,
        started_at: router.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        closed: router.close_counts().into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        draining: router.is_draining(),
    })
}

/// A result as JSON.
pub(crate) fn to_value<T: serde::Serialize>(v: &T) -> HandlerResult {
    serde_json::to_value(v).map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))
}

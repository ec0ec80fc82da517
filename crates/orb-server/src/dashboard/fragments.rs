//! The dashboard's `/ui/` fragments, the HTML pieces htmx swaps into the shell: the device table
//! (with each device's latest telemetry: CPU and memory), the selector preview, the job list, one
//! job's per-device results (polling itself while the job runs) and the send form's answer. Each is a signed-in browser's call to the same typed
//! broker services the API and the CLI use; a send goes through `Broker::submit` after the
//! same-origin check.

use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use maud::{Markup, html};
use orb_proto::history::{JobDetail, JobPhase, JobRef, JobsQuery};
use orb_proto::message::{DeviceInfo, DevicesQuery, ResolveQuery, Select, TargetResult};
use orb_proto::registry::SysGlance;
use orb_proto::rollout::Rollout;
use orb_proto::{ErrorBody, ErrorCode, Status};
use serde::Deserialize;

use super::logins::{Browser, same_origin};
use crate::broker::telemetry::Sample;
use crate::jobs::JobSpec;
use crate::session::Shared;

/// Devices the preview names before it only counts.
const PREVIEW_NAMES: usize = 50;
/// Jobs the job list shows.
const RECENT_JOBS: u32 = 20;
/// Result text shown per device before it is cut.
const RESULT_CHARS: usize = 200;
/// The send form's deadline when none is given, and its most.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A refusal shown where the answer would have gone.
fn problem(e: &ErrorBody) -> Markup {
    html! { p.error role="alert" { code { (e.code.as_str()) } " " (e.message) } }
}

fn excerpt(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// `GET /ui/devices`: every device, connected ones first.
pub(crate) async fn devices(State(shared): State<Arc<Shared>>, Browser(who): Browser) -> Markup {
    let query = DevicesQuery { selector: None, connected: false, schemas: false };
    let mut devices = match shared.broker.devices_list(&who, &query).await {
        Ok(d) => d,
        Err(e) => return problem(&e),
    };
    devices.sort_by(|a, b| b.connected.cmp(&a.connected).then_with(|| a.id.cmp(&b.id)));
    let online = devices.iter().filter(|d| d.connected).count();
    html! {
        p.counts { (online) " online · " (devices.len() - online) " offline" }
        div.scroll {
            table.devices {
                thead { tr { th { "" } th { "Device" } th { "Tags" } th { "Last seen" } th { "RTT" } th { "Held" } th { "System" } } }
                tbody {
                    @for d in &devices { (device_row(d, shared.broker.telemetry(&d.id).as_ref())) }
                }
            }
        }
    }
}

/// A device's latest telemetry in a few characters: `12% · 1.2/7.8 GiB` (CPU, memory used of
/// total), with the time it was received as a tooltip; `—` when there is none.
fn system_cell(sample: Option<&Sample>) -> Markup {
    let Some(sample) = sample else { return html! { "—" } };
    let glance =
        serde_json::from_slice::<serde_json::Value>(&sample.body).map(|v| SysGlance::of(&v)).unwrap_or_default();
    let at = sample.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    html! { span.telemetry title={ "received " (at) } { (glance.cpu_text()) " · " (glance.memory_text()) } }
}

fn device_row(d: &DeviceInfo, telemetry: Option<&Sample>) -> Markup {
    let state = if d.connected { "online" } else { "offline" };
    let last_seen = if d.connected { "now".to_owned() } else { d.last_seen.clone().unwrap_or_else(|| "never".into()) };
    html! {
        tr data-device=(d.id) data-state=(state) {
            td { span.dot.(state) title=(state) {} }
            td { (d.id) @if d.revoked { " " span.badge { "revoked" } } }
            td { @for (k, v) in &d.tags { span.tag { (k) "=" (v) } " " } }
            td { (last_seen) }
            td { @if let Some(rtt) = d.rtt_ms { (format!("{rtt:.1} ms")) } @else { "—" } }
            td { (d.held) }
            td { (system_cell(telemetry)) }
        }
    }
}

/// `GET /ui/preview?target=SEL`.
#[derive(Debug, Deserialize)]
pub(crate) struct PreviewQuery {
    #[serde(default)]
    target: String,
}

/// `GET /ui/preview?target=SEL`: the devices a job on `SEL` would target now; nothing is sent.
pub(crate) async fn preview(
    State(shared): State<Arc<Shared>>,
    Browser(who): Browser,
    Query(q): Query<PreviewQuery>,
) -> Markup {
    if q.target.trim().is_empty() {
        return html! { p.muted { "Type a selector: an id, a glob like web-*, tag:role=web, group:NAME or *." } };
    }
    match shared.broker.resolve_selector(&who, &ResolveQuery { selector: q.target }) {
        Ok(r) if r.devices.is_empty() => html! { p.muted { "Matches no device." } },
        Ok(r) => html! {
            p #preview-count { "Matches " strong { (r.devices.len()) } " device" @if r.devices.len() != 1 { "s" } ":" }
            p.names {
                @for id in r.devices.iter().take(PREVIEW_NAMES) { span.tag { (id) } " " }
                @if r.devices.len() > PREVIEW_NAMES { "and " (r.devices.len() - PREVIEW_NAMES) " more" }
            }
        },
        Err(e) => problem(&e),
    }
}

/// `GET /ui/jobs`: the newest jobs.
pub(crate) async fn jobs(State(shared): State<Arc<Shared>>, Browser(who): Browser) -> Markup {
    let jobs = match shared.broker.jobs_list(&who, &JobsQuery { limit: Some(RECENT_JOBS), schedule: None }).await {
        Ok(j) => j,
        Err(e) => return problem(&e),
    };
    html! {
        @if jobs.is_empty() { p.muted { "No jobs yet." } }
        @else {
            div.scroll {
                table.jobs {
                    thead { tr { th { "Job" } th { "Command" } th { "Target" } th { "State" } th { "Created" } } }
                    tbody {
                        @for j in &jobs {
                            tr {
                                td { a href="#" hx-get={ "/ui/jobs/" (j.id) } hx-target="#job-detail" { (short(&j.id)) } }
                                td { (j.command) }
                                td { (j.selector) }
                                td { (j.state.as_str()) }
                                td { (j.created_at) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `GET /ui/jobs/{id}`: one job's results; it asks for itself again every second while the job
/// runs.
pub(crate) async fn job(State(shared): State<Arc<Shared>>, Browser(who): Browser, Path(id): Path<String>) -> Markup {
    match shared.broker.job_show(&who, &JobRef { id }).await {
        Ok(detail) => job_detail(&detail),
        Err(e) => problem(&e),
    }
}

fn job_detail(d: &JobDetail) -> Markup {
    let job = &d.job;
    let running = job.state == JobPhase::Running;
    let body = html! {
        h3 { "Job " code { (short(&job.id)) } " · " (job.command) " on " code { (job.selector) } }
        p.job-state data-state=(job.state.as_str()) {
            (job.state.as_str()) " · " (d.results.len()) " of " (job.targets) " answered"
            @for status in Status::ALL {
                @let n = d.results.iter().filter(|r| r.status == status).count();
                @if n > 0 { " · " span.(status.as_str()) { (n) " " (status.as_str()) } }
            }
        }
        div.scroll {
            table.results {
                thead { tr { th { "Device" } th { "Status" } th { "Time" } th { "Result" } } }
                tbody {
                    @for r in &d.results { (result_row(r)) }
                    @for device in &d.pending {
                        tr data-device=(device) { td { (device) } td.pending { "pending" } td {} td {} }
                    }
                }
            }
        }
    };
    if running {
        html! { div.job hx-get={ "/ui/jobs/" (job.id) } hx-trigger="every 1s" hx-swap="outerHTML" { (body) } }
    } else {
        html! { div.job data-ended="true" { (body) } }
    }
}

fn result_row(r: &TargetResult) -> Markup {
    let text = match (&r.result, &r.error) {
        (Some(result), _) => result.get().to_owned(),
        (None, Some(e)) => format!("{}: {}", e.code.as_str(), e.message),
        (None, None) => String::new(),
    };
    html! {
        tr data-device=(r.device) data-status=(r.status.as_str()) {
            td { (r.device) }
            td.(r.status.as_str()) { (r.status.as_str()) }
            td { @if let Some(ms) = r.elapsed_ms { (ms) " ms" } }
            td { code { (excerpt(&text, RESULT_CHARS)) } }
        }
    }
}

/// The send form.
#[derive(Debug, Deserialize)]
pub(crate) struct SendForm {
    target: String,
    command: String,
    #[serde(default)]
    args: String,
    #[serde(default)]
    wait: String,
}

/// `POST /ui/send`: submits the job and answers its (self-refreshing) results.
pub(crate) async fn send(
    State(shared): State<Arc<Shared>>,
    Browser(who): Browser,
    headers: HeaderMap,
    Form(form): Form<SendForm>,
) -> Markup {
    if !same_origin(&headers) {
        return problem(&ErrorBody::new(ErrorCode::Forbidden, "a send must come from the dashboard's own page"));
    }
    let spec = match job_spec(form) {
        Ok(spec) => spec,
        Err(e) => return problem(&e),
    };
    let handle = match shared.broker.submit(&who, spec) {
        Ok(h) => h,
        Err(e) => return problem(&e),
    };
    match shared.broker.job_show(&who, &JobRef { id: handle.accepted.job.clone() }).await {
        Ok(detail) => job_detail(&detail),
        Err(e) => problem(&e),
    }
}

fn job_spec(form: SendForm) -> Result<JobSpec, ErrorBody> {
    let bad = |msg: String| ErrorBody::new(ErrorCode::BadRequest, msg);
    let args = match form.args.trim() {
        "" => None,
        text => {
            serde_json::from_str::<&serde_json::value::RawValue>(text)
                .map_err(|e| bad(format!("the arguments are not JSON: {e}")))?;
            Some(Bytes::copy_from_slice(text.as_bytes()))
        }
    };
    let deadline = match form.wait.trim() {
        "" => DEFAULT_WAIT,
        text => humantime::parse_duration(text)
            .map_err(|e| bad(format!("the deadline \"{}\" is not a duration like 10s: {e}", excerpt(text, 40))))?,
    };
    if deadline.is_zero() || deadline > MAX_WAIT {
        return Err(bad(format!("the deadline must be between 1ms and {}", humantime::format_duration(MAX_WAIT))));
    }
    Ok(JobSpec {
        command: form.command.trim().to_owned(),
        target: form.target.trim().to_owned(),
        args,
        deadline: Some(deadline),
        select: Select::default(),
        ttl: None,
        firing: None,
        rollout: Rollout::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(args: &str, wait: &str) -> SendForm {
        SendForm { target: " web-* ".into(), command: "ping".into(), args: args.into(), wait: wait.into() }
    }

    #[test]
    fn the_form_becomes_a_job_or_says_what_is_wrong() {
        let spec = job_spec(form("", "")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((spec.target.as_str(), spec.deadline, spec.args), ("web-*", Some(DEFAULT_WAIT), None));
        let spec = job_spec(form("{\"n\": 1}", "2s")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(spec.args.as_deref(), Some(&b"{\"n\": 1}"[..]));
        assert_eq!(spec.deadline, Some(Duration::from_secs(2)));
        for (args, wait) in [("{n}", ""), ("", "soon"), ("", "0s"), ("", "2h")] {
            let e = job_spec(form(args, wait)).err().unwrap_or_else(|| panic!("{args} {wait} was taken"));
            assert_eq!(e.code, ErrorCode::BadRequest);
        }
    }
}

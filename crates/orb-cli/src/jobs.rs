//! `orb jobs`: the job history. The list of recent jobs (table, or one JSON array of job
//! records), `show` (a job's header and every target's result, rendered like `orb send`; JSON:
//! one object), `cancel` (pending targets become `cancelled`). Ids may be unique prefixes: the
//! server resolves them (`ambiguous_id`, `job_not_found`: exit 1 with its message).

use std::time::Duration;

use comfy_table::{Cell, ContentArrangement, Table, presets};
use orb_client::Client;
use orb_proto::Status;
use orb_proto::history::{JobCancelled, JobDetail, JobInfo, JobRef, JobsQuery};
use orb_proto::message::{JobSummary, commands};

use crate::cli::{JobsArgs, JobsCommand};
use crate::connect;
use crate::exit::{self, Failure};
use crate::render;

/// How long the server gets to answer.
const ANSWER: Duration = Duration::from_secs(15);

/// Runs `orb jobs [SUB-COMMAND]`.
pub async fn run(args: JobsArgs) -> Result<u8, Failure> {
    let client = connect::operator(&args.connect).await?;
    let outcome = match &args.action {
        None => list(&client, &args).await,
        Some(JobsCommand::Show { id }) => show(&client, args.json, id).await,
        Some(JobsCommand::Cancel { id }) => cancel(&client, args.json, id).await,
    };
    client.close().await;
    outcome
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, Failure> {
    serde_json::to_string(v).map_err(|e| Failure::new(exit::FAILED, e.to_string()))
}

async fn list(client: &Client, args: &JobsArgs) -> Result<u8, Failure> {
    let jobs: Vec<JobInfo> = client.call_json(commands::JOBS_LIST, &JobsQuery { limit: args.limit }, ANSWER).await?;
    if args.json {
        outln!("{}", json(&jobs)?);
    } else if jobs.is_empty() {
        eprintln!("no jobs recorded");
    } else {
        outln!("{}", jobs_table(&jobs, render::color_enabled()));
        outln!("{} job(s)", jobs.len());
    }
    Ok(exit::OK)
}

/// Targets that ended in anything but `ok`.
fn failed(j: &JobInfo) -> u64 {
    j.summary.iter().filter(|(s, _)| **s != Status::Ok).map(|(_, n)| n).sum()
}

/// `2026-01-02T10:11:12.345Z` as `2026-01-02 10:11:12` (UTC), for narrow tables.
fn short_time(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| t.to_owned())
}

/// How many leading characters name each of `ids` unambiguously among them: at least 8. Job ids
/// are UUID v7, whose first 8 characters are a timestamp changing about once a minute, so jobs
/// sent close together need more (ids are accepted as prefixes).
fn prefix_len(ids: &[&str]) -> usize {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let common = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    sorted.windows(2).map(|w| common(w[0], w[1]) + 1).max().unwrap_or(0).max(8)
}

fn short_id(id: &str, len: usize) -> &str {
    id.get(..len).unwrap_or(id)
}

/// The job list: short id, created (UTC), command, selector, state, targets, ok / failed counts.
fn jobs_table(jobs: &[JobInfo], color: bool) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Dynamic);
    if !color {
        t.force_no_tty();
    }
    t.set_header(vec!["ID", "CREATED (UTC)", "COMMAND", "SELECTOR", "STATE", "TARGETS", "OK", "FAILED"]);
    let len = prefix_len(&jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>());
    for j in jobs {
        t.add_row(vec![
            Cell::new(short_id(&j.id, len)),
            Cell::new(short_time(&j.created_at)),
            Cell::new(&j.command),
            Cell::new(&j.selector),
            Cell::new(j.state.as_str()),
            Cell::new(j.targets),
            Cell::new(j.summary.get(&Status::Ok).copied().unwrap_or(0)),
            Cell::new(failed(j)),
        ]);
    }
    t
}

async fn show(client: &Client, as_json: bool, id: &str) -> Result<u8, Failure> {
    let mut d: JobDetail = client.call_json(commands::JOBS_SHOW, &JobRef { id: id.to_owned() }, ANSWER).await?;
    d.results.sort_by(|a, b| render::natural_cmp(&a.device, &b.device));
    if as_json {
        outln!("{}", json(&d)?);
        return Ok(exit::OK);
    }
    let j = &d.job;
    outln!("job {}", j.id);
    match &j.args {
        Some(a) => outln!("  command    {} {}", j.command, a.get()),
        None => outln!("  command    {}", j.command),
    }
    outln!("  selector   {}", j.selector);
    outln!("  requester  {}", j.requester);
    outln!("  created    {}", j.created_at);
    outln!("  deadline   {}", j.deadline_at);
    outln!("  finished   {}", j.finished_at.as_deref().unwrap_or("-"));
    outln!("  state      {}", j.state.as_str());
    outln!();
    if !d.results.is_empty() {
        let summary = JobSummary { job: j.id.clone(), summary: j.summary.clone(), skipped: j.skipped };
        crate::send::print_human(&d.results, &summary);
        let late: Vec<_> = d.results.iter().filter_map(|r| r.late.as_ref().map(|l| (&r.device, l))).collect();
        if !late.is_empty() {
            outln!();
            outln!("{} answer(s) arrived after the deadline (the requester was told timeout):", late.len());
            for (device, l) in late {
                let what = match (&l.result, &l.error) {
                    (Some(r), _) => r.get().to_owned(),
                    (None, Some(e)) => format!("{}: {}", e.code, e.message),
                    (None, None) => "null".to_owned(),
                };
                outln!("  {device}  {}  at {}  {what}", l.status, l.at);
            }
        }
    }
    if !d.pending.is_empty() {
        outln!("{} target(s) pending: {}", d.pending.len(), d.pending.join(", "));
    }
    Ok(exit::OK)
}

async fn cancel(client: &Client, as_json: bool, id: &str) -> Result<u8, Failure> {
    let c: JobCancelled = client.call_json(commands::JOBS_CANCEL, &JobRef { id: id.to_owned() }, ANSWER).await?;
    print_cancelled(&c, as_json);
    Ok(exit::OK)
}

/// Prints which targets a cancel stopped (`--json`: the server's object).
pub fn print_cancelled(c: &JobCancelled, as_json: bool) {
    if as_json {
        outln!("{}", serde_json::to_string(c).unwrap_or_default());
    } else if c.cancelled.is_empty() {
        outln!("job {} cancelled; no target was still pending", c.job);
    } else {
        outln!("job {} cancelled: {} target(s) cancelled: {}", c.job, c.cancelled.len(), c.cancelled.join(", "));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_short_ids_and_ok_and_failed_counts() {
        let j: JobInfo = serde_json::from_value(serde_json::json!({
            "id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "requester": "op-1", "selector": "*",
            "command": "ping", "args": null, "created_at": "2026-01-02T10:11:12.345Z",
            "deadline_at": "2026-01-02T10:11:22.345Z", "finished_at": null, "state": "done", "targets": 4,
            "summary": {"ok": 2, "error": 1, "timeout": 1, "offline": 0, "queued": 0, "expired": 0,
                        "denied": 0, "cancelled": 0}
        }))
        .unwrap();
        assert_eq!(failed(&j), 2);
        let text = jobs_table(&[j], false).to_string();
        assert!(text.contains("0190a1b2 ") && !text.contains("0190a1b2-c3d4"), "{text}");
        assert!(text.contains("2026-01-02 10:11:12"), "{text}");
        assert_eq!(short_id("abc", 8), "abc");
        // Ids sharing their timestamp prefix get as many characters as it takes to tell them apart.
        let ids = ["01a200f6-af02-7036-a0dd-1", "01a200f6-af02-7036-a0dd-2", "01a200f7-0000"];
        assert_eq!(prefix_len(&ids), 25);
        assert_eq!(prefix_len(&["01a200f6-af02", "01a200f7-af02"]), 8);
        assert_eq!(prefix_len(&[]), 8);
    }
}

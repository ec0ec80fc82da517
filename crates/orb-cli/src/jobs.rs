//! `orb jobs`: the job history. The list of recent jobs (short ids unique among all jobs), `show`
//! (a job's header and every target's result, rendered like `orb send`), `wait` / `show --follow`
//! (the rest of a running job as it comes, with `orb send`'s exit code), `cancel` (pending
//! targets become `cancelled`); every answer in the `-o` formats. Ids may be unique prefixes:
//! the server resolves them (`ambiguous_id` lists the candidates; exit 1 with its message).

use std::time::Duration;

use std::collections::HashMap;

use orb_client::Client;
use orb_proto::Status;
use orb_proto::history::{JobCancelled, JobDetail, JobInfo, JobPhase, JobRef, JobsQuery};
use orb_proto::message::{JobSummary, commands};

use crate::cli::{JobsArgs, JobsCommand};
use crate::connect;
use crate::exit::{self, Failure};
use crate::output::{self, Format, OutputArgs};
use crate::render;
use crate::results::{self, ResultPrinter};

/// How long the server gets to answer.
const ANSWER: Duration = Duration::from_secs(15);
/// Jobs listed without `--limit` (the server's default too).
const DEFAULT_LIMIT: u32 = 50;
/// The most jobs the server lists at once.
const MAX_LIMIT: u32 = 1000;
/// How soon `orb jobs wait` asks again for a running job's new results after some came. Results
/// are recorded in batches at least every 250 ms, so asking more often would find nothing new.
const FOLLOW_FIRST: Duration = Duration::from_millis(250);
/// The longest pause between two asks while nothing changes (each ask reads the whole job).
const FOLLOW_MAX: Duration = Duration::from_secs(2);
/// How long after a job's deadline `orb jobs wait` still waits for it to end.
const FOLLOW_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Runs `orb jobs [SUB-COMMAND]`.
pub async fn run(args: JobsArgs) -> Result<u8, Failure> {
    let client = connect::operator(&args.connect).await?;
    let out = &args.output;
    let outcome = match &args.action {
        None => list(&client, &args).await,
        Some(JobsCommand::Show { id, follow: false }) => show(&client, out, id).await,
        Some(JobsCommand::Show { id, follow: true } | JobsCommand::Wait { id }) => wait(&client, out, id).await,
        Some(JobsCommand::Cancel { id }) => cancel(&client, out.format(), id).await,
    };
    client.close().await;
    outcome
}

async fn list(client: &Client, args: &JobsArgs) -> Result<u8, Failure> {
    let limit = args.limit.unwrap_or(DEFAULT_LIMIT);
    // One job more than shown (`--limit` stops one below the server's maximum): the next older
    // one, so the short ids shown are unique among all jobs (ids are time-ordered, so only that
    // neighbour and the shown ones can share a prefix).
    // The server resolves a schedule's prefix among the stored schedules and those its jobs name
    // (a schedule removed, or a one-shot that fired, keeps its jobs): `schedule_not_found` for
    // none, `ambiguous_id` for several.
    let query = JobsQuery { limit: Some((limit + 1).min(MAX_LIMIT)), schedule: args.schedule.clone() };
    let mut jobs: Vec<JobInfo> = client.call_json(commands::JOBS_LIST, &query, ANSWER).await?;
    let len = prefix_len(&jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>());
    jobs.truncate(limit as usize);
    let format = args.output.format();
    match format {
        Format::Json | Format::Yaml => output::print_structured(&jobs, format)?,
        Format::Name => jobs.iter().for_each(|j| outln!("{}", j.id)),
        Format::Table | Format::Wide if jobs.is_empty() => eprintln!("no jobs recorded"),
        Format::Table | Format::Wide => {
            let len = if format == Format::Wide { usize::MAX } else { len };
            outln!("{}", jobs_table(&jobs, len, format == Format::Wide, !args.output.no_headers));
        }
    }
    Ok(exit::OK)
}

/// Targets that ended in anything but `ok`.
fn failed(j: &JobInfo) -> u64 {
    j.summary.iter().filter(|(s, _)| **s != Status::Ok).map(|(_, n)| n).sum()
}

/// How many leading characters name each of `ids` unambiguously among them: at least 8. Job and
/// schedule ids are UUID v7, whose first 8 characters are a timestamp changing about once a
/// minute, so ids made close together need more (ids are accepted as prefixes).
pub(crate) fn prefix_len(ids: &[&str]) -> usize {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let common = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    sorted.windows(2).map(|w| common(w[0], w[1]) + 1).max().unwrap_or(0).max(8)
}

pub(crate) fn short_id(id: &str, len: usize) -> &str {
    id.get(..len).unwrap_or(id)
}

/// The job list: short id (or the full one), age, state, targets, ok / failed counts, command,
/// selector last (it may hold spaces); `wide` adds creation and end times and the requester.
fn jobs_table(jobs: &[JobInfo], id_len: usize, wide: bool, headers: bool) -> String {
    let now = chrono::Utc::now();
    let mut header = vec!["ID", "AGE", "STATE", "TARGETS", "OK", "FAILED"];
    if wide {
        header.extend(["CREATED", "FINISHED", "REQUESTER"]);
    }
    header.extend(["COMMAND", "SELECTOR"]);
    let rows = jobs
        .iter()
        .map(|j| {
            let mut row = vec![
                short_id(&j.id, id_len).to_owned(),
                render::age(&j.created_at, now),
                j.state.as_str().to_owned(),
                j.targets.to_string(),
                j.summary.get(&Status::Ok).copied().unwrap_or(0).to_string(),
                failed(j).to_string(),
            ];
            if wide {
                row.extend([
                    j.created_at.clone(),
                    j.finished_at.clone().unwrap_or_else(|| "-".into()),
                    j.requester.clone(),
                ]);
            }
            row.extend([j.command.clone(), j.selector.clone()]);
            row
        })
        .collect();
    render::table(&header, rows, headers, |row, col| match (col, row[5].as_str()) {
        (5, "0") => None,
        (5, _) => Some(comfy_table::Color::Red),
        _ => None,
    })
}

async fn fetch(client: &Client, id: &str) -> Result<JobDetail, Failure> {
    let mut d: JobDetail = client.call_json(commands::JOBS_SHOW, &JobRef { id: id.to_owned() }, ANSWER).await?;
    d.results.sort_by(|a, b| render::natural_cmp(&a.device, &b.device));
    Ok(d)
}

async fn show(client: &Client, out: &OutputArgs, id: &str) -> Result<u8, Failure> {
    let d = fetch(client, id).await?;
    let format = out.format();
    match format {
        Format::Json | Format::Yaml => {
            output::print_structured(&d, format)?;
            return Ok(exit::OK);
        }
        Format::Name => {
            outln!("{}", d.job.id);
            return Ok(exit::OK);
        }
        Format::Table | Format::Wide => {}
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
    if let Some(r) = &j.rollout {
        outln!("  rollout    {}", crate::rollout::describe(r));
    }
    outln!();
    if !d.results.is_empty() {
        let mut printer = ResultPrinter::new(format, !out.no_headers, &targets(&d));
        for r in &d.results {
            printer.result(r)?;
        }
        let summary = JobSummary { job: j.id.clone(), summary: j.summary.clone(), skipped: j.skipped, aborted: None };
        printer.finish(&d.results, &summary)?;
        print_late(&d);
    }
    if !d.pending.is_empty() {
        outln!("{} target(s) pending: {}", d.pending.len(), d.pending.join(", "));
    }
    Ok(exit::OK)
}

/// Answers that came after the deadline (the requester was told `timeout`).
fn print_late(d: &JobDetail) {
    let late: Vec<_> = d.results.iter().filter_map(|r| r.late.as_ref().map(|l| (&r.device, l))).collect();
    if late.is_empty() {
        return;
    }
    outln!();
    outln!("{} answer(s) arrived after the deadline (the requester was told timeout):", late.len());
    for (device, l) in late {
        let what = match (&l.result, &l.error) {
            (Some(r), _) => r.get().to_owned(),
            (None, Some(e)) => crate::results::error_text(e),
            (None, None) => "null".to_owned(),
        };
        outln!("  {device}  {}  at {}  {what}", l.status, l.at);
    }
}

fn targets(d: &JobDetail) -> Vec<String> {
    d.results.iter().map(|r| r.device.clone()).chain(d.pending.iter().cloned()).collect()
}

/// `orb jobs wait ID` / `orb jobs show ID --follow`: the results known now, then the others as
/// the store records them (asked for again after [`FOLLOW_FIRST`], backing off to
/// [`FOLLOW_MAX`] while nothing changes), then the summary; `orb send`'s exit code. Ends when
/// the job does, or [`FOLLOW_GRACE`] after its deadline (a job whose server died stays
/// `running` in a shared store): then exit 1, naming the targets still pending.
async fn wait(client: &Client, out: &OutputArgs, id: &str) -> Result<u8, Failure> {
    let mut d = fetch(client, id).await?;
    let format = out.format();
    let mut printer = ResultPrinter::new(format, !out.no_headers, &targets(&d));
    let deadline = chrono::DateTime::parse_from_rfc3339(&d.job.deadline_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    let left = || (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
    let give_up = deadline + FOLLOW_GRACE;
    printer.show_progress(d.results.len() + d.pending.len(), &d.job.id, left());
    // What each device was shown with: a held command's target is shown again when it settles.
    let mut shown: HashMap<String, Status> = HashMap::new();
    let mut pause = FOLLOW_FIRST;
    loop {
        let mut changed = false;
        for r in &d.results {
            if shown.get(&r.device) != Some(&r.status) {
                printer.result(r)?;
                shown.insert(r.device.clone(), r.status);
                changed = true;
            }
        }
        if d.job.state != JobPhase::Running {
            break;
        }
        // Commands held for devices (`--ttl`) keep a job running past its deadline, until they
        // are delivered or expire (the server bounds their TTL).
        let held = d.results.iter().any(|r| r.status == Status::Queued);
        if !held && chrono::Utc::now() > give_up {
            printer.clear_progress();
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "job {} is still running {}s after its deadline ({} target(s) pending: {}); its server may be gone: orb jobs show {}",
                    d.job.id,
                    FOLLOW_GRACE.num_seconds(),
                    d.pending.len(),
                    render_list(&d.pending),
                    d.job.id
                ),
            ));
        }
        printer.set_time_left(left());
        pause = if changed { FOLLOW_FIRST } else { (pause * 2).min(FOLLOW_MAX) };
        tokio::time::sleep(pause).await;
        d = fetch(client, &d.job.id).await?;
    }
    let summary =
        JobSummary { job: d.job.id.clone(), summary: d.job.summary.clone(), skipped: d.job.skipped, aborted: None };
    printer.finish(&d.results, &summary)?;
    Ok(results::exit_code(&d.results))
}

/// The first few of `ids`, then how many more.
fn render_list(ids: &[String]) -> String {
    let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
    match ids.len().saturating_sub(shown.len()) {
        0 => shown.join(", "),
        more => format!("{}, and {more} more", shown.join(", ")),
    }
}

async fn cancel(client: &Client, format: Format, id: &str) -> Result<u8, Failure> {
    let c: JobCancelled = client.call_json(commands::JOBS_CANCEL, &JobRef { id: id.to_owned() }, ANSWER).await?;
    print_cancelled(&c, format);
    Ok(exit::OK)
}

/// Prints which targets a cancel stopped (`--json`: the server's object).
pub fn print_cancelled(c: &JobCancelled, format: Format) {
    if matches!(format, Format::Json | Format::Yaml) {
        if let Err(e) = output::print_structured(c, format) {
            eprintln!("error: {}", e.message);
        }
    } else if format == Format::Name {
        outln!("{}", c.job);
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
        // Not a terminal under test: plain columns.
        let text = jobs_table(std::slice::from_ref(&j), 8, false, true);
        assert!(text.starts_with("ID "), "{text}");
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[0], "0190a1b2");
        assert_eq!(row[2..], ["done", "4", "2", "2", "ping", "*"], "{text}");
        let wide = jobs_table(&[j], usize::MAX, true, false);
        assert!(wide.starts_with("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b ") && wide.contains("2026-01-02T10:11:12.345Z"));
        assert_eq!(short_id("abc", 8), "abc");
        // Ids sharing their timestamp prefix get as many characters as it takes to tell them apart.
        let ids = ["01a200f6-af02-7036-a0dd-1", "01a200f6-af02-7036-a0dd-2", "01a200f7-0000"];
        assert_eq!(prefix_len(&ids), 25);
        assert_eq!(prefix_len(&["01a200f6-af02", "01a200f7-af02"]), 8);
        assert_eq!(prefix_len(&[]), 8);
    }
}

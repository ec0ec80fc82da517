//! `orb send`: validate the selector and arguments, submit the job (or resolve it with
//! `--dry-run`), follow results with a progress bar, print a table and summary or JSON lines.
//! Ctrl-C while waiting detaches (the job keeps running on the server; its id is printed), a
//! second Ctrl-C within 3 s cancels it, and a third one stops waiting for the cancel's answer;
//! all exit 130.

use std::time::Duration;

use orb_client::{Client, ClientError, JobRequest, JobUpdate};
use orb_proto::history::{JobCancelled, JobRef};
use orb_proto::message::{JobSummary, ResolveQuery, Resolved, TargetResult, commands};
use orb_proto::{ErrorCode, Status};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::SendArgs;
use crate::connect;
use crate::exit::{self, Failure};
use crate::input;
use crate::render;

/// Runs `orb send`; the exit code is 0 only when every target answered ok.
pub async fn run(args: SendArgs) -> Result<u8, Failure> {
    crate::hints::check_selector("orb send", &args.target, Some(&args.command))?;
    let body = input::command_args(args.args.as_deref())?;
    let client = connect::operator(&args.connect).await?;

    if args.dry_run {
        let q = ResolveQuery { selector: args.target.clone() };
        let r: Resolved = client.call_json(commands::SELECTOR_RESOLVE, &q, args.wait).await?;
        client.close().await;
        return Ok(print_dry_run(&args, &r));
    }

    let request = JobRequest::new(&args.target, &args.command).args(body).deadline(args.wait);
    let mut job = match client.submit(request.select(crate::online::select(args.online))).await {
        Ok(job) => job,
        Err(ClientError::Remote(e)) if e.code == ErrorCode::NoMatch => {
            client.close().await;
            // With --online the server's message says how many matched devices are offline.
            let message = if args.online { e.message } else { format!("no device matches '{}'", args.target) };
            return Err(Failure::new(exit::FAILED, message));
        }
        Err(e) => return Err(e.into()),
    };
    // From here Ctrl-C detaches instead of killing the process.
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| Failure::new(exit::SOFTWARE, format!("signal handler: {e}")))?;
    tracing::debug!(job = job.id(), targets = job.accepted.targets.len(), "job accepted");
    let pb = (!args.json).then(|| render::progress(job.accepted.targets.len()));
    let mut results: Vec<TargetResult> = Vec::with_capacity(job.accepted.targets.len());
    let mut summary: Option<JobSummary> = None;
    loop {
        // `Job::next` is cancel-safe (a channel receive), so losing the race to a signal drops nothing.
        let update = tokio::select! {
            u = job.next() => u,
            _ = interrupt.recv() => {
                if let Some(pb) = pb {
                    pb.finish_and_clear();
                }
                let id = job.id().to_owned();
                drop(job);
                return Ok(detach(&client, &mut interrupt, &id, args.json).await);
            }
        };
        let Some(update) = update else { break };
        match update {
            JobUpdate::Result(r) => {
                if args.json {
                    outln!("{}", render::result_line(&r));
                }
                if let Some(pb) = &pb {
                    pb.inc(1);
                }
                results.push(r);
            }
            JobUpdate::Done(s) => summary = Some(s),
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let job_id = job.id().to_owned();
    drop(job);
    client.close().await;
    let Some(summary) = summary else {
        return Err(Failure::new(exit::FAILED, format!("connection lost before job {job_id} finished")));
    };
    results.sort_by(|a, b| render::natural_cmp(&a.device, &b.device));
    if args.json {
        outln!("{}", render::summary_line(&summary));
    } else {
        print_human(&results, &summary);
    }
    let all_ok = results.iter().all(|r| r.status == Status::Ok) && !results.is_empty();
    Ok(if all_ok { exit::OK } else { exit::FAILED })
}

/// After the first Ctrl-C: say how to follow the job, print its id (data, on stdout), and cancel
/// it if a second Ctrl-C comes within 3 s; a third Ctrl-C returns at once, without waiting for
/// the server's answer. Always exit 130 (interrupted).
async fn detach(client: &Client, interrupt: &mut Signal, id: &str, as_json: bool) -> u8 {
    eprintln!(
        "detached from job {id}; it keeps running (orb jobs show {id}). Press Ctrl-C again within 3 s to cancel it."
    );
    if as_json {
        // Written by hand to keep the documented key order (json! sorts keys).
        outln!("{{\"job\":{},\"detached\":true}}", serde_json::Value::String(id.to_owned()));
    } else {
        outln!("{id}");
    }
    if tokio::time::timeout(Duration::from_secs(3), interrupt.recv()).await.is_ok() {
        eprintln!("cancelling job {id}; press Ctrl-C again to stop waiting for the answer.");
        let job = JobRef { id: id.to_owned() };
        let cancel = client.call_json::<_, JobCancelled>(commands::JOBS_CANCEL, &job, Duration::from_secs(15));
        // Our handler replaced the default one for good: a third Ctrl-C must still end at once.
        let answer: Option<Result<JobCancelled, ClientError>> = tokio::select! {
            a = cancel => Some(a),
            _ = interrupt.recv() => None,
        };
        match answer {
            Some(Ok(c)) => crate::jobs::print_cancelled(&c, as_json),
            Some(Err(e)) => eprintln!("error: cannot cancel job {id}: {e}"),
            None => {
                eprintln!("interrupted: job {id} may not be cancelled (orb jobs show {id}; orb jobs cancel {id})");
                return exit::INTERRUPTED;
            }
        }
    }
    client.close().await;
    exit::INTERRUPTED
}

fn print_dry_run(args: &SendArgs, r: &Resolved) -> u8 {
    if args.json {
        outln!("{}", serde_json::to_string(&r.devices).unwrap_or_else(|_| "[]".into()));
    } else if r.devices.is_empty() {
        eprintln!("no device matches '{}'", args.target);
    } else {
        eprintln!("{} device(s) match '{}'; nothing was sent:", r.devices.len(), r.selector);
        for d in &r.devices {
            outln!("{d}");
        }
    }
    if r.devices.is_empty() { exit::FAILED } else { exit::OK }
}

/// Prints the table (all rows), then the grouped summary and the job id.
pub fn print_human(results: &[TargetResult], summary: &JobSummary) {
    let color = render::color_enabled();
    outln!("{}", render::results_table(results, color, 80));
    for line in render::grouped_summary(results, 60) {
        outln!("  {line}");
    }
    let counts: Vec<String> =
        summary.summary.iter().filter(|(_, n)| **n > 0).map(|(s, n)| format!("{n} {s}")).collect();
    outln!(
        "job {}: {} of {} targets answered ok ({}){}",
        summary.job,
        summary.summary.get(&Status::Ok).copied().unwrap_or(0),
        // The summary counts every target, also when the caller shows only some rows.
        summary.summary.values().sum::<u64>(),
        counts.join(", "),
        crate::online::skipped_note(summary.skipped)
    );
}

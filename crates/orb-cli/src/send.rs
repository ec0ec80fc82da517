//! `orb send`: validate the selector and arguments, submit the job (or resolve it with
//! `--dry-run`; with `--async` print its id and return), print each result as it arrives under
//! a progress line (job id, time left), then the grouped summary ([`crate::results`]).
//! Ctrl-C while waiting detaches (the job keeps running on the server; its id is printed), a
//! second Ctrl-C within 3 s cancels it, and a third one stops waiting for the cancel's answer;
//! all exit 130.

use std::collections::HashSet;
use std::time::Duration;

use orb_client::{Client, ClientError, JobRequest, JobUpdate};
use orb_proto::ErrorCode;
use orb_proto::history::{JobCancelled, JobRef};
use orb_proto::message::{
    DeviceInfo, DevicesQuery, JobAccepted, JobSummary, ResolveQuery, Resolved, TargetResult, commands,
};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use crate::cli::{ProgressMode, SendArgs};
use crate::connect;
use crate::exit::{self, Failure};
use crate::input;
use crate::output::{self, Format};
use crate::results::{self, ResultPrinter};

/// Runs `orb send`; the exit code is 0 only when every target answered ok.
pub async fn run(args: SendArgs) -> Result<u8, Failure> {
    crate::hints::check_selector("orb send", &args.target, Some(&args.command))?;
    let body = input::command_args(args.args.as_deref())?;
    let schedule = crate::schedule::send_spec(&args, chrono::Utc::now())?;
    let rollout = crate::rollout::from_args(&args.rollout)?;
    let client = connect::operator(&args.connect).await?;
    let format = args.output.format();

    if args.dry_run {
        let q = ResolveQuery { selector: args.target.clone() };
        let mut r: Resolved = client.call_json(commands::SELECTOR_RESOLVE, &q, args.wait).await?;
        if args.online || args.one {
            // The matching devices connected now: those `--online` would target (`--one`: one of them).
            let q = DevicesQuery { selector: Some(args.target.clone()), connected: true, schemas: false };
            let connected: Vec<DeviceInfo> = client.call_json(commands::DEVICES_LIST, &q, args.wait).await?;
            let connected: HashSet<String> = connected.into_iter().map(|d| d.id).collect();
            r.devices.retain(|d| connected.contains(d));
        }
        client.close().await;
        return print_dry_run(&args, &r, format);
    }

    if let Some(spec) = schedule {
        let done = crate::schedule::create(&client, &args, &body, spec, rollout).await;
        client.close().await;
        return done;
    }

    let progress = match args.progress {
        ProgressMode::On => true,
        ProgressMode::Off => false,
        ProgressMode::Auto => {
            matches!(format, Format::Table | Format::Wide) && std::io::IsTerminal::is_terminal(&std::io::stderr())
        }
    };
    let mut request =
        JobRequest::new(&args.target, &args.command).args(body).deadline(args.wait).rollout(rollout).progress(progress);
    if let Some(ttl) = args.ttl {
        request = request.ttl(ttl);
    }
    let mut job = match client.submit(request.select(crate::online::select(args.online, args.one))).await {
        Ok(job) => job,
        Err(ClientError::Remote(e)) if e.code == ErrorCode::NoMatch => {
            client.close().await;
            // With --online the server's message says how many matched devices are offline.
            let mut message =
                if args.online || args.one { e.message } else { format!("no device matches '{}'", args.target) };
            if let Some(hint) = crate::hints::expansion_hint("orb send", &args.target, Some(&args.command)) {
                message = format!("{message}; {hint}");
            }
            return Err(Failure::new(exit::FAILED, message));
        }
        Err(e) => return Err(e.into()),
    };
    if args.async_ {
        let accepted = job.accepted.clone();
        drop(job);
        client.close().await;
        return print_accepted(&accepted, format);
    }
    // From here Ctrl-C detaches instead of killing the process.
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| Failure::new(exit::SOFTWARE, format!("signal handler: {e}")))?;
    // Logged once Ctrl-C detaches (tests wait for this line before interrupting).
    tracing::debug!(job = job.id(), targets = job.accepted.targets.len(), "job accepted");
    // Each target's deadline runs from its dispatch: a splayed one's may be the window later, a
    // batched one's from its batch's start.
    let per_target = Duration::from_millis(job.accepted.deadline_ms) + rollout.splay();
    let mut deadline = Instant::now() + per_target;
    let mut printer = ResultPrinter::new(format, !args.output.no_headers, &job.accepted.targets);
    printer.show_progress(job.accepted.targets.len(), job.id(), deadline.saturating_duration_since(Instant::now()));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut results: Vec<TargetResult> = Vec::with_capacity(job.accepted.targets.len());
    let mut summary: Option<JobSummary> = None;
    loop {
        // `Job::next` is cancel-safe (a channel receive), so losing the race to a signal drops nothing.
        let update = tokio::select! {
            u = job.next() => u,
            _ = tick.tick() => {
                printer.set_time_left(deadline.saturating_duration_since(Instant::now()));
                continue;
            }
            _ = interrupt.recv() => {
                printer.clear_progress();
                let id = job.id().to_owned();
                drop(job);
                return Ok(detach(&client, &mut interrupt, &id, format).await);
            }
        };
        let Some(update) = update else { break };
        match update {
            JobUpdate::Result(r) => {
                printer.result(&r)?;
                results.push(r);
            }
            JobUpdate::Done(s) => summary = Some(s),
            JobUpdate::Batch(b) => {
                deadline = Instant::now() + per_target;
                printer.batch(&b);
            }
            JobUpdate::Progress { device, body } => printer.progress(&device, &body),
        }
    }
    let job_id = job.id().to_owned();
    drop(job);
    client.close().await;
    let Some(summary) = summary else {
        printer.clear_progress();
        return Err(Failure::new(exit::FAILED, format!("connection lost before job {job_id} finished")));
    };
    printer.finish(&results, &summary)?;
    Ok(results::exit_code(&results))
}

/// `orb send --async`: the accepted job (its id alone in the table formats).
fn print_accepted(accepted: &JobAccepted, format: Format) -> Result<u8, Failure> {
    match format {
        Format::Json | Format::Yaml => output::print_structured(accepted, format)?,
        Format::Table | Format::Wide | Format::Name => outln!("{}", accepted.job),
    }
    eprintln!(
        "job {id} accepted for {n} target(s); follow it with: orb jobs wait {id}",
        id = accepted.job,
        n = accepted.targets.len()
    );
    Ok(exit::OK)
}

/// After the first Ctrl-C: say how to follow the job, print its id (data, on stdout), and cancel
/// it if a second Ctrl-C comes within 3 s; a third Ctrl-C returns at once, without waiting for
/// the server's answer. Always exit 130 (interrupted).
async fn detach(client: &Client, interrupt: &mut Signal, id: &str, format: Format) -> u8 {
    eprintln!(
        "detached from job {id}; it keeps running (orb jobs show {id}). Press Ctrl-C again within 3 s to cancel it."
    );
    match format {
        // Written by hand to keep the documented key order (json! sorts keys).
        Format::Json => outln!("{{\"job\":{},\"detached\":true}}", serde_json::Value::String(id.to_owned())),
        Format::Yaml => outln!("---\njob: {id}\ndetached: true"),
        Format::Table | Format::Wide | Format::Name => outln!("{id}"),
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
            Some(Ok(c)) => crate::jobs::print_cancelled(&c, format),
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

fn print_dry_run(args: &SendArgs, r: &Resolved, format: Format) -> Result<u8, Failure> {
    match format {
        Format::Json | Format::Yaml => output::print_structured(&r.devices, format)?,
        _ if r.devices.is_empty() => eprintln!("no device matches '{}'", args.target),
        _ => {
            eprintln!("{} device(s) match '{}'; nothing was sent:", r.devices.len(), r.selector);
            for d in &r.devices {
                outln!("{d}");
            }
        }
    }
    Ok(if r.devices.is_empty() { exit::FAILED } else { exit::OK })
}

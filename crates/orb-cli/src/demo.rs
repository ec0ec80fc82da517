//! `orb demo`: an embedded server in a temporary data folder, N in-process agents with varied
//! tags, and three jobs (a broadcast `sys.info`, a tag-targeted `echo`, and a command no agent
//! handles, which the server refuses before sending) whose results are printed like `orb send`
//! prints them.

use std::time::Duration;

use bytes::Bytes;
use orb_client::{Client, ClientConfig, JobRequest, JobUpdate, ServerUrl};
use orb_proto::message::TargetResult;
use orb_server::{ServerBuilder, ServerConfig};

use crate::cli::DemoArgs;
use crate::exit::{self, Failure};
use crate::output::Format;
use crate::results::ResultPrinter;

const ROLES: [&str; 3] = ["web", "db", "cache"];
const REGIONS: [&str; 2] = ["eu", "us"];

fn fail(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(exit::FAILED, format!("demo: {what}: {e}"))
}

/// Runs the demo; exit 0 when every step behaved as expected.
pub async fn run(args: DemoArgs) -> Result<u8, Failure> {
    let data = tempfile::tempdir().map_err(|e| fail("temp folder", e))?;
    let mut cfg = ServerConfig::for_tests(data.path().to_path_buf());
    cfg.admin_token = None;
    cfg.agent_token = None;
    cfg.limits.outbound_queue = 4096;
    let server = ServerBuilder::new(cfg).start().await.map_err(|e| fail("server", e))?;
    let url = ServerUrl::parse(&format!("tcp://{}", server.tcp_addr())).map_err(|e| fail("url", e))?;
    outln!("embedded server on {} (data in {})", url, data.path().display());

    let n = args.agents as usize;
    let mut agents = Vec::with_capacity(n);
    // One collector for all of them: they run on this one machine.
    let metrics = crate::sysmetrics::SysMetrics::open();
    for i in 0..n {
        let role = ROLES[i % ROLES.len()];
        let mut c = ClientConfig::agent(
            url.clone(),
            Some(server.agent_token().expose().to_owned()),
            format!("{role}-{}", i + 1),
        );
        c.tags = [("role", role), ("region", REGIONS[i % REGIONS.len()])]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        c.agent = crate::agent::AGENT_NAME.to_owned();
        agents.push(
            Client::connect(c, crate::agent::builtin_handlers(metrics.clone())).await.map_err(|e| fail("agent", e))?,
        );
    }
    outln!("{n} agents connected (tags role=web|db|cache, region=eu|us)\n");

    let op = Client::connect(
        ClientConfig::operator(url, Some(server.admin_token().expose().to_owned())),
        orb_client::Handlers::new(),
    )
    .await
    .map_err(|e| fail("operator", e))?;

    let steps: [(&str, &str, &[u8], bool); 3] = [
        ("*", "sys.info", b"null", true),
        ("tag:role=web and tag:region=eu", "echo", br#"{"hello":"world"}"#, true),
        ("db-*", "reboot", b"null", false),
    ];
    for (target, cmd, body, expect_ok) in steps {
        let shown_args = match std::str::from_utf8(body) {
            Ok("null") | Err(_) => String::new(),
            Ok(s) => format!(" '{s}'"),
        };
        outln!("$ orb send '{target}' {cmd}{shown_args}");
        let request = JobRequest::new(target, cmd).args(Bytes::copy_from_slice(body)).deadline(Duration::from_secs(10));
        let mut job = match op.submit(request).await {
            Ok(job) => job,
            // Every agent declares its commands, so the server refuses one none of them has.
            Err(orb_client::ClientError::Remote(e)) if !expect_ok && e.code == orb_proto::ErrorCode::UnknownCommand => {
                outln!("error: {e}");
                outln!("  (this one fails on purpose: no agent declares a '{cmd}' handler, so nothing was sent)\n");
                continue;
            }
            Err(e) => return Err(fail("submit", e)),
        };
        let mut results: Vec<TargetResult> = Vec::new();
        let mut summary = None;
        while let Some(u) = job.next().await {
            match u {
                JobUpdate::Result(r) => results.push(r),
                JobUpdate::Done(s) => summary = Some(s),
                JobUpdate::Batch(_) | JobUpdate::Progress { .. } => {}
            }
        }
        let summary = summary.ok_or_else(|| fail("job", "ended without a summary"))?;
        results.sort_by(|a, b| crate::render::natural_cmp(&a.device, &b.device));
        let shown = if results.len() > 12 { &results[..12] } else { &results[..] };
        let targets: Vec<String> = shown.iter().map(|r| r.device.clone()).collect();
        let mut printer = ResultPrinter::new(Format::Table, true, &targets);
        for r in shown {
            printer.result(r)?;
        }
        if shown.len() < results.len() {
            outln!("(first {} of {} rows shown)", shown.len(), results.len());
        }
        printer.finish(&results, &summary)?;
        let all_ok = results.iter().all(|r| r.status == orb_proto::Status::Ok);
        if all_ok != expect_ok {
            return Err(fail("unexpected outcome", format!("{cmd} on '{target}'")));
        }
        outln!();
    }
    op.close().await;
    for a in &agents {
        a.close().await;
    }
    server.shutdown().await;
    outln!("demo finished: try `orb serve` and `orb agent --id web-1` next (see README.md)");
    Ok(exit::OK)
}

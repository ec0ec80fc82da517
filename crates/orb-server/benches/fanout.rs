//! End-to-end job fan-out over loopback TCP: one operator submits `ping` to `*`, the server
//! encodes the command once and queues it to every agent session, every in-process agent
//! (`orb_testkit::basic_handlers`) answers, and the operator reads one event per agent and the
//! final summary. One iteration = submit + ack + N results + summary.
//!
//! Server, agents and operator all run in this process, on one multi-thread tokio runtime owned
//! by the bench, so the numbers include both sides of every connection.
//!
//! Run: `cargo bench -p orb-server --bench fanout`

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use orb_client::{Client, JobRequest, JobUpdate};
use orb_proto::Status;
use orb_testkit::{TestServer, Transport, basic_handlers};
use tokio::runtime::Runtime;

/// Agents connecting at once while the bench sets up.
const CONNECT_CONCURRENCY: usize = 50;

/// A server with `n` connected agents and one operator; kept alive for the bench.
struct Fleet {
    server: TestServer,
    _agents: Vec<Client>,
    op: Client,
}

async fn fleet(n: usize) -> Fleet {
    let server = TestServer::start_with(|c| c.limits.outbound_queue = 4096, |b| b).await;
    let agents: Vec<Client> = futures_util::stream::iter(0..n)
        .map(|i| {
            let server = &server;
            async move { server.agent(Transport::Tcp, &format!("a-{i}"), &[], basic_handlers()).await }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    server.wait_for_agents(n as u64).await;
    let op = server.operator(Transport::Tcp).await;
    Fleet { server, _agents: agents, op }
}

/// Submits one `ping` job to every agent and drains it, checking every agent answered `ok`.
async fn one_job(op: &Client, n: usize) {
    let mut job = op
        .submit(JobRequest::new("*", "ping").args(Bytes::from_static(b"null")).deadline(Duration::from_secs(10)))
        .await
        .expect("job accepted");
    let mut results = 0usize;
    let mut ok = 0usize;
    let summary = loop {
        match job.next().await.expect("job stream ends with Done") {
            JobUpdate::Result(r) => {
                results += 1;
                ok += usize::from(r.status == Status::Ok);
            }
            JobUpdate::Done(summary) => break summary,
            JobUpdate::Batch(_) | JobUpdate::Progress { .. } => {}
        }
    };
    assert_eq!(results, n, "one result per agent");
    assert_eq!(ok, n, "every agent answered ok");
    assert_eq!(summary.summary.get(&Status::Ok).copied(), Some(n as u64), "summary counts every agent ok");
}

fn bench_fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let mut g = c.benchmark_group("fanout_ping");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(2));
    for (n, measure) in [(100usize, 5u64), (1_000, 12)] {
        let setup = std::time::Instant::now();
        let fleet = rt.block_on(fleet(n));
        eprintln!("fanout: {n} agents connected in {:.2?}", setup.elapsed());
        g.throughput(Throughput::Elements(n as u64));
        g.measurement_time(Duration::from_secs(measure));
        g.bench_function(format!("{n}_agents"), |b| b.iter(|| rt.block_on(one_job(&fleet.op, n))));
        shutdown(&rt, fleet);
    }
    g.finish();
}

fn shutdown(rt: &Runtime, fleet: Fleet) {
    let stopped = std::time::Instant::now();
    // Graceful: no job is in flight here, so this returns once every session said goodbye.
    let _ = rt.block_on(fleet.server.server.shutdown());
    eprintln!("fanout: server stopped in {:.2?}", stopped.elapsed());
    drop(fleet);
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);

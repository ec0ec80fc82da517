//! A graceful stop with thousands of agents connected: every requester receives its jobs' whole
//! event streams (the last `timeout` events and the summary) before the server says goodbye.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use orb_client::{Client, Context, Handlers, JobRequest, JobUpdate};
use orb_proto::Status;
use orb_testkit::{TestServer, Transport, within};

const AGENTS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_requester_gets_its_whole_job_stream_before_goodbye_with_thousands_of_agents() {
    // Two descriptors per agent in this process (both ends), and then some.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let server = TestServer::start().await;
    let hang = Handlers::new().on("hang", |_c: Context| std::future::pending());
    let mut agents: Vec<Client> = Vec::with_capacity(AGENTS);
    for chunk in (0..AGENTS).collect::<Vec<_>>().chunks(100) {
        let connects = chunk.iter().map(|i| {
            let cfg = server.agent_config(Transport::Tcp, &format!("d-{i:04}"));
            Client::connect(cfg, hang.clone())
        });
        for c in futures_util::future::join_all(connects).await {
            agents.push(c.expect("agent connects"));
        }
    }
    server.wait_for_agents(AGENTS as u64).await;
    let ops = [server.operator(Transport::Tcp).await, server.operator(Transport::Ws).await];
    let mut jobs = Vec::new();
    for op in &ops {
        jobs.push(
            op.submit(
                JobRequest::new("d-*", "hang").args(Bytes::from_static(b"null")).deadline(Duration::from_secs(3600)),
            )
            .await
            .unwrap(),
        );
    }
    let readers: Vec<_> = jobs
        .into_iter()
        .map(|mut job| {
            tokio::spawn(async move {
                let mut timeouts = 0;
                loop {
                    match within("the job's next event", job.next()).await {
                        Some(JobUpdate::Result(r)) => {
                            assert_eq!(r.status, Status::Timeout, "{r:?}");
                            timeouts += 1;
                        }
                        Some(JobUpdate::Done(summary)) => return (timeouts, summary),
                        Some(JobUpdate::Batch(b)) => panic!("not a batched job: {b:?}"),
                        Some(JobUpdate::Progress { device, .. }) => panic!("progress from {device}: not asked"),
                        None => panic!("the stream ended after {timeouts} events, without the summary"),
                    }
                }
            })
        })
        .collect();
    let graceful = within("the drain", server.server.drain(Duration::from_millis(200))).await;
    assert!(!graceful, "the jobs could not end within the grace period");
    for reader in readers {
        let (timeouts, summary) = within("the whole stream", reader).await.unwrap();
        assert_eq!(timeouts, AGENTS, "one event per target");
        assert_eq!(summary.summary[&Status::Timeout], AGENTS as u64);
    }
    for op in &ops {
        let reason = within("the goodbye", op.closed()).await;
        assert!(reason.contains("server_shutdown"), "{reason}");
    }
}

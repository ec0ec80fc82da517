//! `GET /metrics` and the message rates of `GET /v1/status` (issue 14) against a real server
//! with agents over loopback: after a job the exposition shows its frames, its targets' outcomes,
//! the latencies and the connections; every name starts with `orb_`; without the admin token the
//! answer is `401` unless `[http] metrics_public` (applied by a reload too); and the frames and
//! bytes counted each way are exactly those hand-framed clients sent and read.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use orb_client::JobRequest;
use orb_server::ServerConfig;
use orb_testkit::{RawTcp, TestServer, Transport, WAIT, basic_handlers, finish_job, hello_json, within};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The HTTP side of a test server.
struct Http {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Http {
    fn new(server: &TestServer) -> Http {
        Http {
            base: format!("http://{}", server.server.http_addr()),
            token: server.server.admin_token().expose().to_owned(),
            client: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        }
    }

    /// `GET /metrics` with `token` (none: no `Authorization` header): status, content type, body.
    async fn metrics_with(&self, token: Option<&str>) -> (StatusCode, String, String) {
        let mut req = self.client.get(format!("{}/metrics", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let kind = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (status, kind, resp.text().await.unwrap())
    }

    /// The metrics, with the admin token, as series → value.
    async fn scrape(&self) -> Series {
        let (status, kind, text) = self.metrics_with(Some(&self.token)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        Series::parse(&text)
    }

    async fn status(&self) -> Value {
        let resp = self.client.get(format!("{}/v1/status", self.base)).bearer_auth(&self.token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }
}

/// A scrape: each sample line's series (name and labels, as written) and value.
#[derive(Debug)]
struct Series(BTreeMap<String, f64>);

impl Series {
    fn parse(text: &str) -> Series {
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let name_of = |s: &str| s.split(['{', ' ']).next().unwrap().to_owned();
            if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
                assert!(name_of(rest).starts_with("orb_"), "{line}");
                continue;
            }
            assert!(!line.starts_with('#'), "an unexpected comment: {line}");
            assert!(name_of(line).starts_with("orb_"), "every metric is named orb_*: {line}");
            let (series, value) = line.rsplit_once(' ').unwrap();
            out.insert(series.to_owned(), value.parse().unwrap_or_else(|_| panic!("{line}")));
        }
        Series(out)
    }

    /// The value of `series` (0 when it is absent, which the assertions then name).
    fn get(&self, series: &str) -> f64 {
        *self.0.get(series).unwrap_or_else(|| panic!("{series} is not exposed: {:#?}", self.0))
    }

    /// The sum over every label set of metric `name`.
    fn sum(&self, name: &str) -> f64 {
        let prefix = format!("{name}{{");
        self.0.iter().filter(|(k, _)| k.starts_with(&prefix) || k.as_str() == name).map(|(_, v)| v).sum()
    }
}

/// Scrapes until `done` holds (the counter it waits for is updated by another task); bounded.
async fn scrape_until(http: &Http, what: &str, done: impl Fn(&Series) -> bool) -> Series {
    for _ in 0..200 {
        let s = http.scrape().await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the metrics never showed {what}: {:#?}", http.scrape().await);
}

#[tokio::test]
async fn after_a_job_the_metrics_show_its_frames_outcomes_latencies_and_connections() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let tcp_agent = server.agent(Transport::Tcp, "m-1", &[], basic_handlers()).await;
    let _ws_agent = server.agent(Transport::Ws, "m-2", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    // Each session is counted once its handshake is over, just after its welcome went out.
    let connected = |s: &Series| {
        s.get(r#"orb_connections{transport="tcp",role="agent"}"#) == 1.0
            && s.get(r#"orb_connections{transport="ws",role="agent"}"#) == 1.0
            && s.get(r#"orb_connections{transport="tcp",role="operator"}"#) == 1.0
    };
    scrape_until(&http, "three sessions", connected).await;

    let job = JobRequest::new("*", "echo").args(Bytes::from_static(br#"{"n":1}"#)).deadline(WAIT);
    let job = within("the submit", op.submit(job)).await.unwrap();
    let done = finish_job(job).await;
    assert_eq!(done.count(orb_proto::Status::Ok), 2, "{done:?}");

    // The requester has read the job's last frame: everything the job did is counted by now.
    let s = http.scrape().await;
    assert!(connected(&s), "{s:#?}");
    assert_eq!(s.get(r#"orb_connections{transport="ws",role="operator"}"#), 0.0);
    assert_eq!(s.get(r#"orb_frames_received_total{kind="hello"}"#), 3.0);
    assert_eq!(s.get(r#"orb_frames_sent_total{kind="welcome"}"#), 3.0);
    assert_eq!(s.get(r#"orb_frames_sent_total{kind="cmd"}"#), 2.0, "one command per target");
    assert_eq!(s.get(r#"orb_frames_received_total{kind="reply"}"#), 2.0, "one answer per target");
    assert_eq!(s.get(r#"orb_frames_sent_total{kind="ack"}"#), 1.0);
    assert_eq!(s.get(r#"orb_frames_sent_total{kind="event"}"#), 2.0);
    assert!(s.get(r#"orb_frames_sent_total{kind="reply"}"#) >= 1.0, "the summary");
    assert!(s.get("orb_received_bytes_total") > 0.0 && s.get("orb_sent_bytes_total") > 0.0);
    assert_eq!(s.get("orb_jobs_started_total"), 1.0);
    assert_eq!(s.get(r#"orb_job_targets_total{status="ok"}"#), 2.0);
    assert_eq!(s.sum("orb_job_targets_total"), 2.0, "nothing else settled");
    assert_eq!(s.get("orb_command_duration_seconds_count"), 2.0, "both answers timed");
    assert_eq!(s.get(r#"orb_command_duration_seconds_bucket{le="+Inf"}"#), 2.0);
    assert_eq!(s.get("orb_devices_known"), 2.0);
    assert_eq!(s.get("orb_jobs_in_flight"), 0.0);
    assert_eq!(s.get(r#"orb_held_commands{state="waiting"}"#), 0.0);
    assert_eq!(s.get("orb_draining"), 0.0);

    // A plain request to one device is timed apart.
    let answer = within("a request", op.request("m-1", "echo", Bytes::from_static(b"7"), WAIT)).await.unwrap();
    assert_eq!(&answer[..], b"7");
    let s = http.scrape().await;
    assert_eq!(s.get("orb_request_duration_seconds_count"), 1.0);
    assert_eq!(s.get(r#"orb_frames_sent_total{kind="cmd"}"#), 3.0);

    // An agent leaves: its connection is no longer counted, its session's end is.
    tcp_agent.close().await;
    let s = scrape_until(&http, "the agent's close", |s| {
        s.get(r#"orb_sessions_closed_total{reason="peer_closed"}"#) == 1.0
    })
    .await;
    assert_eq!(s.get(r#"orb_connections{transport="tcp",role="agent"}"#), 0.0);
    assert_eq!(s.get(r#"orb_connections{transport="ws",role="agent"}"#), 1.0);
}

#[tokio::test]
async fn metrics_need_the_admin_token_unless_configured_public() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for token in [None, Some("wrong")] {
        let (status, _, body) = http.metrics_with(token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "auth_failed", "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    // A valid token that is not the admin's, as on the REST API.
    let agent_token = server.server.agent_token().expose().to_owned();
    let (status, _, body) = http.metrics_with(Some(&agent_token)).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(http.metrics_with(Some(&http.token)).await.0, StatusCode::OK);

    // `[http] metrics_public`, applied by a reload (SIGHUP), and taken back the same way.
    let with = |public: bool| {
        let mut cfg = ServerConfig::for_tests(server.data.path().to_path_buf());
        cfg.http_options.metrics_public = public;
        cfg
    };
    assert!(server.server.reload(with(true)).unwrap().restart_required.is_empty());
    let (status, _, text) = http.metrics_with(None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("orb_frames_received_total"), "{text}");
    let resp = http.client.get(format!("{}/v1/status", http.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "only the metrics are public");
    server.server.reload(with(false)).unwrap();
    assert_eq!(http.metrics_with(None).await.0, StatusCode::UNAUTHORIZED);

    // Configured public from the start.
    let public = TestServer::start_with(|c| c.http_options.metrics_public = true, |b| b).await;
    assert_eq!(Http::new(&public).metrics_with(None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn status_reports_message_rates_by_kind() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let before = http.status().await;
    let rates = &before["rates"];
    assert!(rates["window_s"].as_f64().is_some_and(|w| (0.0..=11.0).contains(&w)), "{rates}");
    for dir in ["received", "sent"] {
        let by_kind = rates[dir].as_object().unwrap_or_else(|| panic!("{rates}"));
        for kind in ["hello", "cmd", "reply", "event", "pub", "ping", "pong", "error", "bye", "unknown"] {
            assert!(by_kind[kind].is_f64(), "{dir}.{kind} missing from {rates}");
        }
        assert!(by_kind.values().all(|v| v.as_f64() == Some(0.0)), "nothing happened yet: {rates}");
    }

    let _agent = server.agent(Transport::Tcp, "r-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let job = within("the submit", op.submit(JobRequest::new("r-1", "ping").deadline(WAIT))).await.unwrap();
    finish_job(job).await;
    let rates = http.status().await["rates"].clone();
    assert!(rates["window_s"].as_f64().unwrap() > 0.0, "{rates}");
    for (dir, kind) in [("received", "hello"), ("received", "reply"), ("sent", "welcome"), ("sent", "cmd")] {
        assert!(rates[dir][kind].as_f64().unwrap() > 0.0, "{dir}.{kind} in {rates}");
    }
    assert_eq!(rates["received"]["sub"], 0.0, "{rates}");
}

/// A hand-framed client that counts what it writes and reads.
struct Counted {
    raw: RawTcp,
    sent: (u64, u64),
    read: (u64, u64),
}

impl Counted {
    /// Connects and says `hello`; the `welcome` is read (and counted).
    async fn connect(server: &TestServer, hello: Value) -> Counted {
        let mut c = Counted { raw: server.raw_tcp().await, sent: (0, 0), read: (0, 0) };
        c.send(hello).await;
        let welcome = c.read().await.unwrap();
        assert_eq!(welcome["kind"], "welcome", "{welcome}");
        c
    }

    async fn send(&mut self, v: Value) {
        let bytes = v.to_string();
        self.raw.send_frame(bytes.as_bytes()).await.unwrap();
        self.sent = (self.sent.0 + 1, self.sent.1 + bytes.len() as u64);
    }

    /// The next frame; `None` once the server closed the connection.
    async fn read(&mut self) -> Option<Value> {
        let frame = self.raw.read_frame().await.ok()??;
        self.read = (self.read.0 + 1, self.read.1 + frame.len() as u64);
        Some(serde_json::from_slice(&frame).unwrap())
    }

    /// Says `bye` and reads until the server has closed the connection.
    async fn leave(&mut self) {
        self.send(json!({"kind": "bye"})).await;
        if let Some(f) = self.read().await {
            panic!("nothing is sent after a client's bye: {f}");
        }
    }
}

#[tokio::test]
async fn frames_and_bytes_counted_are_those_the_clients_sent_and_read() {
    // No server pings during the test: only the frames the script makes.
    let server = TestServer::start_with(
        |c| {
            c.limits.heartbeat = Duration::from_secs(600);
            c.limits.heartbeat_timeout = Duration::from_secs(1800);
        },
        |b| b,
    )
    .await;
    let http = Http::new(&server);
    let mut agent =
        Counted::connect(&server, hello_json("agent", server.server.agent_token().expose(), Some("c-1"))).await;
    let mut op = Counted::connect(&server, hello_json("operator", server.server.admin_token().expose(), None)).await;

    // ping → pong; an unknown kind → error; sub → reply; pub → pub (to itself) and reply.
    op.send(json!({"kind": "ping", "id": "p"})).await;
    assert_eq!(op.read().await.unwrap()["kind"], "pong");
    op.send(json!({"kind": "teleport", "id": "t"})).await;
    assert_eq!(op.read().await.unwrap()["kind"], "error");
    op.send(json!({"kind": "sub", "id": "s", "topic": "metrics.>"})).await;
    assert_eq!(op.read().await.unwrap()["re"], "s");
    op.send(json!({"kind": "pub", "id": "u", "topic": "metrics.x", "body": 1})).await;
    assert_eq!(op.read().await.unwrap()["kind"], "pub");
    assert_eq!(op.read().await.unwrap()["re"], "u");

    // A job: ack, cmd to the agent, its reply, the event and the summary.
    op.send(json!({"kind": "cmd", "id": "j1", "cmd": "echo", "target": "c-1", "body": {"a": 1}})).await;
    assert_eq!(op.read().await.unwrap()["kind"], "ack");
    let cmd = agent.read().await.unwrap();
    assert_eq!(cmd["kind"], "cmd", "{cmd}");
    agent.send(json!({"kind": "reply", "re": cmd["id"], "body": {"a": 1}})).await;
    assert_eq!(op.read().await.unwrap()["kind"], "event");
    assert_eq!(op.read().await.unwrap()["kind"], "reply");

    // A plain request to the agent, and its reply relayed.
    op.send(json!({"kind": "cmd", "id": "r1", "cmd": "echo", "to": "c-1", "body": 2})).await;
    let cmd = agent.read().await.unwrap();
    agent.send(json!({"kind": "reply", "re": cmd["id"], "body": 2})).await;
    assert_eq!(op.read().await.unwrap()["re"], "r1");

    // A job the agent does not answer, cancelled: `cancel` to the agent, the requester's event
    // and summary, and the answer to the cancel call.
    op.send(json!({"kind": "cmd", "id": "j2", "cmd": "sleep", "target": "c-1", "deadline_ms": 60000})).await;
    let ack = op.read().await.unwrap();
    let job = ack["job"].as_str().unwrap().to_owned();
    assert_eq!(agent.read().await.unwrap()["kind"], "cmd");
    op.send(json!({"kind": "cmd", "id": "c", "cmd": "$orb.jobs.cancel", "body": {"id": job}})).await;
    assert_eq!(agent.read().await.unwrap()["kind"], "cancel");
    let (mut summary, mut cancelled) = (false, false);
    while !(summary && cancelled) {
        let f = op.read().await.unwrap();
        summary |= f["kind"] == "reply" && f["re"] == "j2";
        cancelled |= f["kind"] == "reply" && f["re"] == "c";
    }

    op.leave().await;
    agent.leave().await;
    let s = scrape_until(&http, "both sessions' ends", |s| {
        s.get(r#"orb_sessions_closed_total{reason="peer_closed"}"#) == 2.0
    })
    .await;
    let read = (agent.read.0 + op.read.0, agent.read.1 + op.read.1);
    let sent = (agent.sent.0 + op.sent.0, agent.sent.1 + op.sent.1);
    assert_eq!((s.sum("orb_frames_sent_total"), s.get("orb_sent_bytes_total")), (read.0 as f64, read.1 as f64));
    assert_eq!((s.sum("orb_frames_received_total"), s.get("orb_received_bytes_total")), (sent.0 as f64, sent.1 as f64));
    for (series, n) in [
        (r#"orb_frames_received_total{kind="unknown"}"#, 1.0),
        (r#"orb_frames_received_total{kind="bye"}"#, 2.0),
        (r#"orb_frames_sent_total{kind="pong"}"#, 1.0),
        (r#"orb_frames_sent_total{kind="error"}"#, 1.0),
        (r#"orb_frames_sent_total{kind="pub"}"#, 1.0),
        (r#"orb_frames_sent_total{kind="cmd"}"#, 3.0),
        (r#"orb_frames_sent_total{kind="cancel"}"#, 1.0),
        (r#"orb_job_targets_total{status="ok"}"#, 1.0),
        (r#"orb_job_targets_total{status="cancelled"}"#, 1.0),
    ] {
        assert_eq!(s.get(series), n, "{series}");
    }
}

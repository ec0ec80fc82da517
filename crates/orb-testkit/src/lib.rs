//! Test helpers: [`TestServer`] runs a real server on `127.0.0.1:0` with a temporary data
//! folder, and hands out connected agents and operators over TCP or WebSocket. [`within`] bounds
//! an await, [`finish_job`] reads a job to its end, and [`RawTcp`] speaks the framing by hand
//! (for handshake refusals and peers that misbehave). [`Pki`] makes a development CA with
//! server and client certificates per test, and [`TestServer::start_tls`] a server that speaks
//! TLS only, whose clients connect over `tls://` and `wss://`.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::path::PathBuf;

use orb_client::{Client, ClientConfig, Handlers, Job, JobUpdate, ServerUrl};
pub use orb_io::tls::dev::{DevCa, Issued};
pub use orb_io::tls::{ClientTls, ServerTls};
use orb_proto::Status;
use orb_proto::message::{JobAccepted, JobSummary, TargetResult};
use orb_server::{Server, ServerBuilder, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for anything that should happen promptly before it fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

/// The job as stored, once `done(detail)` holds (polled: the store settles in the background).
///
/// # Panics
/// When it does not get there within about [`WAIT`].
pub async fn stored_until(
    op: &Client,
    job: &str,
    done: impl Fn(&orb_proto::history::JobDetail) -> bool,
) -> orb_proto::history::JobDetail {
    let show = orb_proto::message::commands::JOBS_SHOW;
    for _ in 0..500 {
        let d: orb_proto::history::JobDetail = call(op, show, serde_json::json!({ "id": job })).await;
        if done(&d) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d: orb_proto::history::JobDetail = call(op, show, serde_json::json!({ "id": job })).await;
    panic!("the stored job never got there: {d:?}");
}

/// Awaits `fut` for at most [`WAIT`].
///
/// # Panics
/// When `fut` does not finish in time (a test failure naming `what`).
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Calls server command `cmd` with `args` and decodes the answer.
///
/// # Panics
/// When the call fails or does not answer within [`WAIT`] (a test failure).
pub async fn call<T: serde::de::DeserializeOwned>(client: &Client, cmd: &str, args: serde_json::Value) -> T {
    within(cmd, client.call_json(cmd, &args, WAIT)).await.unwrap_or_else(|e| panic!("{cmd} failed: {e}"))
}

/// Calls server command `cmd` with `args`, expecting a refusal; returns its code.
///
/// # Panics
/// When the call succeeds or fails otherwise than with the server's refusal.
pub async fn refused(client: &Client, cmd: &str, args: serde_json::Value) -> orb_proto::ErrorCode {
    match within(cmd, client.call_json::<_, serde_json::Value>(cmd, &args, WAIT)).await {
        Err(orb_client::ClientError::Remote(e)) => e.code,
        other => panic!("{cmd} should be refused, got {other:?}"),
    }
}

/// A server for one test; stopped when dropped (the runtime ends its tasks).
pub struct TestServer {
    /// The running server.
    pub server: Server,
    /// Its data folder (deleted on drop).
    pub data: tempfile::TempDir,
    /// Device secrets issued to the agents [`TestServer::agent`] connected, by id: like an
    /// agent's data folder, so a second connection with the same id is the same device.
    secrets: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// What clients of a TLS server trust and present.
    client_tls: ClientTls,
}

/// A development CA for one test (`orb_io::tls::dev`), with its files in a temporary folder:
/// `ca.crt`, `server.crt` and `server.key` (for `localhost`, `127.0.0.1`, `::1`), and client
/// certificates made on demand.
pub struct Pki {
    /// The folder holding the files.
    pub dir: tempfile::TempDir,
    /// The CA.
    pub ca: DevCa,
}

impl Pki {
    /// A new CA and server certificate.
    ///
    /// # Panics
    /// When generating or writing fails (a test failure).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = DevCa::generate("orb test CA").expect("CA");
        std::fs::write(dir.path().join("ca.crt"), &ca.ca.cert_pem).expect("write ca.crt");
        let pki = Pki { dir, ca };
        pki.issue_server("server");
        pki
    }

    /// A path in the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// Writes a new server certificate and key as `NAME.crt` and `NAME.key` (replacing them).
    ///
    /// # Panics
    /// When generating or writing fails.
    pub fn issue_server(&self, name: &str) -> Issued {
        let issued = self.ca.server(&[]).expect("server certificate");
        self.write(name, &issued);
        issued
    }

    /// Writes `issued` as `NAME.crt` and `NAME.key`.
    ///
    /// # Panics
    /// When writing fails.
    pub fn write(&self, name: &str, issued: &Issued) {
        std::fs::write(self.path(&format!("{name}.crt")), &issued.cert_pem).expect("write certificate");
        std::fs::write(self.path(&format!("{name}.key")), &issued.key_pem).expect("write key");
    }

    /// The server side: `server.crt`, `server.key`, and with `client_ca` this CA for client
    /// certificates (required or not).
    pub fn server_tls(&self, client_ca: bool, require_client_cert: bool) -> ServerTls {
        ServerTls {
            cert: self.path("server.crt"),
            key: self.path("server.key"),
            client_ca: client_ca.then(|| self.ca_cert()),
            require_client_cert,
        }
    }

    /// A client trusting this CA, without a certificate of its own.
    pub fn trusting(&self) -> ClientTls {
        ClientTls { ca_cert: Some(self.ca_cert()), cert: None, key: None }
    }

    /// A client trusting this CA with a certificate for device `id` (written as `client-ID.*`).
    ///
    /// # Panics
    /// When generating or writing fails.
    pub fn client(&self, id: &str) -> ClientTls {
        let name = format!("client-{id}");
        self.write(&name, &self.ca.client(id).expect("client certificate"));
        ClientTls {
            ca_cert: Some(self.ca_cert()),
            cert: Some(self.path(&format!("{name}.crt"))),
            key: Some(self.path(&format!("{name}.key"))),
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

/// Which transport a test client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Length-prefixed TCP.
    Tcp,
    /// WebSocket at `/v1/ws`.
    Ws,
}

impl TestServer {
    /// Starts a server with [`ServerConfig::for_tests`].
    ///
    /// # Panics
    /// When the server cannot start (a test failure).
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}, |b| b).await
    }

    /// Starts a server after `tweak` adjusted the configuration and `build` the builder.
    ///
    /// # Panics
    /// When the server cannot start (a test failure).
    pub async fn start_with(
        tweak: impl FnOnce(&mut ServerConfig),
        build: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> TestServer {
        let data = tempfile::tempdir().expect("temp dir");
        let mut cfg = ServerConfig::for_tests(data.path().to_path_buf());
        tweak(&mut cfg);
        let server = build(ServerBuilder::new(cfg)).start().await.expect("server starts");
        TestServer { server, data, secrets: Default::default(), client_tls: ClientTls::default() }
    }

    /// Starts a server speaking TLS only with `tls`; its clients ([`TestServer::url`],
    /// [`TestServer::agent`], ...) connect over `tls://` and `wss://` with `client`.
    ///
    /// # Panics
    /// When the server cannot start (a test failure).
    pub async fn start_tls(tls: ServerTls, client: ClientTls) -> TestServer {
        let mut server = TestServer::start_with(|c| c.tls = Some(tls), |b| b).await;
        server.client_tls = client;
        server
    }

    /// What clients of this server trust and present (TLS servers).
    pub fn client_tls(&self) -> &ClientTls {
        &self.client_tls
    }

    /// Stops this server gracefully (jobs in flight get half a second) and starts a new one on
    /// the same data folder (and store), configured by `tweak`; device secrets handed out are kept.
    ///
    /// # Panics
    /// When the server cannot start again (a test failure).
    pub async fn restart(self, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        self.restart_after(async {}, tweak).await.0
    }

    /// [`TestServer::restart`], awaiting `while_down` between the stop and the start (what
    /// clients do while no server runs); its output comes back with the new server.
    ///
    /// # Panics
    /// When the server does not start again.
    pub async fn restart_after<F: Future>(
        self,
        while_down: F,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> (TestServer, F::Output) {
        let TestServer { server, data, secrets, client_tls } = self;
        server.drain(Duration::from_millis(500)).await;
        drop(server);
        let out = while_down.await;
        let mut cfg = ServerConfig::for_tests(data.path().to_path_buf());
        tweak(&mut cfg);
        let server = ServerBuilder::new(cfg).start().await.expect("server starts again");
        (TestServer { server, data, secrets, client_tls }, out)
    }

    /// The device secret [`TestServer::agent`] got for `id`, if it enrolled.
    pub fn secret_of(&self, id: &str) -> Option<String> {
        self.secrets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned()
    }

    /// The server URL for `transport`: `tls://` and `wss://` when the server speaks TLS.
    pub fn url(&self, transport: Transport) -> ServerUrl {
        let tls = self.server.tls_enabled();
        let s = match (transport, tls) {
            (Transport::Tcp, false) => format!("tcp://{}", self.server.tcp_addr()),
            (Transport::Tcp, true) => format!("tls://{}", self.server.tcp_addr()),
            (Transport::Ws, false) => format!("ws://{}/v1/ws", self.server.http_addr()),
            (Transport::Ws, true) => format!("wss://{}/v1/ws", self.server.http_addr()),
        };
        ServerUrl::parse(&s).expect("valid url")
    }

    /// The configuration [`TestServer::agent`] connects with (agent token), for tests that
    /// change something first (the codec, say).
    pub fn agent_config(&self, transport: Transport, id: &str) -> ClientConfig {
        let mut cfg = ClientConfig::agent(self.url(transport), Some(self.server.agent_token().expose().to_owned()), id);
        cfg.tls = self.client_tls.clone();
        cfg
    }

    /// The configuration [`TestServer::operator`] connects with (admin token).
    pub fn operator_config(&self, transport: Transport) -> ClientConfig {
        let mut cfg = ClientConfig::operator(self.url(transport), Some(self.server.admin_token().expose().to_owned()));
        cfg.tls = self.client_tls.clone();
        cfg
    }

    /// Connects an agent with `id`, `tags` (`k=v`) and `handlers`.
    ///
    /// # Panics
    /// When the connection is refused (a test failure).
    /// The first connection of an id enrolls (and the secret is kept); later ones present it.
    pub async fn agent(&self, transport: Transport, id: &str, tags: &[(&str, &str)], handlers: Handlers) -> Client {
        let mut cfg = self.agent_config(transport, id);
        cfg.tags = tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.agent_with(cfg, handlers).await
    }

    /// Connects an agent with `cfg` (from [`TestServer::agent_config`], changed by the test: a
    /// journal, say), presenting the secret of its id when it has one, keeping the one issued.
    ///
    /// # Panics
    /// When the connection is refused (a test failure).
    pub async fn agent_with(&self, mut cfg: ClientConfig, handlers: Handlers) -> Client {
        let id = cfg.id.clone().unwrap_or_default();
        cfg.secret = self.secret_of(&id);
        let client = Client::connect(cfg, handlers).await.expect("agent connects");
        if let Some(secret) = &client.welcome().secret {
            self.secrets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, secret.clone());
        }
        client
    }

    /// Connects `id` once (it enrolls and becomes known), then disconnects it and waits until
    /// the server has seen it go.
    ///
    /// # Panics
    /// When the server still lists the session after [`WAIT`].
    pub async fn known_but_offline(&self, id: &str) {
        let agent = self.agent(Transport::Tcp, id, &[], basic_handlers()).await;
        agent.close().await;
        within("the session's end", agent.closed()).await;
        self.wait_until_gone(id).await;
    }

    /// Waits until the server no longer lists a session for device `id`.
    ///
    /// # Panics
    /// When it still does after [`WAIT`].
    pub async fn wait_until_gone(&self, id: &str) {
        for _ in 0..1000 {
            if self.server.broker().sessions().get(id).is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} is still connected");
    }

    /// Connects an operator (admin token).
    ///
    /// # Panics
    /// When the connection is refused (a test failure).
    pub async fn operator(&self, transport: Transport) -> Client {
        Client::connect(self.operator_config(transport), Handlers::new()).await.expect("operator connects")
    }

    /// `GET /metrics` with the admin token, now: the value of the series whose line starts with
    /// `series` (its name and labels, e.g. `orb_rate_limited_total{limit="messages"}`), `None`
    /// when the exposition has no such line.
    ///
    /// # Panics
    /// When the request fails or takes longer than [`WAIT`] (a test failure).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = reqwest::Client::builder()
            .timeout(WAIT)
            .build()
            .unwrap_or_else(|e| panic!("an HTTP client: {e}"))
            .get(format!("http://{}/metrics", self.server.http_addr()))
            .bearer_auth(self.server.admin_token().expose())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        let text = text.text().await.unwrap_or_else(|e| panic!("GET /metrics body: {e}"));
        let prefix = format!("{series} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
    }

    /// Waits (bounded) until `n` agents are registered; the server registers a session right
    /// after queueing its `welcome`, without waiting in between, so this normally returns at once.
    ///
    /// # Panics
    /// When the count is not reached within 5 s.
    pub async fn wait_for_agents(&self, n: u64) {
        for _ in 0..500 {
            if self.server.broker().sessions().counts().0 == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} agents, have {}", self.server.broker().sessions().counts().0);
    }
}

/// Handlers like `orb agent`'s basics: `ping` and `echo`.
pub fn basic_handlers() -> Handlers {
    Handlers::new().on("ping", |_c: orb_client::Context| async { Ok(serde_json::json!({"pong": true})) }).on(
        "echo",
        |c: orb_client::Context| async move {
            serde_json::from_slice::<serde_json::Value>(&c.args)
                .map_err(|e| orb_proto::ErrorBody::new(orb_proto::ErrorCode::BadArgs, e.to_string()))
        },
    )
}

/// Everything a job produced, read to its end by [`finish_job`].
#[derive(Debug)]
pub struct JobOutcome {
    /// What the server accepted (job id, targets, deadline).
    pub accepted: JobAccepted,
    /// One result per target, in arrival order.
    pub results: Vec<TargetResult>,
    /// The summary that ended the job.
    pub summary: JobSummary,
    /// The batches a batched job started, in order.
    pub batches: Vec<orb_proto::message::BatchStarted>,
}

impl JobOutcome {
    /// The result for `device`.
    ///
    /// # Panics
    /// When the job has no result for it.
    pub fn result(&self, device: &str) -> &TargetResult {
        self.results
            .iter()
            .find(|r| r.device == device)
            .unwrap_or_else(|| panic!("no result for {device} in {:?}", self.results))
    }

    /// The devices that reported a result, sorted.
    pub fn devices(&self) -> Vec<String> {
        let mut v: Vec<String> = self.results.iter().map(|r| r.device.clone()).collect();
        v.sort();
        v
    }

    /// The summary count for `status` (0 when the summary lacks it).
    pub fn count(&self, status: Status) -> u64 {
        self.summary.summary.get(&status).copied().unwrap_or(0)
    }

    /// The `ok` result of `device` as JSON.
    ///
    /// # Panics
    /// When the device has no `ok` result with a valid JSON body.
    pub fn ok_json(&self, device: &str) -> serde_json::Value {
        let r = self.result(device);
        assert_eq!(r.status, Status::Ok, "{device}: {r:?}");
        let raw = r.result.as_ref().unwrap_or_else(|| panic!("{device}: ok without a result"));
        serde_json::from_str(raw.get()).expect("result is JSON")
    }

    /// The error code of `device`'s result.
    ///
    /// # Panics
    /// When the result carries no error.
    pub fn error_code(&self, device: &str) -> String {
        let r = self.result(device);
        r.error.as_ref().unwrap_or_else(|| panic!("{device}: no error in {r:?}")).code.as_str().to_owned()
    }
}

/// Reads `job` until [`JobUpdate::Done`], each update within [`WAIT`]. Checks the stream's shape:
/// exactly one result per accepted target, then a summary whose counts add up to the targets and
/// that lists every status.
///
/// # Panics
/// When the job does not end in time, the stream ends early, or its shape is wrong.
pub async fn finish_job(mut job: Job) -> JobOutcome {
    let accepted = job.accepted.clone();
    let mut results: Vec<TargetResult> = Vec::new();
    let mut batches = Vec::new();
    // A job sends one result per target, at most one batch start per target and one summary:
    // anything beyond that is a bug.
    for _ in 0..=2 * accepted.targets.len() {
        match within("a job update", job.next()).await {
            Some(JobUpdate::Batch(b)) => {
                assert_eq!(b.batch as usize, batches.len() + 1, "batches start in order: {batches:?} then {b:?}");
                batches.push(b);
            }
            Some(JobUpdate::Result(r)) => {
                assert!(
                    accepted.targets.contains(&r.device),
                    "result from {} which is not a target of {:?}",
                    r.device,
                    accepted.targets
                );
                assert!(results.iter().all(|o| o.device != r.device), "second result for {}", r.device);
                results.push(r);
            }
            Some(JobUpdate::Done(summary)) => {
                assert_eq!(
                    results.len(),
                    accepted.targets.len(),
                    "job ended before every target reported: {results:?}"
                );
                assert_eq!(summary.job, accepted.job);
                for s in Status::ALL {
                    assert!(summary.summary.contains_key(&s), "summary lacks {s}: {summary:?}");
                }
                let total: u64 = summary.summary.values().sum();
                assert_eq!(total as usize, accepted.targets.len(), "{summary:?}");
                for s in Status::ALL {
                    let n = results.iter().filter(|r| r.status == s).count() as u64;
                    assert_eq!(summary.summary[&s], n, "summary count of {s}: {summary:?}");
                }
                return JobOutcome { accepted, results, summary, batches };
            }
            Some(JobUpdate::Progress { device, body }) => {
                panic!("progress from {device} for a job that did not ask for it: {body}")
            }
            None => panic!("job stream ended without a summary after {results:?}"),
        }
    }
    panic!("job sent more updates than it has targets: {results:?}")
}

/// A `hello` frame as JSON, for hand-written handshakes.
pub fn hello_json(role: &str, token: &str, id: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::json!({"version": 1, "role": role, "token": token});
    if let Some(id) = id {
        body["id"] = serde_json::Value::String(id.to_owned());
    }
    serde_json::json!({"kind": "hello", "body": body})
}

/// A TCP connection that frames by hand (u32 big-endian length, then the JSON payload), for
/// tests of malformed input and of peers that stop reading.
pub struct RawTcp {
    stream: TcpStream,
}

/// Largest frame [`RawTcp::read_frame`] accepts; anything above means the stream is corrupt.
const RAW_MAX_FRAME: usize = 16 * 1024 * 1024;

impl RawTcp {
    /// Connects to `addr`.
    ///
    /// # Panics
    /// When the connection fails.
    pub async fn connect(addr: SocketAddr) -> RawTcp {
        let stream = within("a tcp connect", TcpStream::connect(addr)).await.expect("tcp connect");
        RawTcp { stream }
    }

    /// Connects with a small receive buffer, so that a peer which stops reading fills it quickly.
    ///
    /// # Panics
    /// When the connection fails.
    pub async fn connect_small_buffer(addr: SocketAddr) -> RawTcp {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = within("a tcp connect", socket.connect(addr)).await.expect("tcp connect");
        RawTcp { stream }
    }

    /// Writes raw bytes.
    ///
    /// # Errors
    /// When the socket write fails (for example after the server closed it).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        within("a socket write", self.stream.write_all(bytes)).await
    }

    /// Writes one frame: the length header, then `payload`.
    ///
    /// # Errors
    /// As [`RawTcp::write_raw`].
    pub async fn send_frame(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len()).expect("payload fits a u32");
        let mut buf = Vec::with_capacity(4 + payload.len());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(payload);
        self.write_raw(&buf).await
    }

    /// Writes one frame holding `v`.
    ///
    /// # Errors
    /// As [`RawTcp::write_raw`].
    pub async fn send_json(&mut self, v: &serde_json::Value) -> io::Result<()> {
        self.send_frame(v.to_string().as_bytes()).await
    }

    /// Reads the next frame's payload: `Ok(None)` at a clean end of stream (between frames),
    /// `Err` when the connection was reset or ended inside a frame.
    ///
    /// # Panics
    /// When nothing arrives within [`WAIT`], or the header announces more than 16 MiB.
    pub async fn read_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < header.len() {
            let n = within("a frame header", self.stream.read(&mut header[got..])).await?;
            if n == 0 {
                return if got == 0 { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
            }
            got += n;
        }
        let len = u32::from_be_bytes(header) as usize;
        assert!(len <= RAW_MAX_FRAME, "frame header announces {len} bytes");
        let mut payload = vec![0u8; len];
        within("a frame payload", self.stream.read_exact(&mut payload)).await?;
        Ok(Some(payload))
    }

    /// Reads the next frame as JSON; `None` when the connection ended (cleanly or not).
    ///
    /// # Panics
    /// When the payload is not JSON, or as [`RawTcp::read_frame`].
    pub async fn read_json(&mut self) -> Option<serde_json::Value> {
        let payload = self.read_frame().await.ok()??;
        Some(serde_json::from_slice(&payload).expect("the server sends JSON frames"))
    }

    /// Asserts the server closes the connection next: no further frame, then end of stream (or reset).
    ///
    /// # Panics
    /// When a frame arrives or the connection stays open beyond [`WAIT`].
    pub async fn expect_closed(&mut self) {
        match self.read_frame().await {
            Ok(None) | Err(_) => {}
            Ok(Some(f)) => panic!("expected the server to close, got {}", String::from_utf8_lossy(&f)),
        }
    }

    /// Reads an `error` frame and returns its code.
    ///
    /// # Panics
    /// When the next frame is not an `error`.
    pub async fn expect_error(&mut self) -> String {
        let f = self.read_json().await.expect("an error frame before the close");
        assert_eq!(f["kind"], "error", "expected an error frame, got {f}");
        f["error"]["code"].as_str().expect("error.code is a string").to_owned()
    }
}

impl TestServer {
    /// A hand-framed TCP connection to the server, before any hello.
    pub async fn raw_tcp(&self) -> RawTcp {
        RawTcp::connect(self.server.tcp_addr()).await
    }

    /// A hand-framed agent `id` that completed the handshake (its `welcome` is read) and then
    /// does only what the test makes it do. Its receive buffer is small, so that if it stops
    /// reading the server notices soon.
    ///
    /// # Panics
    /// When the server does not welcome it.
    pub async fn raw_agent(&self, id: &str) -> RawTcp {
        let mut raw = RawTcp::connect_small_buffer(self.server.tcp_addr()).await;
        let hello = hello_json("agent", self.server.agent_token().expose(), Some(id));
        raw.send_json(&hello).await.expect("hello sent");
        let welcome = raw.read_json().await.expect("welcome");
        assert_eq!(welcome["kind"], "welcome", "{welcome}");
        raw
    }

    /// A hand-framed operator that completed the handshake and has sent requests to `device`
    /// (a [`TestServer::raw_agent`] that does not read) big enough to fill its socket buffers
    /// and the server's queue for it: a command sent next stays queued on the server. Needs a
    /// server with `max_frame` of at least 512 KiB and a 64 MiB outbound queue.
    ///
    /// # Panics
    /// When the server does not welcome it or a frame cannot be sent.
    pub async fn operator_stalling(&self, device: &str) -> RawTcp {
        let mut op = RawTcp::connect(self.server.tcp_addr()).await;
        op.send_json(&hello_json("operator", self.server.admin_token().expose(), None)).await.expect("hello sent");
        assert_eq!(op.read_json().await.expect("welcome")["kind"], "welcome");
        let body = format!("\"{}\"", "x".repeat(500 * 1024));
        for i in 0..16 {
            let f = format!(
                r#"{{"kind":"cmd","id":"r{i}","cmd":"echo","to":"{device}","deadline_ms":60000,"body":{body}}}"#
            );
            op.send_frame(f.as_bytes()).await.expect("a request sent");
        }
        op
    }
}

//! TLS and mTLS over real sockets on loopback, with certificates made per test (`orb_testkit::Pki`):
//! agents and operators over `tls://` and `wss://` run a job; the REST API over `https://` (and
//! the dashboard's sign-in sets a `Secure` cookie); a
//! client trusting another CA fails with a clear error; `require_client_cert` refuses a client
//! without a certificate and admits one from the CA; a client certificate authenticates the
//! device it names (and only that one), one from another CA is refused; a reload swaps the
//! certificate for new connections while existing ones stay up, and a bad file at reload changes
//! nothing; plain clients on TLS ports (and TLS clients on plain ports) get a clear failure, not
//! a hang; the TLS handshake is bounded by the handshake timeout.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use orb_client::{Backoff, Client, ClientConfig, ClientError, Handlers, JobRequest, LinkEvent, Persistent, ServerUrl};
use orb_proto::{ErrorCode, Status};
use orb_testkit::{ClientTls, Pki, TestServer, Transport, WAIT, basic_handlers, finish_job, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `ping` on `selector` from `op` and returns the devices that answered `ok`.
async fn ping(op: &Client, selector: &str) -> Vec<String> {
    let job = within(
        "the ack",
        op.submit(JobRequest::new(selector, "ping").args(Bytes::from_static(b"null")).deadline(WAIT)),
    )
    .await
    .unwrap();
    let out = finish_job(job).await;
    out.devices().into_iter().filter(|d| out.result(d).status == Status::Ok).collect()
}

/// An agent for `url` presenting `tls`, with no token, claiming `id` (or no id).
fn cert_agent(url: ServerUrl, tls: ClientTls, id: Option<&str>) -> ClientConfig {
    let mut cfg = ClientConfig::agent(url, None, "unused");
    cfg.id = id.map(str::to_owned);
    cfg.tls = tls;
    cfg
}

/// The connect error, expecting one within [`WAIT`].
async fn connect_error(cfg: ClientConfig) -> ClientError {
    match within("the connect", Client::connect(cfg, Handlers::new())).await {
        Err(e) => e,
        Ok(c) => panic!("expected a refusal, connected as {}", c.welcome().id),
    }
}

#[tokio::test]
async fn agents_and_operators_over_tls_and_wss_run_a_job_and_show_their_transport() {
    let pki = Pki::new();
    let server = TestServer::start_tls(pki.server_tls(false, false), pki.trusting()).await;
    assert!(server.url(Transport::Tcp).to_string().starts_with("tls://"));
    let _a = server.agent(Transport::Tcp, "web-1", &[], basic_handlers()).await;
    let _b = server.agent(Transport::Ws, "web-2", &[], basic_handlers()).await;
    server.wait_for_agents(2).await;
    for transport in [Transport::Tcp, Transport::Ws] {
        let op = server.operator(transport).await;
        assert_eq!(ping(&op, "web-*").await, ["web-1", "web-2"]);
        op.close().await;
    }
    let sessions = server.server.broker().sessions();
    assert_eq!(sessions.get("web-1").unwrap().record.transport, "tls");
    assert_eq!(sessions.get("web-2").unwrap().record.transport, "wss");
}

#[tokio::test]
async fn the_rest_api_and_the_dashboard_answer_over_https_and_plain_http_is_told_to_use_tls() {
    let pki = Pki::new();
    let server = TestServer::start_tls(pki.server_tls(false, false), pki.trusting()).await;
    let tls = (*pki.trusting().load().unwrap()).clone();
    let client = reqwest::Client::builder().use_preconfigured_tls(tls).timeout(WAIT).build().unwrap();
    let base = format!("https://localhost:{}", server.server.http_addr().port());
    let resp =
        client.get(format!("{base}/v1/status")).bearer_auth(server.server.admin_token().expose()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body.is_object(), "{body}");
    let resp = client.get(format!("{base}/v1/status")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "TLS does not replace the token");

    // A dashboard sign-in over TLS sets a cookie the browser sends back only over TLS.
    let tls = (*pki.trusting().load().unwrap()).clone();
    let browser = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap();
    let resp = browser
        .post(format!("{base}/login"))
        .header("origin", &base)
        .form(&[("token", server.server.admin_token().expose())])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.ends_with("; Secure"), "{cookie}");

    let plain = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let resp = plain.get(format!("http://{}/v1/status", server.server.http_addr())).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.starts_with(orb_io::sniff::TLS_PORT_ANSWER_START), "{text}");
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails_with_a_clear_error_and_an_agent_keeps_retrying() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = TestServer::start_tls(pki.server_tls(false, false), pki.trusting()).await;
    for transport in [Transport::Tcp, Transport::Ws] {
        let mut cfg = server.operator_config(transport);
        cfg.tls = other.trusting();
        let e = connect_error(cfg).await;
        assert!(matches!(e, ClientError::Tls { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("not signed by a CA this client trusts") && text.contains("--ca-cert"), "{text}");
    }
    // A persistent agent treats it as any failure to connect: it retries with backoff.
    let mut cfg = server.agent_config(Transport::Tcp, "cam-1");
    cfg.tls = other.trusting();
    let url = cfg.url.clone();
    let backoff = Backoff { min: Duration::from_millis(1), max: Duration::from_millis(5), give_up_after: None };
    let link = Persistent::new(cfg, vec![url], Handlers::new(), backoff);
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { link.run(&stop, |e| drop(tx.send(e))).await }
    });
    for _ in 0..3 {
        match within("a failed attempt", rx.recv()).await.unwrap() {
            LinkEvent::Failed { error, code: None, .. } => assert!(error.contains("--ca-cert"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
    stop.cancel();
    assert!(within("the link's end", run).await.unwrap().is_ok());
}

#[tokio::test]
async fn required_client_certificates_refuse_a_client_without_one_and_admit_one_from_the_ca() {
    let pki = Pki::new();
    let server = TestServer::start_tls(pki.server_tls(true, true), pki.trusting()).await;
    for transport in [Transport::Tcp, Transport::Ws] {
        let e = connect_error(server.operator_config(transport)).await;
        let text = e.to_string();
        assert!(text.contains("requires a client certificate") && text.contains("--cert"), "{transport:?}: {text}");
    }
    // An operator with a certificate from the CA: the admin token still makes it an operator.
    let mut cfg = server.operator_config(Transport::Tcp);
    cfg.tls = pki.client("ops-laptop");
    let op = within("the operator", Client::connect(cfg, Handlers::new())).await.unwrap();
    // A device with its certificate and no token at all.
    let cam = cert_agent(server.url(Transport::Ws), pki.client("cam-1"), None);
    let agent = within("the agent", Client::connect(cam, basic_handlers())).await.unwrap();
    assert_eq!(agent.welcome().id, "cam-1");
    assert_eq!(agent.welcome().secret, None, "the certificate is the credential: no secret issued");
    server.wait_for_agents(1).await;
    assert_eq!(ping(&op, "cam-1").await, ["cam-1"]);
}

#[tokio::test]
async fn a_client_certificate_authenticates_the_device_it_names_and_no_other() {
    let pki = Pki::new();
    let server = TestServer::start_tls(pki.server_tls(true, false), pki.trusting()).await;
    for transport in [Transport::Tcp, Transport::Ws] {
        // The id may be given (the same) or left out.
        let cfg = cert_agent(server.url(transport), pki.client("cam-1"), Some("cam-1"));
        let agent = within("cam-1", Client::connect(cfg, basic_handlers())).await.unwrap();
        assert_eq!(agent.welcome().id, "cam-1");
        agent.close().await;
        within("the session's end", agent.closed()).await;
        server.wait_until_gone("cam-1").await;
        // Claiming another device is refused, whatever token comes along.
        let mut cfg = cert_agent(server.url(transport), pki.client("cam-1"), Some("cam-2"));
        cfg.token = Some(server.server.agent_token().expose().to_owned());
        match connect_error(cfg).await {
            ClientError::Refused(e) => {
                assert_eq!(e.code, ErrorCode::IdMismatch);
                assert!(e.message.contains("cam-1") && e.message.contains("cam-2"), "{}", e.message);
            }
            e => panic!("{e:?}"),
        }
    }
    // The device is registered, and closed to the shared agent token from then on.
    assert!(server.server.broker().registry().get("cam-1").is_some());
    let e = connect_error(server.agent_config(Transport::Tcp, "cam-1")).await;
    assert_eq!(e.code(), Some(&ErrorCode::IdTaken), "{e}");
    // Without a certificate (optional here), tokens work as before.
    let web = server.agent(Transport::Tcp, "web-1", &[], basic_handlers()).await;
    assert_eq!(web.welcome().id, "web-1");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = TestServer::start_tls(pki.server_tls(true, false), pki.trusting()).await;
    for transport in [Transport::Tcp, Transport::Ws] {
        let mut tls = other.client("cam-1");
        tls.ca_cert = Some(pki.ca_cert());
        let e = connect_error(cert_agent(server.url(transport), tls, Some("cam-1"))).await;
        let text = e.to_string();
        assert!(text.contains("refused this client certificate"), "{transport:?}: {text}");
    }
    assert!(server.server.broker().registry().get("cam-1").is_none(), "nothing was registered");
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_connections_while_existing_ones_stay_up() {
    let pki = Pki::new();
    let tls = pki.server_tls(false, false);
    let server = TestServer::start_tls(tls.clone(), pki.trusting()).await;
    let _agent = server.agent(Transport::Tcp, "web-1", &[], basic_handlers()).await;
    let old_op = server.operator(Transport::Ws).await;

    // A new CA's certificate replaces the files, then the server reloads.
    let next = Pki::new();
    std::fs::copy(next.path("server.crt"), &tls.cert).unwrap();
    std::fs::copy(next.path("server.key"), &tls.key).unwrap();
    let mut cfg = orb_server::ServerConfig::for_tests(server.data.path().to_path_buf());
    cfg.tls = Some(tls.clone());
    let reloaded = server.server.reload(cfg.clone()).unwrap();
    assert!(reloaded.restart_required.is_empty(), "{reloaded:?}");

    // New connections see the new certificate: trusting only the old CA fails now.
    let mut stale = server.operator_config(Transport::Tcp);
    stale.tls = pki.trusting();
    assert!(matches!(connect_error(stale).await, ClientError::Tls { .. }));
    let mut fresh = server.operator_config(Transport::Tcp);
    fresh.tls = next.trusting();
    let new_op = within("the new operator", Client::connect(fresh.clone(), Handlers::new())).await.unwrap();
    // The connections made before the reload are still up and still work.
    assert_eq!(ping(&old_op, "web-1").await, ["web-1"]);
    assert_eq!(ping(&new_op, "web-1").await, ["web-1"]);

    // A bad file at reload is an error and keeps the certificate in force.
    std::fs::write(&tls.key, "not a key\n").unwrap();
    let e = server.server.reload(cfg).unwrap_err();
    assert!(e.to_string().contains("server.key"), "{e}");
    let again = within("another operator", Client::connect(fresh, Handlers::new())).await.unwrap();
    assert_eq!(ping(&again, "web-1").await, ["web-1"]);
}

#[tokio::test]
async fn plain_clients_on_tls_ports_and_tls_clients_on_plain_ports_fail_clearly_and_promptly() {
    let pki = Pki::new();
    let server = TestServer::start_tls(pki.server_tls(false, false), pki.trusting()).await;
    let token = Some(server.server.admin_token().expose().to_owned());
    let tcp = ServerUrl::parse(&format!("tcp://{}", server.server.tcp_addr())).unwrap();
    match connect_error(ClientConfig::operator(tcp, token.clone())).await {
        ClientError::WrongPort { hint, .. } => {
            assert!(hint.contains(&format!("tls://{}", server.server.tcp_addr())), "{hint}")
        }
        e => panic!("{e:?}"),
    }
    let ws = ServerUrl::parse(&format!("ws://{}/v1/ws", server.server.http_addr())).unwrap();
    match connect_error(ClientConfig::operator(ws, token.clone())).await {
        ClientError::WrongPort { hint, .. } => {
            assert!(hint.contains(&format!("wss://{}/v1/ws", server.server.http_addr())), "{hint}")
        }
        e => panic!("{e:?}"),
    }

    // The other way round: a TLS client on a plain server.
    let plain = TestServer::start().await;
    let tls = ServerUrl::parse(&format!("tls://{}", plain.server.tcp_addr())).unwrap();
    let mut cfg = ClientConfig::operator(tls, token);
    cfg.tls = pki.trusting();
    let e = connect_error(cfg).await;
    assert!(e.to_string().contains("did not answer in TLS"), "{e}");
}

#[tokio::test]
async fn the_tls_handshake_is_bounded_by_the_handshake_timeout() {
    let pki = Pki::new();
    let tls = pki.server_tls(false, false);
    let server = TestServer::start_with(
        |c| {
            c.tls = Some(tls);
            c.limits.handshake_timeout = Duration::from_millis(200);
        },
        |b| b,
    )
    .await;
    for addr in [server.server.tcp_addr(), server.server.http_addr()] {
        // Silent, and a ClientHello cut short: both are closed, not held open.
        for first in [&b""[..], &[0x16, 0x03, 0x01][..]] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(first).await.unwrap();
            let mut buf = [0u8; 64];
            let n = within("the server closing", s.read(&mut buf)).await.unwrap_or(0);
            assert_eq!(n, 0, "{addr}: closed without an answer");
        }
    }
}

#[tokio::test]
async fn a_host_name_is_connected_by_name_trying_each_of_its_addresses() {
    let pki = Pki::new();
    let server = TestServer::start_tls(pki.server_tls(false, false), pki.trusting()).await;
    let _agent = server.agent(Transport::Tcp, "web-1", &[], basic_handlers()).await;
    // `localhost` may resolve to ::1 first, where nothing listens: the next address is tried.
    for url in [
        format!("tls://localhost:{}", server.server.tcp_addr().port()),
        format!("wss://localhost:{}/v1/ws", server.server.http_addr().port()),
    ] {
        let mut cfg = server.operator_config(Transport::Tcp);
        cfg.url = ServerUrl::parse(&url).unwrap();
        let op = within("the operator", Client::connect(cfg, Handlers::new())).await.unwrap();
        assert_eq!(ping(&op, "web-1").await, ["web-1"]);
    }
}

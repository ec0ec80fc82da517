//! Failed authentications per source address (issue 15): a brute force from one address is
//! slowed, then refused with `rate_limited`, on the agent port, the API and the dashboard
//! sign-in alike, while a client with valid credentials from the same address is still
//! admitted (one bad device behind a site's NAT must not lock the site out).
#![allow(clippy::unwrap_used)]

use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, hello_json};
use reqwest::StatusCode;

/// The limit these tests set: the first failure is free, the second slowed, the third refused.
const LIMIT: u32 = 2;

async fn server() -> TestServer {
    TestServer::start_with(|cfg| cfg.limits.auth_failures_per_ip = LIMIT, |b| b).await
}

#[tokio::test]
async fn a_brute_force_on_the_agent_port_is_refused_while_valid_clients_get_in() {
    let server = server().await;
    let mut codes = Vec::new();
    for _ in 0..=LIMIT {
        let mut raw = server.raw_tcp().await;
        raw.send_json(&hello_json("operator", "guess", None)).await.unwrap();
        codes.push(raw.expect_error().await);
    }
    assert_eq!(codes, ["auth_failed", "auth_failed", "rate_limited"]);

    // The same address with the right credentials: admitted, operator and agent alike.
    let op = server.operator(Transport::Tcp).await;
    let _agent = server.agent(Transport::Ws, "web-1", &[], basic_handlers()).await;
    let job = op.submit(orb_client::JobRequest::new("web-1", "ping").deadline(WAIT)).await.unwrap();
    let job = orb_testkit::finish_job(job).await;
    assert_eq!(job.count(orb_proto::Status::Ok), 1);

    // Still refused for the next wrong guess.
    let mut raw = server.raw_tcp().await;
    raw.send_json(&hello_json("agent", "guess", Some("cam-1"))).await.unwrap();
    assert_eq!(raw.expect_error().await, "rate_limited");
}

#[tokio::test]
async fn the_api_and_the_sign_in_count_failures_too() {
    let server = server().await;
    let base = format!("http://{}", server.server.http_addr());
    let http = reqwest::Client::builder().timeout(WAIT).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let status = |token: &'static str| {
        let req = http.get(format!("{base}/v1/status")).bearer_auth(token);
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(status("guess").await, StatusCode::UNAUTHORIZED);
    let form = http.post(format!("{base}/login")).form(&[("token", "guess")]).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::UNAUTHORIZED, "the sign-in's failure counts as the second");
    assert_eq!(status("guess").await, StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value =
        http.get(format!("{base}/v1/status")).bearer_auth("guess").send().await.unwrap().json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");

    // The admin token from the same address is admitted.
    let token = server.server.admin_token().expose().to_owned();
    let resp = http.get(format!("{base}/v1/status")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

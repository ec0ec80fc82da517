//! The REST API under `/v1/` (issue 14) over real HTTP on loopback: every endpoint with the admin
//! token; no token or a wrong one is `401` with `{"code", "message"}`; refusals carry the wire
//! protocol's codes and their HTTP statuses; a job waited for answers its results as
//! `orb send --json` prints them; the same typed services as the CLI, so both see one state.
#![allow(clippy::unwrap_used)]

use orb_testkit::{TestServer, Transport, WAIT, basic_handlers};
use reqwest::StatusCode;
use serde_json::{Value, json};

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

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.bearer_auth(&self.token).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.client.post(format!("{}{path}", self.base)).json(&body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.delete(format!("{}{path}", self.base))).await
    }
}

#[tokio::test]
async fn a_token_is_required_and_refusals_say_why() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let url = format!("{}/v1/status", http.base);
    let resp = http.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "auth_failed", "{body}");
    let resp = http.client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The agent token is not an operator's.
    let agent = server.server.agent_token().expose().to_owned();
    let resp = http.client.get(&url).bearer_auth(agent).send().await.unwrap();
    assert!(matches!(resp.status().as_u16(), 401 | 403), "{}", resp.status());
    // Health stays public.
    assert_eq!(http.client.get(format!("{}/healthz", http.base)).send().await.unwrap().status(), StatusCode::OK);

    let (status, body) = http.get("/v1/nothing-here").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");
    let (status, body) = http.post("/v1/jobs", json!({"target": "(", "command": "ping"})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_selector")), "{body}");
    let (status, body) = http.post("/v1/jobs", json!({"target": "*", "command": "ping", "bogus": 1})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    let (status, body) = http.post("/v1/jobs", json!(["*", "ping"])).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("expected a JSON object"), "{body}");
    let (status, body) = http.post("/v1/jobs?limit=2", json!({"target": "*", "command": "ping"})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("unknown field `limit`"), "{body}");
    let (status, body) = http.get("/v1/jobs?limit=1001").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    let (status, body) = http.get("/v1/jobs?limit=18446744073709551616").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("the query string: limit: "), "{body}");
    let (status, body) = http.post("/v1/jobs", json!({"target": "*", "command": "ping", "wait": "soon"})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    let (status, body) = http.post("/v1/jobs", json!({"target": "nobody", "command": "ping"})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("no_match")), "{body}");
    let (status, body) = http.get("/v1/jobs/ffffffff").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("job_not_found")), "{body}");
    let (status, _) = http.get("/v1/devices?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = http.get("/v1/jobs/%FF").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
    let big = json!({"target": "*", "command": "echo", "args": "x".repeat(2 << 20)});
    let (status, body) = http.post("/v1/jobs", big).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("frame_too_large")), "{body}");
}

/// The basic handlers and `hang`, which never answers (until cancelled).
fn hanging() -> orb_client::Handlers {
    basic_handlers().on("hang", |_c: orb_client::Context| async {
        std::future::pending::<()>().await;
        Ok(json!(null))
    })
}

#[tokio::test]
async fn status_devices_jobs_and_publish() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let _agents = [
        server.agent(Transport::Tcp, "web-1", &[("role", "web")], basic_handlers()).await,
        server.agent(Transport::Ws, "web-2", &[("role", "web")], basic_handlers()).await,
        server.agent(Transport::Tcp, "db-1", &[("role", "db")], hanging()).await,
    ];
    let (status, s) = http.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(
        (s["agents"].as_u64(), s["devices_known"].as_u64(), s["store"].as_str()),
        (Some(3), Some(3), Some("sqlite"))
    );
    assert!(s["node"].as_str().is_some_and(|n| !n.is_empty()) && s["uptime_s"].is_i64(), "{s}");

    // Devices: filtered by selector, paged by id.
    let (_, page) = http.get("/v1/devices?selector=tag:role%3Dweb").await;
    let ids: Vec<&str> = page["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["web-1", "web-2"]);
    let (_, first) = http.get("/v1/devices?limit=2").await;
    assert_eq!(first["devices"].as_array().unwrap().len(), 2);
    assert_eq!(first["next"], "web-1", "{first}");
    let (_, second) = http.get("/v1/devices?limit=2&after=web-1").await;
    assert_eq!(second["devices"][0]["id"], "web-2");
    assert!(second["next"].is_null(), "{second}");
    let (status, one) = http.get("/v1/devices/db-1").await;
    assert_eq!((status, one["id"].as_str()), (StatusCode::OK, Some("db-1")), "{one}");
    let (status, missing) = http.get("/v1/devices/nope").await;
    assert_eq!((status, missing["code"].as_str()), (StatusCode::NOT_FOUND, Some("device_not_found")));

    // A job waited for: results as `orb send --json` prints them, and the summary.
    let (status, done) = http
        .post("/v1/jobs", json!({"target": "tag:role=web", "command": "echo", "args": {"n": 1}, "wait": "5s"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let results = done["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["status"], "ok");
    assert_eq!(results[0]["result"], json!({"n": 1}));
    assert_eq!(done["summary"]["summary"]["ok"], 2, "{done}");
    let job = done["job"].as_str().unwrap().to_owned();
    // The same job in the history, as the CLI reads it.
    let (status, shown) = http.get(&format!("/v1/jobs/{}", &job[..8])).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["job"]["id"], job.as_str());
    let (_, listed) = http.get("/v1/jobs?limit=5").await;
    assert_eq!(listed[0]["id"], job.as_str(), "{listed}");

    // Without waiting: 202 and the accepted job; cancelled while it runs.
    let (status, accepted) = http.post("/v1/jobs", json!({"target": "db-1", "command": "hang", "wait": null})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["targets"], json!(["db-1"]));
    let id = accepted["job"].as_str().unwrap();
    let (status, cancelled) = http.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");

    // Publish, retained: an operator's subscription sees it.
    let op = server.operator(Transport::Tcp).await;
    let mut sub = op.subscribe("cfg.>", WAIT).await.unwrap();
    let (status, published) = http.post("/v1/publish", json!({"topic": "cfg.rate", "body": 30, "retain": true})).await;
    assert_eq!(
        (status, published["delivered"].as_u64(), published["retained"].as_bool()),
        (StatusCode::OK, Some(1), Some(true))
    );
    let m = orb_testkit::within("the publication", sub.next()).await.unwrap();
    assert_eq!((m.topic.as_str(), &m.body[..]), ("cfg.rate", &b"30"[..]));
    let (status, refused) = http.post("/v1/publish", json!({"topic": "$orb.x", "body": 1})).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
}

#[tokio::test]
async fn schedules_are_created_paused_resumed_and_deleted() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let _agent = server.agent(Transport::Tcp, "web-1", &[], basic_handlers()).await;
    let (status, created) = http
        .post("/v1/schedules", json!({"target": "web-1", "command": "ping", "spec": {"kind": "every", "every_ms": 3_600_000, "anchor": "2026-01-01T00:00:00Z"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (_, listed) = http.get("/v1/schedules").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (status, paused) = http.post(&format!("/v1/schedules/{id}/pause"), json!(null)).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert!(!paused["paused_at"].is_null(), "{paused}");
    let (status, _) = http.post(&format!("/v1/schedules/{id}/resume"), json!(null)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = http.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = http.delete(&format!("/v1/schedules/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, gone) = http.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!((status, gone["code"].as_str()), (StatusCode::NOT_FOUND, Some("schedule_not_found")));
    // A zone the server does not know is refused, nothing stored.
    let mars =
        json!({"target": "web-1", "command": "ping", "spec": {"kind": "cron", "expr": "@daily", "tz": "Mars/Olympus"}});
    let (status, refused) = http.post("/v1/schedules", mars).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_schedule")), "{refused}");
    assert!(refused["message"].as_str().unwrap().starts_with("unknown_zone: "), "{refused}");
    let (_, listed) = http.get("/v1/schedules").await;
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
}

#[tokio::test]
async fn events_stream_publications_as_server_sent_events() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let op = server.operator(Transport::Tcp).await;
    op.publish_retained("cfg.rate", bytes::Bytes::from_static(b"30"), WAIT).await.unwrap();
    let url = format!("{}/v1/events?pattern=cfg.%3E", http.base);
    let mut resp = reqwest::Client::new().get(&url).bearer_auth(&http.token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // Reads events until `n` data lines came; each is one JSON object.
    let mut text = String::new();
    let mut events = Vec::new();
    let mut read = async |n: usize, events: &mut Vec<Value>| {
        while events.len() < n {
            let chunk = orb_testkit::within("an event", resp.chunk()).await.unwrap().expect("the stream is open");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    assert!(block.contains("event: pub"), "{block}");
                    events.push(serde_json::from_str(data).unwrap());
                }
            }
        }
    };
    read(1, &mut events).await;
    assert_eq!(events[0], json!({"topic": "cfg.rate", "from": op.welcome().id, "body": 30, "retained": true}));
    op.publish("cfg.mode", bytes::Bytes::from_static(br#"{"a":["x","y"]}"#), WAIT).await.unwrap();
    read(2, &mut events).await;
    assert_eq!(events[1]["body"], json!({"a": ["x", "y"]}));
    assert_eq!(events[1]["retained"], false);
    assert_eq!(server.server.broker().subscriptions(), 1);
    drop(resp);
    // The client went away: its subscription ends.
    for _ in 0..500 {
        if server.server.broker().subscriptions() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(server.server.broker().subscriptions(), 0);
}

#[tokio::test]
async fn events_over_a_websocket_need_the_token_and_carry_presence() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let server = TestServer::start().await;
    let http = Http::new(&server);
    let url = format!("ws://{}/v1/events/ws?pattern=%24orb.presence.%3E", server.server.http_addr());
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(refused.is_err(), "no token, no upgrade");
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", http.token).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let _agent = server.agent(Transport::Tcp, "gw-1", &[], basic_handlers()).await;
    let message = orb_testkit::within("a presence event", ws.next()).await.unwrap().unwrap();
    let v: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(
        (v["topic"].as_str(), v["body"]["status"].as_str()),
        (Some("$orb.presence.gw-1"), Some("online")),
        "{v}"
    );
}

/// `GET /v1/openapi.json`: public, OpenAPI 3.1; every operation it lists is served and answers
/// only statuses it documents; the server's limits are in it, follow a reload and are enforced.
#[tokio::test]
async fn the_openapi_document_is_public_complete_and_holds_the_limits() {
    use std::time::Duration;

    let server = TestServer::start_with(
        |c| {
            c.limits.max_deadline = Duration::from_secs(90);
            c.limits.max_ttl = Duration::from_secs(600);
        },
        |b| b,
    )
    .await;
    let http = Http::new(&server);
    let resp = http.client.get(format!("{}/v1/openapi.json", http.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "no token needed");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);

    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let url = format!("{}{}", http.base, path.replace("{id}", "nothing-here"));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = http.client.request(method.clone(), &url).bearer_auth(&http.token);
            if op.get("requestBody").is_some() {
                req = req.json(&json!({}));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            assert!(
                op["responses"].get(status.as_str()).is_some(),
                "{method} {path} answered {status}, which its documentation does not list"
            );
            if path == "/v1/events" {
                assert_eq!(status, StatusCode::OK);
                continue; // a stream that never ends; dropping it ends the subscription
            }
            if path == "/metrics" {
                assert_eq!(status, StatusCode::OK);
                assert!(resp.text().await.unwrap().contains("orb_"), "the Prometheus text");
                continue;
            }
            let body: Value = resp.json().await.unwrap();
            assert_ne!(body["code"], "not_found", "{method} {path} is served: {body}");
        }
    }
    assert_eq!(operations, 23);
    let (status, body) = http.get("/v1/not-documented").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    let schemas = &doc["components"]["schemas"];
    let wait = &schemas["NewJob"]["properties"]["wait"];
    assert!(wait["description"].as_str().unwrap().contains("At most 1m 30s on this server"), "{wait}");
    assert_eq!(schemas["NewJob"]["properties"]["ttl"]["maxLength"], 64);
    assert_eq!(schemas["NewSchedule"]["properties"]["deadline_ms"]["maximum"], 90_000);
    assert_eq!(schemas["NewSchedule"]["properties"]["ttl_ms"]["maximum"], 600_000);
    let body = &doc["paths"]["/v1/jobs"]["post"]["requestBody"]["description"];
    let max_frame = server.server.broker().limits().max_frame;
    assert!(body.as_str().unwrap().starts_with(&format!("At most {max_frame} bytes")), "{body}");

    let every = json!({"kind": "every", "every_ms": 60_000, "anchor": "2026-01-01T00:00:00Z"});
    for (path, body, says) in [
        ("/v1/jobs", json!({"target": "*", "command": "ping", "wait": "91s"}), "limits.max_deadline of 1m 30s"),
        ("/v1/jobs", json!({"target": "*", "command": "ping", "ttl": "601s"}), "limits.max_ttl of 10m"),
        ("/v1/jobs", json!({"target": "*", "command": "ping", "wait": "1".repeat(65)}), "longer than 64 characters"),
        (
            "/v1/schedules",
            json!({"target": "*", "command": "ping", "spec": every, "deadline_ms": 90_001}),
            "limits.max_deadline of 90000 ms",
        ),
        ("/v1/schedules", json!({"target": "*", "command": "ping", "spec": every, "ttl_ms": 600_001}), "max_ttl"),
    ] {
        let (status, refused) = http.post(path, body.clone()).await;
        assert_eq!((status, refused["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{body}");
        assert!(refused["message"].as_str().unwrap().contains(says), "{refused}");
    }
    // At the maximum: not refused for its length (no device matches `*` here).
    let (status, body) = http.post("/v1/jobs", json!({"target": "*", "command": "ping", "wait": "90s"})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("no_match")), "{body}");

    // A reload's limits are the document's at once.
    let mut limits = (*server.server.broker().limits()).clone();
    limits.max_deadline = Duration::from_secs(120);
    server.server.broker().set_limits(limits);
    let (_, doc) = http.get("/v1/openapi.json").await;
    assert_eq!(doc["components"]["schemas"]["NewSchedule"]["properties"]["deadline_ms"]["maximum"], 120_000);
    let (status, body) = http.post("/v1/jobs", json!({"target": "*", "command": "ping", "wait": "91s"})).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("no_match")), "{body}");
}

/// CORS is off by default; `[http] cors_origins` lets exactly the listed origins' pages call the
/// API (preflight answered, responses marked), and a reload changes the list at once.
#[tokio::test]
async fn cors_allows_exactly_the_configured_origins() {
    let server =
        TestServer::start_with(|cfg| cfg.http_options.cors_origins = vec!["http://app.example".into()], |b| b).await;
    let http = Http::new(&server);
    let allowed = |origin: &'static str| {
        let req = http
            .client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/status", http.base))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization");
        async move {
            let resp = req.send().await.unwrap();
            resp.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(allowed("http://app.example").await.as_deref(), Some("http://app.example"));
    assert_eq!(allowed("http://evil.example").await, None);
    let resp = http
        .client
        .get(format!("{}/v1/status", http.base))
        .bearer_auth(&http.token)
        .header("origin", "http://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "http://app.example");

    let cfg = orb_server::ServerConfig::for_tests(server.data.path().to_path_buf());
    assert!(cfg.http_options.cors_origins.is_empty());
    server.server.reload(cfg).unwrap();
    assert_eq!(allowed("http://app.example").await, None, "a reload applies at once");
}

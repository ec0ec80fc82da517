//! The dashboard over plain HTTP (issue 14), without a browser: the sign-in exchanges the admin
//! token for an `HttpOnly; SameSite=Strict` session cookie (a wrong token gets the form again
//! with `401`); the cookie reads the `/ui/` fragments and the API's `GET` endpoints but never
//! changes anything through the API; a send from another origin is refused; signing out ends
//! the session; the page and its assets are public, the fragments are not.
#![allow(clippy::unwrap_used)]

use orb_testkit::{TestServer, Transport, WAIT, basic_handlers};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Signs in with `token`; the session cookie (`orb_session=...`) on success.
async fn sign_in(http: &reqwest::Client, base: &str, token: &str) -> Result<String, (StatusCode, String)> {
    let resp = http.post(format!("{base}/login")).form(&[("token", token)]).send().await.unwrap();
    let status = resp.status();
    let cookie = resp.headers().get(SET_COOKIE).map(|c| c.to_str().unwrap().to_owned());
    if status == StatusCode::SEE_OTHER {
        assert_eq!(resp.headers().get(LOCATION).unwrap(), "/");
        let cookie = cookie.expect("a session cookie");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        assert!(!cookie.contains(token), "the cookie is not the token");
        Ok(cookie.split(';').next().unwrap().to_owned())
    } else {
        Err((status, resp.text().await.unwrap()))
    }
}

#[tokio::test]
async fn sign_in_reads_with_the_cookie_and_sign_out_ends_it() {
    let server = TestServer::start().await;
    let _agent = server.agent(Transport::Tcp, "web-1", &[("role", "web")], basic_handlers()).await;
    let base = format!("http://{}", server.server.http_addr());
    let http = client();

    // Public: the sign-in page and the assets.
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("name=\"token\""));
    for (asset, kind) in [("app.css", "text/css"), ("app.js", "text/javascript"), ("htmx.min.js", "text/javascript")] {
        let resp = http.get(format!("{base}/assets/{asset}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{asset}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(kind), "{asset}");
    }
    assert_eq!(http.get(format!("{base}/assets/nope.js")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // Not public: the fragments send a browser back to the sign-in page.
    let resp = http.get(format!("{base}/ui/devices")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["hx-redirect"], "/");

    // A wrong token: the form again, with why.
    let (status, body) = sign_in(&http, &base, "wrong").await.unwrap_err();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("role=\"alert\""), "{body}");
    // The agent token is no admin.
    let agent_token = server.server.agent_token().expose().to_owned();
    assert!(sign_in(&http, &base, &agent_token).await.is_err());

    let token = server.server.admin_token().expose().to_owned();
    let cookie = sign_in(&http, &base, &token).await.unwrap();
    let get = |path: &str| http.get(format!("{base}{path}")).header(COOKIE, &cookie).send();

    let page = get("/").await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"devices\"") && !page.contains(&token), "the dashboard, never the token");
    let devices = get("/ui/devices").await.unwrap().text().await.unwrap();
    assert!(devices.contains("data-device=\"web-1\" data-state=\"online\""), "{devices}");
    let preview = get("/ui/preview?target=tag:role%3Dweb").await.unwrap().text().await.unwrap();
    assert!(preview.contains("<strong>1</strong>") && preview.contains("web-1"), "{preview}");
    let preview = get("/ui/preview?target=(").await.unwrap().text().await.unwrap();
    assert!(preview.contains("bad_selector"), "{preview}");

    // The cookie reads the API ...
    let status = get("/v1/status").await.unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    // ... but changes nothing through it: that takes the bearer token.
    let resp = http
        .post(format!("{base}/v1/jobs"))
        .header(COOKIE, &cookie)
        .json(&serde_json::json!({"target": "*", "command": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A send from the page's origin runs; one from another origin does not.
    let send = |origin: String| {
        http.post(format!("{base}/ui/send"))
            .header(COOKIE, &cookie)
            .header("origin", origin)
            .form(&[("target", "web-1"), ("command", "echo"), ("args", "[1,2]"), ("wait", "5s")])
            .send()
    };
    let refused = send("http://evil.example".to_owned()).await.unwrap().text().await.unwrap();
    assert!(refused.contains("forbidden"), "{refused}");
    let sent = send(base.clone()).await.unwrap().text().await.unwrap();
    assert!(sent.contains("echo") && sent.contains("web-1"), "{sent}");
    let jobs = get("/ui/jobs").await.unwrap().text().await.unwrap();
    assert!(jobs.contains("echo"), "{jobs}");
    assert!(!refused.contains("Job "), "the refused send made no job");

    // Signing out ends the session on the server, not only in the browser.
    let resp = http.post(format!("{base}/logout")).header(COOKIE, &cookie).send().await.unwrap();
    assert!(resp.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(get("/ui/devices").await.unwrap().status(), StatusCode::SEE_OTHER);
    assert_eq!(get("/v1/status").await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_sign_in_from_another_site_is_refused() {
    let server = TestServer::start().await;
    let base = format!("http://{}", server.server.http_addr());
    let token = server.server.admin_token().expose().to_owned();
    let resp = client()
        .post(format!("{base}/login"))
        .header("origin", "http://evil.example")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn the_device_table_shows_each_devices_latest_cpu_and_memory() {
    let server = TestServer::start().await;
    let agent = server.agent(Transport::Tcp, "web-1", &[], basic_handlers()).await;
    let _quiet = server.agent(Transport::Tcp, "web-2", &[], basic_handlers()).await;
    let sample = r#"{"cpu_percent": 12.4, "memory": {"total_bytes": 8375186227, "used_bytes": 1288490189}}"#;
    agent.publish("telemetry.web-1.sys", bytes::Bytes::from_static(sample.as_bytes()), WAIT).await.unwrap();
    let base = format!("http://{}", server.server.http_addr());
    let http = client();
    let cookie = sign_in(&http, &base, server.server.admin_token().expose()).await.unwrap();
    let devices = http.get(format!("{base}/ui/devices")).header(COOKIE, &cookie).send().await.unwrap();
    let devices = devices.text().await.unwrap();
    assert!(devices.contains("<th>System</th>"), "{devices}");
    let row = |id: &str| {
        let start = devices.find(&format!("data-device=\"{id}\"")).unwrap_or_else(|| panic!("{id}: {devices}"));
        devices[start..].split("</tr>").next().unwrap().to_owned()
    };
    assert!(row("web-1").contains("12% · 1.2/7.8 GiB"), "{}", row("web-1"));
    assert!(row("web-2").ends_with("<td>—</td>"), "no telemetry: {}", row("web-2"));
}

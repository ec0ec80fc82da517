//! The dashboard in a real browser (issue 14): headless Chromium driven through ChromeDriver
//! (WebDriver, `fantoccini`) against a real server with agents on loopback. It signs in with the
//! admin token, sees the agents, sees one go offline without a reload, sends a command from the
//! form with the live preview, sees its per-device results, and saves a screenshot under
//! `target/tmp/`. Without `chromium` and `chromedriver` the test says it was skipped, except
//! under `CI=true`, where their absence fails it.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use orb_testkit::{TestServer, Transport, basic_handlers, within};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the page gets to show something before the test gives up.
const PAGE_WAIT: Duration = Duration::from_secs(20);

fn tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    candidates.iter().map(PathBuf::from).chain(on_path).find(|p| p.is_file())
}

/// ChromeDriver on a port it picks itself, and the URL it listens on.
async fn chromedriver(path: &PathBuf) -> (Child, String) {
    let mut child = Command::new(path)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = within("chromedriver's port", async {
        loop {
            let line = lines.next_line().await.unwrap().expect("chromedriver said which port it took");
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').trim().parse::<u16>().unwrap();
            }
        }
    })
    .await;
    // Keep reading so ChromeDriver never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://127.0.0.1:{port}"))
}

async fn browser(webdriver: &str, chromium: &PathBuf) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--no-first-run", "--no-default-browser-check"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps).connect(webdriver).await.expect("a browser session")
}

/// Waits until `selector` matches an element whose text contains `text`.
async fn sees(page: &Client, selector: &str, text: &str) {
    let found = tokio::time::timeout(PAGE_WAIT, async {
        loop {
            if let Ok(elements) = page.find_all(Locator::Css(selector)).await {
                for e in elements {
                    if e.text().await.is_ok_and(|t| t.contains(text)) {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if found.is_err() {
        let html = page.source().await.unwrap_or_default();
        panic!("the page never showed {text:?} in {selector}; it holds:\n{html}");
    }
}

#[tokio::test]
async fn a_person_watches_the_fleet_and_sends_a_command() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let (Some(chromium), Some(driver)) = (
        tool("chromium", &["/usr/bin/chromium", "/usr/bin/chromium-browser"]),
        tool("chromedriver", &["/usr/bin/chromedriver"]),
    ) else {
        assert!(!ci, "CI=true needs chromium and chromedriver (apt-get install -y chromium chromium-driver)");
        eprintln!("skipped: chromium or chromedriver is not installed (apt-get install -y chromium chromium-driver)");
        return;
    };

    let server = TestServer::start().await;
    let web1 = server.agent(Transport::Tcp, "web-1", &[("role", "web")], basic_handlers()).await;
    let _web2 = server.agent(Transport::Ws, "web-2", &[("role", "web")], basic_handlers()).await;
    let _db1 = server.agent(Transport::Tcp, "db-1", &[("role", "db")], basic_handlers()).await;
    let base = format!("http://{}", server.server.http_addr());

    let (_driver, webdriver) = chromedriver(&driver).await;
    let page = browser(&webdriver, &chromium).await;
    page.goto(&format!("{base}/")).await.unwrap();

    // A wrong token is refused on the page; the right one signs in.
    page.find(Locator::Css("#token")).await.unwrap().send_keys("not-the-token").await.unwrap();
    page.find(Locator::Css("form button")).await.unwrap().click().await.unwrap();
    sees(&page, "p.error", "").await;
    let token = server.server.admin_token().expose().to_owned();
    page.find(Locator::Css("#token")).await.unwrap().send_keys(&token).await.unwrap();
    page.find(Locator::Css("form button")).await.unwrap().click().await.unwrap();
    assert!(!page.current_url().await.unwrap().as_str().contains(&token), "the token never goes in a URL");

    // The devices, and the event feed live.
    sees(&page, "#devices tr[data-state=online]", "web-1").await;
    sees(&page, "#devices tr[data-state=online]", "web-2").await;
    sees(&page, "#devices tr[data-state=online]", "db-1").await;
    sees(&page, "#feed-state", "live").await;

    // One goes offline: the page shows it without a reload.
    web1.close().await;
    server.wait_until_gone("web-1").await;
    sees(&page, "#devices tr[data-state=offline]", "web-1").await;
    sees(&page, "#feed li", "web-1 is offline").await;

    // The form: the preview follows the selector, the send shows per-device results.
    let target = page.find(Locator::Css("#target")).await.unwrap();
    target.clear().await.unwrap();
    target.send_keys("tag:role=web").await.unwrap();
    sees(&page, "#preview", "Matches 2 devices").await;
    let command = page.find(Locator::Css("#command")).await.unwrap();
    command.clear().await.unwrap();
    command.send_keys("echo").await.unwrap();
    page.find(Locator::Css("#args")).await.unwrap().send_keys("{\"hello\": \"page\"}").await.unwrap();
    page.find(Locator::Css("#send button")).await.unwrap().click().await.unwrap();
    sees(&page, "#job-detail .job[data-ended] tr[data-status=ok]", "web-2").await;
    sees(&page, "#job-detail .job[data-ended] tr[data-status=offline]", "web-1").await;
    sees(&page, "#job-detail .job[data-ended]", "hello").await;
    sees(&page, "#jobs", "echo").await;

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shot = page.screenshot().await.unwrap();
    let path = dir.join("dashboard.png");
    std::fs::write(&path, shot).unwrap();
    eprintln!("screenshot: {}", path.display());

    // Signing out ends the session: the page asks for the token again.
    page.find(Locator::Css("header form button")).await.unwrap().click().await.unwrap();
    within("the sign-in page", async { sees(&page, "main.login", "Token").await }).await;
    page.close().await.unwrap();
}

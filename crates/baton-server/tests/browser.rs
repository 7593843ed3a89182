//! End to end in a real browser: headless Chromium, driven through
//! chromedriver by fantoccini, against the server on a free port. The page
//! sends a message on a delegation tree, shows the tree grow until every
//! task is green, then cancels a running task and shows it cancelled.
//! Screenshots land in `$CARGO_TARGET_DIR/baton-server-e2e/` (or
//! `target/baton-server-e2e/`).
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test
//! says so and passes, unless `BATON_REQUIRE_BROWSER=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use baton_server::{serve, ServerConfig};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// The chromedriver process, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, from `BATON_CHROMIUM` / `BATON_CHROMEDRIVER`
/// or the `PATH`.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("BATON_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| which("chromium"))
        .or_else(|| which("chromium-browser"))?;
    let driver = std::env::var_os("BATON_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| which("chromedriver"))?;
    Some((chromium, driver))
}

async fn start_driver(path: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on port {port}");
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("baton-server-e2e");
    std::fs::create_dir_all(&dir).expect("the artifact directory");
    dir
}

async fn count(client: &Client, css: &str) -> usize {
    client
        .find_all(Locator::Css(css))
        .await
        .map(|v| v.len())
        .unwrap_or(0)
}

/// Polls until `css` matches at least `n` elements (at most 30 s);
/// returns every count seen along the way.
async fn wait_count(client: &Client, css: &str, n: usize) -> Vec<usize> {
    let mut seen = Vec::new();
    for _ in 0..300 {
        let c = count(client, css).await;
        seen.push(c);
        if c >= n {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shot = client.screenshot().await.unwrap_or_default();
    let _ = std::fs::write(artifacts().join("failure.png"), shot);
    panic!("`{css}` never matched {n} elements (saw {seen:?}); see failure.png");
}

#[actix_rt::test]
async fn the_page_shows_the_tree_grow_finish_and_a_task_cancelled() {
    let Some((chromium, driver_path)) = browser() else {
        let msg = "chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)";
        if std::env::var("BATON_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("{msg}, and BATON_REQUIRE_BROWSER=1");
        }
        eprintln!("SKIPPED the browser test: {msg}");
        return;
    };
    capture_logs();
    let server = serve(
        ServerConfig::ephemeral(),
        factory(Duration::from_millis(600)),
    )
    .await
    .expect("the server starts");
    let driver = start_driver(&driver_path).await;

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1100"],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session");

    client.goto(&server.page_url()).await.unwrap();
    wait_count(&client, "#conn-state[data-state='live']", 1).await;
    let url = client.current_url().await.unwrap();
    assert!(
        !url.as_str().contains(server.token().expose()),
        "the page takes the token out of the address bar: {url}"
    );

    // A message on the tree: it grows, and every task turns green.
    let input = client.find(Locator::Id("message-input")).await.unwrap();
    input.send_keys("bees").await.unwrap();
    client
        .find(Locator::Id("send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let grew = wait_count(&client, ".task", 6).await;
    assert_eq!(
        grew.first(),
        Some(&0),
        "the tree grew from nothing: {grew:?}"
    );
    // The fetchers take 600 ms: they show as running first.
    wait_count(
        &client,
        ".task[data-source='fetcher'][data-status='running']",
        1,
    )
    .await;
    let green = wait_count(&client, ".task[data-status='succeeded']", 6).await;
    assert!(green.first() < Some(&6), "{green:?}");
    wait_count(&client, "#transcript li.assistant", 2).await;
    let transcript = client
        .find(Locator::Id("transcript"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(transcript.contains("bees"), "{transcript}");
    assert!(
        transcript.contains("lead: all 2 results are in"),
        "{transcript}"
    );
    assert_eq!(
        count(&client, ".tl-bar").await,
        6,
        "a timeline bar per task"
    );
    assert!(
        count(&client, ".tl-bar.critical").await >= 2,
        "a critical path"
    );
    let shot = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("tree-done.png"), shot).unwrap();

    // A second message whose fetchers never answer: cancel a researcher.
    let input = client.find(Locator::Id("message-input")).await.unwrap();
    input.send_keys("wait for wasps").await.unwrap();
    client
        .find(Locator::Id("send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_count(&client, ".task[data-status='running']", 6).await;
    let api = Api::new(&server);
    let convo = api.json("/v1/conversations").await["conversations"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tree = api.json(&format!("/v1/conversations/{convo}/tree")).await;
    let target = tree["children"][2]["task"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .find(Locator::Css(&format!(
            "button.cancel[data-task-id='{target}']"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_count(
        &client,
        &format!(".task[data-task-id='{target}'][data-status='cancelled']"),
        1,
    )
    .await;
    wait_count(
        &client,
        &format!(".task[data-task-id='{target}'] .task[data-status='cancelled']"),
        2,
    )
    .await;
    assert_eq!(
        count(&client, ".task[data-status='running']").await,
        3,
        "the other researcher and its two fetchers still run"
    );
    let shot = client.screenshot().await.unwrap();
    let path = artifacts().join("task-cancelled.png");
    std::fs::write(&path, shot).unwrap();
    eprintln!("screenshots in {}", path.parent().unwrap().display());

    // A conversation whose delegations wait for approval: approve one,
    // reject the other, from the page.
    let select = client.find(Locator::Id("agent-select")).await.unwrap();
    select.select_by_value("careful").await.unwrap();
    client
        .find(Locator::Id("new-conversation"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_count(&client, "#conn-state[data-state='live']", 1).await;
    let input = client.find(Locator::Id("message-input")).await.unwrap();
    input.send_keys("bees").await.unwrap();
    client
        .find(Locator::Id("send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_count(&client, ".task[data-status='awaiting_approval']", 2).await;
    let approve = client.find(Locator::Css("button.approve")).await.unwrap();
    let first = approve.attr("data-task-id").await.unwrap().unwrap();
    approve.click().await.unwrap();
    wait_count(&client, "button.reject", 1).await;
    client
        .find(Locator::Css("button.reject"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_count(&client, ".task[data-status='failed']", 1).await;
    wait_count(&client, ".task[data-status='succeeded']", 3).await;
    assert_eq!(
        count(
            &client,
            &format!(".task[data-task-id='{first}'][data-status='succeeded']")
        )
        .await,
        1
    );
    let shot = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("approvals.png"), shot).unwrap();

    client.close().await.unwrap();
    drop(driver);
    server.stop().await.unwrap();
    assert!(
        !logs().contains(api.token.as_str()),
        "the token is never logged"
    );
}

//! `baton serve --agents FILE`: the binary prints its URL and token, and
//! the API answers over real HTTP with that token only.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_prints_its_url_and_token_and_runs_the_agent_file() {
    let agents = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/chat_agents.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["serve", "--port", "0", "--agents"])
        .arg(&agents)
        .env_remove("BATON_SERVER_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let _child = Killed(child);
    let (mut base, mut token) = (String::new(), String::new());
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_else(|e| panic!("{e}"));
        if let Some(rest) = line.trim().strip_prefix("API:") {
            base = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        if let Some(rest) = line.trim().strip_prefix("token:") {
            token = rest.trim().to_owned();
            break;
        }
    }
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(token.len() >= 20, "a generated token: {token}");

    let http = reqwest::Client::new();
    let refused = http
        .get(format!("{base}/v1/conversations"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status(), 401);

    let created: serde_json::Value = http
        .post(format!("{base}/v1/conversations"))
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(created["agent"], "assistant", "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    http.post(format!("{base}/v1/conversations/{id}/messages"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "text": "honeybees" }))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{e}"));

    // The background task from the agent file's tool shows up in the tree.
    let mut tree = serde_json::Value::Null;
    for _ in 0..100 {
        tree = http
            .get(format!("{base}/v1/conversations/{id}/tree"))
            .bearer_auth(&token)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if tree["children"].as_array().is_some_and(|c| !c.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tree["text"]
            .as_str()
            .unwrap_or_default()
            .contains("deep_research"),
        "{tree}"
    );
}

//! `baton mock-llm` serves a script over real HTTP.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn mock_llm_serves_the_script() {
    let dir = std::env::temp_dir().join(format!("baton-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("script.json");
    std::fs::write(
        &script,
        r#"{"agents": [{"match": "weather", "turns": [{"fault": {"kind": "server_error"}}, {"text": "Sunny."}]}]}"#,
    )
    .expect("script written");
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["mock-llm", "--port", "0", "--script"])
        .arg(&script)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("baton runs");
    let stdout = child.stdout.take().expect("stdout");
    // Keep reading stdout open until the child is killed.
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next_line().await.expect("read").expect("a line");
    let url = first
        .strip_prefix("mock-llm listening on ")
        .expect("the URL is printed first")
        .to_string();
    let client = reqwest::Client::new();
    let body = serde_json::json!({"model": "m", "messages": [{"role": "system", "content": "weather bot"}]});
    let post = || {
        client
            .post(format!("{url}/v1/chat/completions"))
            .json(&body)
            .send()
    };
    assert_eq!(post().await.expect("sent").status().as_u16(), 500);
    let reply: serde_json::Value = post().await.expect("sent").json().await.expect("json");
    assert_eq!(reply["choices"][0]["message"]["content"], "Sunny.");
    child.kill().await.expect("killed");
}

#[test]
fn a_bad_script_fails_with_a_clear_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "mock-llm",
            "--port",
            "0",
            "--script",
            "/nonexistent/script.json",
        ])
        .output()
        .expect("baton runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the script /nonexistent/script.json"),
        "{err}"
    );
}

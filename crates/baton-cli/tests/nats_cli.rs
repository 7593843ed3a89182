//! `baton worker` and `baton run --nats` against a real nats-server: the
//! research scenario's researchers run in a worker process.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use baton_testkit::NatsServer;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn delegations_run_on_a_worker_process_and_their_results_come_back() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    let research = repo("examples/scenarios/research.toml");
    let _worker = Killed(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["worker", "--nats", server.url(), "--id", "w1", "--agents"])
            .arg(&research)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the worker: {e}")),
    );

    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "run",
            "--json",
            "--nats",
            server.url(),
            "--remote",
            "researcher",
        ])
        .arg(&research)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let finished: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "task_finished")
        .collect();
    // The three researchers ran remotely (their fetchers inside the worker),
    // so this conversation saw exactly their three tasks finish.
    assert_eq!(finished.len(), 3, "{finished:?}");
    assert!(
        finished
            .iter()
            .all(|e| e["outcome"]["status"] == "succeeded"),
        "{finished:?}"
    );
    let answer = events
        .iter()
        .rev()
        .find(|e| e["type"] == "assistant_message" && e["task"].is_null())
        .and_then(|e| e["text"].as_str())
        .unwrap_or_default();
    assert!(answer.starts_with("Report on honeybees."), "{answer}");
    for page in [
        "a page on how honeybees find flowers: an overview",
        "a page on how honeybees make honey: a recent paper",
        "a page on why honeybee colonies collapse: an overview",
    ] {
        assert!(answer.contains(page), "{page}: {answer}");
    }
}

#[test]
fn a_worker_for_an_unknown_agent_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "worker",
            "--nats",
            "nats://127.0.0.1:1",
            "--agent",
            "nobody",
            "--agents",
        ])
        .arg(repo("examples/scenarios/research.toml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no agent `nobody`; agents: fetcher, lead, researcher"),
        "{stderr}"
    );
}

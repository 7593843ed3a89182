//! [`NatsConfig`]: where tasks, results and state live, and how long
//! JetStream waits before it redelivers a task.

use std::time::Duration;

use baton_core::{AgentName, TaskId};

use crate::error::NatsError;

/// Streams, buckets and timings of one baton deployment on NATS. Every
/// orchestrator and worker of the deployment must use the same values.
///
/// | setting | default | what it does |
/// | --- | --- | --- |
/// | `prefix` | `baton` | subjects: `baton.tasks.<agent>`, `baton.results.<conversation>` |
/// | `tasks_stream` | `BATON_TASKS` | work-queue stream of delegated tasks (each task taken by one worker) |
/// | `results_stream` | `BATON_RESULTS` | stream of results (limits retention), kept so a restarted orchestrator drains what it missed |
/// | `results_max_age` | 7 days | how long results are kept for an orchestrator that is down |
/// | `dead_stream` | `BATON_DEAD` | work-queue stream capturing JetStream's MAX_DELIVERIES advisories for the tasks stream |
/// | `duplicate_window` | 2 min | JetStream de-duplication window of task and result ids |
/// | `task_bucket` | `baton_tasks` | KV: each task's state, changed only by compare-and-set |
/// | `worker_bucket` | `baton_workers` | KV: live workers and their load, expiring after 3 heartbeats |
/// | `ack_wait` | 30 s | a task not acked (or progress-acked) within this is redelivered |
/// | `max_deliver` | 5 | deliveries before a task that keeps failing ends as Failed |
/// | `heartbeat` | 5 s | how often workers refresh their entry |
/// | `worker_concurrency` | 64 | tasks one worker runs at once |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// The server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The first token of every subject.
    pub prefix: String,
    /// The work-queue stream of tasks.
    pub tasks_stream: String,
    /// The stream of results.
    pub results_stream: String,
    /// How long results are kept.
    pub results_max_age: Duration,
    /// The stream that captures JetStream's MAX_DELIVERIES advisories for
    /// the tasks stream, so a task whose every delivery crashed its worker
    /// still ends as Failed, even when no orchestrator listened at the time.
    pub dead_stream: String,
    /// How long JetStream remembers a task or result id to drop a duplicate.
    pub duplicate_window: Duration,
    /// The KV bucket of task states.
    pub task_bucket: String,
    /// The KV bucket of live workers.
    pub worker_bucket: String,
    /// How long a delivery may go without an ack before it is redelivered.
    pub ack_wait: Duration,
    /// How many deliveries a task gets.
    pub max_deliver: i64,
    /// How often a worker refreshes its entry in the worker bucket.
    pub heartbeat: Duration,
    /// How many tasks one worker runs at once.
    pub worker_concurrency: usize,
}

impl NatsConfig {
    /// The defaults above, for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "baton".into(),
            tasks_stream: "BATON_TASKS".into(),
            results_stream: "BATON_RESULTS".into(),
            results_max_age: Duration::from_secs(7 * 24 * 3600),
            dead_stream: "BATON_DEAD".into(),
            duplicate_window: Duration::from_secs(120),
            task_bucket: "baton_tasks".into(),
            worker_bucket: "baton_workers".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            heartbeat: Duration::from_secs(5),
            worker_concurrency: 64,
        }
    }

    /// The subject tasks for `agent` are published on.
    pub fn task_subject(&self, agent: &AgentName) -> Result<String, NatsError> {
        Ok(format!("{}.tasks.{}", self.prefix, token(agent.as_str())?))
    }

    /// The subject results for `conversation` are published on.
    pub fn result_subject(&self, conversation: &str) -> Result<String, NatsError> {
        Ok(format!("{}.results.{}", self.prefix, token(conversation)?))
    }

    /// The core-NATS subject a task's cancellation is announced on (the
    /// task bucket stays the source of truth).
    pub fn cancel_subject(&self, conversation: &str, task: TaskId) -> Result<String, NatsError> {
        Ok(format!(
            "{}.cancel.{}.{task}",
            self.prefix,
            token(conversation)?
        ))
    }

    /// The subject JetStream announces, for the consumer of `agent`, a task
    /// that reached `max_deliver` deliveries without an ack.
    pub fn max_deliveries_subject(&self, agent: Option<&AgentName>) -> Result<String, NatsError> {
        let consumer = match agent {
            Some(agent) => self.worker_consumer(agent)?,
            None => "*".to_owned(),
        };
        Ok(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{consumer}",
            token(&self.tasks_stream)?
        ))
    }

    /// The durable consumer the workers of `agent` share.
    pub fn worker_consumer(&self, agent: &AgentName) -> Result<String, NatsError> {
        Ok(format!("workers-{}", token(agent.as_str())?))
    }

    /// The KV key of one task's state.
    pub fn task_key(&self, conversation: &str, task: TaskId) -> Result<String, NatsError> {
        Ok(format!("{}.{task}", token(conversation)?))
    }
}

/// Checks that `name` can stand as one subject token.
pub(crate) fn token(name: &str) -> Result<&str, NatsError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(name)
    } else {
        Err(NatsError::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_keys_are_built_from_valid_tokens_only() {
        let c = NatsConfig::new("nats://127.0.0.1:4222");
        assert_eq!(
            c.task_subject(&"researcher".into()).unwrap(),
            "baton.tasks.researcher"
        );
        assert_eq!(c.result_subject("conv-1").unwrap(), "baton.results.conv-1");
        assert_eq!(
            c.task_key("conv-1", TaskId::new(3)).unwrap(),
            "conv-1.task-3"
        );
        assert!(matches!(
            c.task_subject(&"bad.name".into()),
            Err(NatsError::InvalidName(_))
        ));
        assert!(c.result_subject("").is_err());
        assert_eq!(
            c.max_deliveries_subject(None).unwrap(),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.BATON_TASKS.*"
        );
        assert_eq!(
            c.max_deliveries_subject(Some(&"echo".into())).unwrap(),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.BATON_TASKS.workers-echo"
        );
    }
}

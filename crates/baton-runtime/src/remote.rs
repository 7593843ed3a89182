//! Running sub-agents somewhere else: the [`RemoteExecutor`] extension
//! point. A sub-agent built with [`crate::AgentBuilder::remote`] is not
//! started as a local `ModelActor`; its delegated tasks go to the executor
//! (for example `baton-nats`, which hands them to workers over NATS
//! JetStream), and the outcome comes back as the same `TaskFinished`
//! message, so the delegating agent cannot tell the difference.

use actix::Recipient;
use baton_core::{AgentName, TaskId};
use serde::{Deserialize, Serialize};

use crate::messages::TaskFinished;
use crate::telemetry::RemoteTrace;

/// One delegated task, as handed to a remote executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteTask {
    /// The task's id in the delegating conversation.
    pub task_id: TaskId,
    /// The attempt (retries under supervision start new attempts).
    pub attempt: u32,
    /// The sub-agent to run.
    pub agent: AgentName,
    /// Its prompt.
    pub prompt: String,
    /// Where the task sits in the delegating conversation's trace, for
    /// the executor to send along (as W3C trace context) so that the
    /// process running it continues that trace
    /// ([`crate::telemetry::remote_task_span`]). `None` unless spans are
    /// exported (the `otel` feature with an OpenTelemetry layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<RemoteTrace>,
}

/// Runs delegated tasks outside this process.
pub trait RemoteExecutor: Send + Sync + 'static {
    /// Starts `task`. Its outcome must reach `report` as one
    /// [`TaskFinished`] carrying the same task id and attempt; a second
    /// report is ignored by the receiver.
    fn dispatch(&self, task: RemoteTask, report: Recipient<TaskFinished>);

    /// Asks whoever runs the task to stop it and everything it started.
    fn cancel(&self, task_id: TaskId);
}

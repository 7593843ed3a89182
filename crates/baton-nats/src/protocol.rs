//! What travels over NATS, and what the task bucket holds.

use baton_core::{AgentName, TaskId, TaskOutcome};
use serde::{Deserialize, Serialize};

/// A delegated task, published on `<prefix>.tasks.<agent>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// The conversation that delegated it; results go back to its subject.
    pub conversation: String,
    /// The task's id in that conversation.
    pub task_id: TaskId,
    /// The orchestrator's attempt (supervision retries start new ones).
    pub attempt: u32,
    /// The sub-agent to run.
    pub agent: AgentName,
    /// Its prompt.
    pub prompt: String,
}

/// A task's result, published on `<prefix>.results.<conversation>` with
/// the de-duplication id `<conversation>.<task>.<attempt>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultMessage {
    /// The conversation.
    pub conversation: String,
    /// The task.
    pub task_id: TaskId,
    /// The orchestrator's attempt this answers.
    pub attempt: u32,
    /// How it ended.
    pub outcome: TaskOutcome,
    /// The worker that ran it.
    pub worker: String,
}

/// Where a remote task is, as the task bucket records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteStatus {
    /// Published, not taken yet (or given back for another delivery).
    Pending,
    /// A worker runs it.
    Running,
    /// Finished; the outcome is in the entry.
    Done,
    /// The orchestrator asked for it to stop.
    CancelRequested,
}

/// One task's state in the task bucket. Every change is a compare-and-set
/// on the entry's revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// Where it is.
    pub status: RemoteStatus,
    /// The orchestrator's attempt.
    pub attempt: u32,
    /// The worker running it (or that ran it).
    pub worker: Option<String>,
    /// The JetStream delivery count when it was taken.
    pub delivery: u64,
    /// The outcome, once `Done`.
    pub outcome: Option<TaskOutcome>,
    /// Why the last delivery that failed was given back, if one was: kept
    /// so a task that later runs out of deliveries can say why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl TaskEntry {
    /// A freshly published attempt.
    pub fn pending(attempt: u32) -> Self {
        Self {
            status: RemoteStatus::Pending,
            attempt,
            worker: None,
            delivery: 0,
            outcome: None,
            last_error: None,
        }
    }
}

/// JetStream's advisory that a message reached its consumer's
/// `max_deliver` without an ack (`io.nats.jetstream.advisory.v1.max_deliver`,
/// on `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`).
/// Only the fields baton reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxDeliveriesAdvisory {
    /// The stream holding the message.
    pub stream: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// The message's sequence in the stream.
    pub stream_seq: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
}

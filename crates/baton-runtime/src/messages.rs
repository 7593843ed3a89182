//! The messages actors exchange: plain data, one struct per message.

use actix::Message as ActixMessage;
use baton_core::{History, Message, TaskId, TaskOutcome, TaskStatus};
use baton_llm::{ChatResponse, LlmError};

use crate::error::RuntimeError;

/// The user says something to the conversation.
#[derive(Debug, Clone, ActixMessage)]
#[rtype(result = "()")]
pub struct UserInput {
    /// The text.
    pub text: String,
}

/// Why a model request gave no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// The model (provider) returned an error.
    #[error(transparent)]
    Model(#[from] LlmError),
    /// The model's future panicked; the panic was contained.
    #[error("the model request panicked: {0}")]
    Panicked(String),
    /// A budget refused the request before it was sent.
    #[error(transparent)]
    Budget(#[from] baton_core::BudgetExceeded),
}

/// A model request finished: the reply of turn `turn`, or why there is none.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct ModelTurnDone {
    /// The turn this replies to; a stale turn's reply is ignored.
    pub turn: u64,
    /// The reply.
    pub result: Result<ChatResponse, TurnError>,
}

/// An inline tool call of turn `turn` finished.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct InlineToolDone {
    /// The turn whose call this answers.
    pub turn: u64,
    /// The call's position in the model's reply.
    pub index: usize,
    /// The tool message answering the call.
    pub answer: Message,
}

/// A task ended: sent to the agent that created it, by the task's worker or
/// by the future running a background tool.
#[derive(Debug, Clone, ActixMessage)]
#[rtype(result = "()")]
pub struct TaskFinished {
    /// The task.
    pub task_id: TaskId,
    /// The attempt that ended; a report from an attempt that is no longer
    /// current (it timed out, or was retried) is ignored.
    pub attempt: u32,
    /// How it ended.
    pub outcome: TaskOutcome,
}

/// Cancel one of the agent's own tasks (and everything under it).
#[derive(Debug, Clone, ActixMessage)]
#[rtype(result = "Result<TaskStatus, RuntimeError>")]
pub struct CancelTask {
    /// The task.
    pub task_id: TaskId,
    /// Who asked, for the record and the model.
    pub reason: String,
}

/// Approve or reject a task that waits for approval.
#[derive(Debug, Clone, ActixMessage)]
#[rtype(result = "Result<TaskStatus, RuntimeError>")]
pub struct Decide {
    /// The task.
    pub task_id: TaskId,
    /// `Ok(())` to let it run, `Err(reason)` to fail it.
    pub decision: Result<(), String>,
}

/// A worker got its slot in the tree's concurrency budget.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct SlotGranted {
    /// The slot; dropping it frees it.
    pub permit: tokio::sync::OwnedSemaphorePermit,
}

/// An attempt's time limit passed.
#[derive(Debug, Clone, ActixMessage)]
#[rtype(result = "()")]
pub struct AttemptTimedOut {
    /// The limit, in milliseconds.
    pub after_ms: u64,
}

/// Ask for a copy of the agent's history (an O(1) snapshot).
#[derive(Debug, Clone, ActixMessage)]
#[rtype(result = "History")]
pub struct GetHistory;

/// Resolve once the conversation is settled: no turn in flight, no queued
/// input, no running task, and (with a journal) everything written to it.
#[derive(Debug, Clone, ActixMessage)]
#[rtype(result = "Result<(), crate::RuntimeError>")]
pub struct WhenSettled;

/// Stop the agent: abort its model and tool calls and cancel its tasks,
/// or, when `suspend` is set, stop them without ending them (see
/// [`crate::Conversation::suspend`]).
#[derive(Debug, Clone, ActixMessage)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// Why, for the tasks that get cancelled.
    pub reason: String,
    /// Leave the tasks unfinished in the journal, to start again when the
    /// conversation is resumed from it, instead of cancelling them.
    pub suspend: bool,
}

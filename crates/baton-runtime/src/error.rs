//! The runtime's error type.

use baton_core::{TaskId, TaskStatus};

/// What can go wrong when talking to a running conversation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The conversation's actor has stopped (it was shut down).
    #[error("the conversation has stopped")]
    Stopped,
    /// No task has this id.
    #[error("no task `{0}`")]
    UnknownTask(TaskId),
    /// An agent was asked to steer a task it did not create.
    #[error("task `{0}` belongs to another agent")]
    NotOwned(TaskId),
    /// The journal did not take a record, so the input was not accepted.
    /// (Not returned any more: a journal keeps the records of a failed
    /// append, so `send_user` waits until the input is durable.)
    #[error("the journal did not take the input: {0}")]
    Journal(String),
    /// The task does not wait for approval (any more).
    #[error("task `{0}` is not awaiting approval (it is {1:?})")]
    NotAwaitingApproval(TaskId, TaskStatus),
}

impl From<actix::MailboxError> for RuntimeError {
    fn from(_: actix::MailboxError) -> Self {
        RuntimeError::Stopped
    }
}

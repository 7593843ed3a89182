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
    /// The conversation's journal is closed for good (its store stopped):
    /// nothing more can be made durable, so the conversation stopped and an
    /// input sent now is not accepted. (A passing journal failure is not an
    /// error: a journal keeps the records of a failed append, and
    /// `send_user` and `settled` wait until they are durable.)
    #[error("the conversation's journal is closed: {0}")]
    Journal(String),
    /// The task does not wait for approval (any more).
    #[error("task `{0}` is not awaiting approval (it is {1:?})")]
    NotAwaitingApproval(TaskId, TaskStatus),
}

impl From<baton_core::JournalError> for RuntimeError {
    /// A journal closed for good (the only journal error the API returns).
    fn from(e: baton_core::JournalError) -> Self {
        RuntimeError::Journal(e.message().to_owned())
    }
}

impl From<actix::MailboxError> for RuntimeError {
    fn from(_: actix::MailboxError) -> Self {
        RuntimeError::Stopped
    }
}

//! The runtime's error type.

use baton_core::TaskId;

/// What can go wrong when talking to a running conversation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The conversation's actor has stopped (it was shut down).
    #[error("the conversation has stopped")]
    Stopped,
    /// No task has this id.
    #[error("no task `{0}`")]
    UnknownTask(TaskId),
    /// The task belongs to a sub-agent, not to the conversation itself.
    #[error("task `{0}` was started by a sub-agent; cancel its parent task instead")]
    NotOwned(TaskId),
}

impl From<actix::MailboxError> for RuntimeError {
    fn from(_: actix::MailboxError) -> Self {
        RuntimeError::Stopped
    }
}

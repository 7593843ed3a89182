//! The error type of the NATS layer.

/// What can go wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The URL tried.
        url: String,
        /// The client's message.
        message: String,
    },
    /// A JetStream request (stream, consumer, KV, publish) failed.
    #[error("NATS JetStream {what} failed: {message}")]
    JetStream {
        /// What was being done.
        what: &'static str,
        /// The client's message.
        message: String,
    },
    /// A name cannot be used in a NATS subject or key.
    #[error("`{0}` cannot be used in a NATS subject: use letters, digits, `-` and `_`")]
    InvalidName(String),
    /// A worker was built without any agent to serve.
    #[error("a NATS worker needs at least one agent to serve")]
    NoAgents,
    /// A worker was given two agents of the same name.
    #[error("a NATS worker was given two agents named `{0}`")]
    DuplicateAgent(String),
    /// The worker's thread could not be started.
    #[error("cannot start the worker's thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The worker's thread ended without reporting (it panicked).
    #[error("the worker's thread ended without a report")]
    WorkerLost,
    /// A message on the wire did not parse.
    #[error("malformed {what}: {message}")]
    Malformed {
        /// What kind of message.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
}

impl NatsError {
    pub(crate) fn js(what: &'static str, error: impl std::fmt::Display) -> Self {
        NatsError::JetStream {
            what,
            message: error.to_string(),
        }
    }
}

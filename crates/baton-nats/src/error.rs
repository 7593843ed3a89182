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

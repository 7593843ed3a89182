//! The [`ChatModel`] trait: one request in, one assistant reply out.

use std::sync::Arc;

use baton_core::{AgentName, Message, ToolCall, ToolSpec, Usage};
use futures::future::BoxFuture;

/// One request to a model: the agent's history and the tools it may call.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The agent asking (scripted models pick their script by it).
    pub agent: AgentName,
    /// The conversation so far, system prompt first. Shared, not copied:
    /// building a request is O(1) however long the history.
    pub messages: Arc<Vec<Message>>,
    /// The tools offered for this turn.
    pub tools: Arc<Vec<ToolSpec>>,
}

impl ChatRequest {
    /// The system prompt, if the history starts with one.
    pub fn system_prompt(&self) -> Option<&str> {
        match self.messages.first() {
            Some(Message::System { content }) => Some(content),
            _ => None,
        }
    }
}

/// A model's reply: text, tool calls, or both, and the tokens it used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatResponse {
    /// The reply text, if any.
    pub content: Option<String>,
    /// The tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Tokens used.
    pub usage: Usage,
}

impl ChatResponse {
    /// The reply as an assistant history message.
    pub fn into_message(self) -> Message {
        Message::Assistant {
            content: self.content,
            tool_calls: self.tool_calls,
        }
    }
}

/// Why a model request produced no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// A scripted model has no more turns for this agent.
    #[error("the script has no more turns for agent `{agent}` (it was asked for turn {turn})")]
    ScriptExhausted {
        /// The agent whose script ran out.
        agent: AgentName,
        /// The turn asked for, from 1.
        turn: usize,
    },
    /// A failure a script asked for (fault injection).
    #[error("scripted failure: {0}")]
    Scripted(String),
    /// The provider answered with an error status.
    #[error("{provider} returned HTTP {status}: {message}")]
    Http {
        /// The provider (`openai`, `anthropic`, …).
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The provider's error message.
        message: String,
    },
    /// The request could not be sent or the reply could not be read.
    #[error("{provider} transport error: {message}")]
    Transport {
        /// The provider.
        provider: String,
        /// What failed.
        message: String,
    },
    /// The reply arrived but made no sense.
    #[error("{provider} sent an invalid response: {message}")]
    InvalidResponse {
        /// The provider.
        provider: String,
        /// What was wrong with it.
        message: String,
    },
    /// The request took longer than its limit.
    #[error("{provider} did not answer within {after_ms} ms")]
    Timeout {
        /// The provider.
        provider: String,
        /// The limit.
        after_ms: u64,
    },
}

/// A chat model: given an agent's history and tools, produce the next
/// assistant message.
///
/// The returned future is `'static` so the runtime can run it apart from
/// the actor that asked; dropping it must abort the request.
pub trait ChatModel: Send + Sync + 'static {
    /// A short name for logs and events (`scripted`, `openai:gpt-4o-mini`).
    fn name(&self) -> &str;

    /// Sends one request.
    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>>;
}

impl<M: ChatModel + ?Sized> ChatModel for Arc<M> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        (**self).complete(request)
    }
}

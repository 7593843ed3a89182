//! # baton-llm
//!
//! Chat models for baton.
//!
//! * [`chat_model`]: the [`ChatModel`] trait every provider implements, with
//!   its [`ChatRequest`], [`ChatResponse`] and [`LlmError`].
//! * [`scripted`]: [`ScriptedModel`], a deterministic model driven by a
//!   script of replies and tool calls per agent, so everything runs with no
//!   API key and tests are exact.
//! * [`openai`]: [`OpenAiChat`], the OpenAI Chat Completions API and every
//!   OpenAI-compatible server (Ollama, vLLM, llama.cpp, LM Studio), JSON or
//!   streamed over SSE.
//! * [`anthropic`]: [`AnthropicMessages`], the Anthropic Messages API
//!   (`tool_use` / `tool_result` blocks), JSON or streamed over SSE.
//! * [`http`]: [`HttpSettings`], the reliability shared by HTTP providers:
//!   one connection pool each, a concurrency limit, request and stream-idle
//!   timeouts, and retries.
//! * [`model_spec`]: [`ModelSpec`], model strings (`openai:gpt-4o-mini`,
//!   `anthropic:…`, `ollama:llama3.1`, `openai:MODEL@http://host/v1`,
//!   `scripted`) parsed in one place; [`model_from_str`] builds the model.
//! * [`retry`]: [`RetryPolicy`], exponential backoff with jitter honouring
//!   `Retry-After`; which statuses are retried.
//! * [`secret`]: [`ApiKey`], a key that never appears in `Debug` or errors.

pub mod anthropic;
pub mod chat_model;
pub mod http;
pub mod model_spec;
pub mod openai;
pub mod retry;
pub mod scripted;
pub mod secret;
mod sse;

pub use anthropic::{AnthropicMessages, AnthropicMessagesBuilder};
pub use chat_model::{ChatModel, ChatRequest, ChatResponse, LlmError};
pub use http::HttpSettings;
pub use model_spec::{model_from_env_or, model_from_str, ModelSpec, ModelSpecError, Provider};
pub use openai::{OpenAiChat, OpenAiChatBuilder};
pub use retry::RetryPolicy;
pub use scripted::{ScriptedModel, ScriptedTurn};
pub use secret::ApiKey;

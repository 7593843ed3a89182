//! # baton-llm
//!
//! Chat models for baton.
//!
//! * [`chat_model`]: the [`ChatModel`] trait every provider implements, with
//!   its [`ChatRequest`], [`ChatResponse`] and [`LlmError`].
//! * [`scripted`]: [`ScriptedModel`], a deterministic model driven by a
//!   script of replies and tool calls per agent, so everything runs with no
//!   API key and tests are exact.

pub mod chat_model;
pub mod scripted;

pub use chat_model::{ChatModel, ChatRequest, ChatResponse, LlmError};
pub use scripted::{ScriptedModel, ScriptedTurn};

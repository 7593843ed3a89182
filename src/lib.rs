//! # baton
//!
//! An actor-based multi-agent orchestrator for LLM agents: conversations
//! that never wait. A model's slow tool calls and delegated subtasks run in
//! the background; the user keeps talking, and results join the
//! conversation when they arrive.
//!
//! This facade re-exports the public API of the workspace crates:
//!
//! * [`core`] (`baton-core`): ids, messages, history, the [`Tool`] trait,
//!   the task registry and events.
//! * [`llm`] (`baton-llm`): the [`ChatModel`] trait and [`ScriptedModel`].
//! * [`runtime`] (`baton-runtime`): [`Agent`], [`Orchestrator`],
//!   [`Conversation`] and the actors.
//!
//! ```
//! use baton::{Agent, Orchestrator, ScriptedModel, ScriptedTurn};
//!
//! baton::runtime::virtual_time::block_on_paused(async {
//!     let model = ScriptedModel::new().script("assistant", [ScriptedTurn::text("Hello!")]);
//!     let convo = Orchestrator::start(Agent::builder("assistant").model(model).build());
//!     convo.send_user("Hi").await.unwrap();
//!     convo.settled().await.unwrap();
//!     assert_eq!(convo.history().await.unwrap().last_assistant_text(), Some("Hello!"));
//! });
//! ```

pub use baton_core as core;
pub use baton_llm as llm;
pub use baton_runtime as runtime;

pub use baton_core::{
    AgentName, Event, EventEnvelope, History, Message, TaskId, TaskOutcome, TaskRecord, TaskStatus,
    Tool, ToolCall, ToolError, ToolOutput,
};
pub use baton_llm::{ChatModel, ChatRequest, ChatResponse, LlmError, ScriptedModel, ScriptedTurn};
pub use baton_runtime::{Agent, Conversation, InputPolicy, Orchestrator, RuntimeError};

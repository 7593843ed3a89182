//! # baton-runtime
//!
//! The actors that run conversations and their delegation trees.
//!
//! * [`agent`]: [`Agent`], the description of one agent (model, prompt,
//!   inline and background tools, sub-agents).
//! * [`conversation`]: [`Orchestrator`] starts a conversation and returns a
//!   [`Conversation`] handle: send input, subscribe to events, check and
//!   cancel tasks, read history.
//! * [`agent_actor`]: the actor itself. [`OrchestratorActor`] is the
//!   conversation; each delegated subtask runs in a [`ModelActor`].
//! * [`turn_loop`]: [`TurnLoop`], the history and turn state as plain data,
//!   where the rules that keep history valid live.
//! * [`task_tools`]: the built-in `create_task`, `check_task`,
//!   `check_all_tasks` and `cancel_task`.
//! * [`supervision`]: [`Supervision`], timeouts, retries and backoff for
//!   the tasks an agent creates.
//! * [`remote`]: the [`RemoteExecutor`] extension point for sub-agents
//!   that run in other processes.
//! * [`role`]: what differs between the conversation and a worker.
//! * [`messages`]: the actor messages, plain data.
//! * [`error`]: the [`RuntimeError`] type.
//! * [`virtual_time`]: run actors on tokio's paused clock, for tests.
//! * [`telemetry`]: the tracing spans and how they link; with the `otel`
//!   feature, their export over OTLP.

pub mod agent;
pub mod agent_actor;
mod arbiter_pool;
pub mod conversation;
pub mod error;
pub mod messages;
pub mod remote;
pub mod role;
pub mod supervision;
pub mod task_tools;
pub mod telemetry;
pub mod turn_loop;
pub mod virtual_time;

pub use agent::{Agent, AgentBuilder, DEFAULT_TOOL_TIMEOUT};
pub use agent_actor::{AgentActor, InputPolicy, ModelActor, OrchestratorActor};
pub use conversation::{Conversation, Orchestrator};
pub use error::RuntimeError;
pub use remote::{RemoteExecutor, RemoteTask};
pub use supervision::Supervision;
pub use turn_loop::TurnLoop;

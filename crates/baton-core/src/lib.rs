//! # baton-core
//!
//! The vocabulary every other baton crate speaks. Nothing here does I/O:
//! these are plain data types and the few pure functions over them.
//!
//! * [`ids`]: [`TaskId`], [`AgentName`], [`CallId`] newtypes.
//! * [`message`]: the conversation [`Message`]s and [`ToolCall`]s, in a
//!   provider-neutral form that maps one to one onto the OpenAI tool protocol.
//! * [`history`]: [`History`], an ordered list of messages with a checker for
//!   the tool protocol (every tool call answered exactly once, in place).
//! * [`tool`]: the [`Tool`] trait (typed arguments, schema derived with
//!   `schemars`) and its object-safe form [`DynTool`].
//! * [`task_registry`]: the shared [`TaskRegistry`] of [`TaskRecord`]s that
//!   answers `check_task` without going through any mailbox.
//! * [`task_tree`]: [`TaskTree`], a snapshot of the delegation tree,
//!   rendered as text or as a compact shape for assertions.
//! * [`budget`]: [`Limits`] on depth, children, concurrency and tokens.
//! * [`journal`]: the [`Journal`] contract a durable store fulfils, and
//!   [`Replay`], which rebuilds a conversation from its records.
//! * [`event`]: every state change as a serde [`Event`], and the
//!   [`EventBus`] that broadcasts them.

pub mod budget;
pub mod event;
pub mod history;
pub mod ids;
pub mod journal;
pub mod message;
pub mod task_registry;
pub mod task_tree;
pub mod tool;

pub use budget::{BudgetExceeded, Limits};
pub use event::{Event, EventBus, EventEnvelope};
pub use history::{History, HistoryError};
pub use ids::{AgentName, CallId, TaskId};
pub use journal::{Journal, JournalError, JournalRecord, MemoryJournal, Replay};
pub use message::{Message, TaskOutcome, ToolCall, Usage};
pub use task_registry::{TaskKind, TaskRecord, TaskRegistry, TaskStatus};
pub use task_tree::{TaskNode, TaskTree};
pub use tool::{DynTool, Tool, ToolError, ToolOutput, ToolSpec};

//! # baton-testkit
//!
//! Tools for testing baton orchestrations.
//!
//! * [`tree_run`]: [`TreeRun`] plays a conversation (a delegation tree) on
//!   the scripted model and tokio's paused clock, then lets a test assert on
//!   the tree's shape and statuses, the answer, the events and the virtual
//!   time it took. The order in which concurrent completions arrive is set
//!   by the script's virtual latencies, so races are reproducible.
//! * [`mock_llm`]: [`MockLlmServer`], a real HTTP server on loopback that
//!   speaks the OpenAI Chat Completions and Anthropic Messages APIs (JSON
//!   and SSE), replies from a [`MockScript`] per agent, injects latency and
//!   faults, and records every request.
//! * [`postgres`]: [`PgSchema`], a schema of its own per test on the local
//!   PostgreSQL server, dropped at the end.
//! * [`nats_server`]: [`NatsServer`], a real `nats-server` with JetStream
//!   per test, on a free port.
//! * `otlp` (feature `otlp`): `OtlpReceiver`, a real OTLP/HTTP traces
//!   endpoint that keeps the spans it receives.

pub mod mock_llm;
pub mod nats_server;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod postgres;
pub mod tree_run;

pub use mock_llm::{Fault, MockLlmServer, MockScript, MockToolCall, MockTurn, RecordedRequest};
pub use nats_server::NatsServer;
pub use postgres::PgSchema;
pub use tree_run::{TreeAssert, TreeRun};

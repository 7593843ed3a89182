//! # baton-nats
//!
//! Remote workers over NATS JetStream, an existing engine: no home-made
//! cluster protocol.
//!
//! * [`config`]: [`NatsConfig`], the streams, buckets and timings, with the
//!   subjects derived from them.
//! * [`protocol`]: the messages on the wire ([`TaskMessage`],
//!   [`ResultMessage`]) and the per-task state kept in a KV bucket
//!   ([`TaskEntry`]); a task's W3C trace context travels as headers of
//!   its message ([`protocol::trace_headers`]), so that with the `otel`
//!   feature the worker's spans join the delegating conversation's trace.
//! * [`setup`]: creates (or binds to) the streams and buckets.
//! * [`executor`]: [`NatsExecutor`], the orchestrator's side: a
//!   `RemoteExecutor` that publishes delegated tasks to a JetStream
//!   work-queue stream (one subject per agent kind) and turns results into
//!   the same `TaskFinished` message as in-process workers; also ends, as
//!   `Failed`, tasks that ran out of deliveries (JetStream's MAX_DELIVERIES
//!   advisory, or a worker that left on the last delivery), and adopts the
//!   attempt in flight when a resumed conversation dispatches it again.
//! * [`worker`]: [`NatsWorker`], the worker's side: pulls tasks, runs each
//!   as a local conversation, keeps it alive with progress acks, publishes
//!   the result with a de-duplication id, then acks. Built with
//!   [`NatsWorker::builder`]; runs with `run`, `run_until` (a clean stop
//!   hands running tasks back) or `spawn` (its own thread and actix
//!   system); registers with a heartbeat, listed by [`NatsWorker::list`].
//! * [`board`]: [`TaskBoard`], the task bucket read from any machine.
//! * [`error`]: the [`NatsError`] type.
//!
//! Every change of a task's state is a compare-and-set on its KV revision,
//! so a late result from a worker presumed dead cannot overwrite the result
//! of the redelivered attempt, and a second result for a finished task is
//! ignored.

pub mod board;
pub mod config;
pub mod error;
pub mod executor;
pub mod protocol;
pub mod setup;
pub mod worker;

pub use board::TaskBoard;
pub use config::NatsConfig;
pub use error::NatsError;
pub use executor::NatsExecutor;
pub use protocol::{MaxDeliveriesAdvisory, RemoteStatus, ResultMessage, TaskEntry, TaskMessage};
pub use worker::{NatsWorker, NatsWorkerBuilder, WorkerHandle, WorkerInfo};

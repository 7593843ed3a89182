//! Tracing: the spans baton emits, how they link, and (with the `otel`
//! feature) their export over OTLP.
//!
//! Every agent runs in `tracing` spans that read as the delegation tree:
//!
//! * `agent{agent, task_id, parent, depth}`: one per agent, nested under
//!   the span of the agent that delegated to it, and *following from* the
//!   span of the turn whose `create_task` started it.
//! * `turn{turn}`: one model request and the tool calls it made, under its
//!   agent's span. It follows from the `task_result` spans whose results it
//!   reads.
//! * `tool{turn, index}`: an inline tool call, under its turn.
//! * `task{task_id, attempt}`: an attempt of a background tool, under its
//!   agent, following from the turn that called the tool.
//! * `task_result{task_id, attempt, outcome}`: the creating agent handling
//!   a task's report (`TaskFinished`), under that agent's span and
//!   following from the turn that created the task: a background result
//!   carries a link back to the work that asked for it.
//!
//! A turn's span stays open until the tasks it created have reported, so
//! that the links to it stay valid: in a trace viewer a turn that starts
//! background work lasts until that work is done.
//!
//! With the `otel` feature, [`otlp_layer`] builds a
//! `tracing-opentelemetry` layer that sends these spans to an OpenTelemetry
//! collector (or Jaeger, Tempo, …) over OTLP/HTTP with protobuf bodies;
//! parent spans become OpenTelemetry parents and `follows_from` relations
//! become span links. See `docs/tracing.md`.

use baton_core::TaskId;
use tracing::Span;

#[cfg(feature = "otel")]
mod otlp;
#[cfg(feature = "otel")]
pub use otlp::{init_otlp, otlp_layer, OtlpConfig, OtlpGuard, OtlpLayer, TelemetryError};

/// The spans a task keeps while it runs.
#[derive(Debug)]
pub(crate) struct TaskSpans {
    /// The span of the turn that created the task. Holding it keeps the
    /// span open, so that every attempt of the task, and its result, can
    /// follow from it (a closed span's id may be reused).
    pub(crate) started_by: Span,
    /// The span in which the task's final report was handled, for the turn
    /// that reads the result to follow from.
    pub(crate) result: Option<Span>,
}

impl Default for TaskSpans {
    /// No turn started the task (it was read back from a journal).
    fn default() -> Self {
        Self {
            started_by: Span::none(),
            result: None,
        }
    }
}

impl TaskSpans {
    /// The spans of a task created in the turn whose span is `turn`.
    pub(crate) fn started_in(turn: &Span) -> Self {
        Self {
            started_by: turn.clone(),
            result: None,
        }
    }
}

/// The span of an agent handling the report of one of its tasks: a child
/// of the agent's span, following from the turn that created the task.
pub(crate) fn task_result_span(
    agent: &Span,
    task_id: TaskId,
    attempt: u32,
    outcome: &'static str,
    spans: Option<&TaskSpans>,
) -> Span {
    let span = tracing::info_span!(
        parent: agent,
        "task_result",
        task_id = %task_id,
        attempt,
        outcome,
    );
    if let Some(spans) = spans {
        span.follows_from(&spans.started_by);
    }
    span
}

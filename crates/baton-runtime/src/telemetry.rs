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
//! * `task{task_id, attempt, tool}`: an attempt of a background tool, under
//!   its agent, following from the turn that called the tool.
//! * `task_result{task_id, attempt, outcome}`: the creating agent handling
//!   a task's report (`TaskFinished`), under that agent's span and
//!   following from the turn that created the task: a background result
//!   carries a link back to the work that asked for it.
//!
//! A turn's span stays open until the tasks it created have reported, so
//! that the links to it stay valid: in a trace viewer a turn that starts
//! background work lasts until that work is done.
//!
//! With the `otel` feature, `otlp_layer` builds a
//! `tracing-opentelemetry` layer that sends these spans to an OpenTelemetry
//! collector (or Jaeger, Tempo, …) over OTLP/HTTP with protobuf bodies;
//! parent spans become OpenTelemetry parents and `follows_from` relations
//! become span links; each span is named for the viewer (`lead`,
//! `researcher task-1`, `turn 2`, `result task-1`) through its `otel.name`
//! field, which is recorded only with the feature. See `docs/tracing.md`.
//!
//! Across processes, a [`RemoteTrace`] carries the W3C trace context of the
//! delegating agent's span (and of the turn that created the task) with a
//! [`crate::RemoteTask`]; the process that runs the task opens its
//! [`remote_task_span`] as a child of that context, so the remote
//! sub-agent's spans join the delegating conversation's trace. Without the
//! `otel` feature there is no context to send: [`RemoteTrace::of`] answers
//! `None` and [`remote_task_span`] makes an ordinary root span.

use baton_core::{AgentName, TaskId};
use serde::{Deserialize, Serialize};
use tracing::field;
use tracing::span::Id;
use tracing::Span;

#[cfg(feature = "otel")]
mod otlp;
#[cfg(feature = "otel")]
pub use otlp::{init_otlp, otlp_layer, OtlpConfig, OtlpGuard, OtlpLayer, TelemetryError};

/// The W3C trace context of one span (<https://www.w3.org/TR/trace-context/>),
/// as the `traceparent` and `tracestate` HTTP headers carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// `00-<trace id>-<span id>-<flags>`, in lowercase hex.
    pub traceparent: String,
    /// Vendor-specific trace state, if the span has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The header that carries [`TraceContext::traceparent`].
    pub const TRACEPARENT: &'static str = "traceparent";
    /// The header that carries [`TraceContext::tracestate`].
    pub const TRACESTATE: &'static str = "tracestate";

    /// The context of `span`, when it is exported through
    /// `otlp_layer` (the `otel` feature); `None` otherwise, or when the
    /// span is disabled.
    pub fn of(span: &Span) -> Option<Self> {
        #[cfg(feature = "otel")]
        {
            otlp::inject(span)
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = span;
            None
        }
    }
}

/// Where a task handed to another process sits in the delegating
/// process's trace: the remote work nests under `parent` and follows from
/// `started_by`, as a local sub-agent's span does (see [`remote_task_span`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteTrace {
    /// The delegating agent's span: the remote spans are its children.
    pub parent: TraceContext,
    /// The turn that created the task: the remote work links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<TraceContext>,
}

impl RemoteTrace {
    /// The trace of a task delegated by the agent whose span is `agent`,
    /// created in the turn whose span is `turn`; `None` when spans are not
    /// exported (without the `otel` feature, or with no OpenTelemetry
    /// layer installed), so that nothing is sent.
    pub fn of(agent: &Span, turn: &Span) -> Option<Self> {
        Some(Self {
            parent: TraceContext::of(agent)?,
            started_by: TraceContext::of(turn),
        })
    }
}

/// The span of one delivery of a delegated task in the process that runs
/// it (a remote worker): run the task's conversation under it (with
/// [`crate::Orchestrator::parent_span`]). With the `otel` feature and a
/// `trace` from the delegating process, it is a child of the delegating
/// agent's span there and links to the turn that created the task, so the
/// remote spans land in the same trace; otherwise it is a root span.
pub fn remote_task_span(
    agent: &AgentName,
    task_id: TaskId,
    attempt: u32,
    worker: &str,
    trace: Option<&RemoteTrace>,
) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "remote_task",
        agent = %agent,
        task_id = %task_id,
        attempt,
        worker,
        otel.name = field::Empty,
    );
    #[cfg(feature = "otel")]
    if let Some(trace) = trace {
        otlp::continue_remote(&span, trace);
    }
    #[cfg(not(feature = "otel"))]
    let _ = trace;
    name_for_viewer(&span, || format!("{agent} {task_id} on {worker}"));
    span
}

/// The name of the span in which an agent handles a task's report.
const TASK_RESULT: &str = "task_result";

/// The tracing state a task keeps while it runs.
#[derive(Debug)]
pub(crate) struct TaskSpans {
    /// The span of the turn that created the task. Holding it keeps the
    /// span open, so that every attempt of the task, and its result, can
    /// follow from it (a closed span's id may be reused).
    pub(crate) started_by: Span,
}

impl Default for TaskSpans {
    /// No turn started the task (it was read back from a journal).
    fn default() -> Self {
        Self {
            started_by: Span::none(),
        }
    }
}

impl TaskSpans {
    /// The state of a task created in the turn whose span is `turn`.
    pub(crate) fn started_in(turn: &Span) -> Self {
        Self {
            started_by: turn.clone(),
        }
    }
}

/// The span of one agent: a child of its parent agent's span, following
/// from the turn that started it.
pub(crate) fn agent_span(
    parent: Option<Id>,
    started_by: Option<Id>,
    agent: &AgentName,
    task: Option<TaskId>,
    parent_task: Option<TaskId>,
    depth: u32,
) -> Span {
    let span = tracing::info_span!(
        parent: parent,
        "agent",
        agent = %agent,
        task_id = task.map(field::display),
        parent = parent_task.map(field::display),
        depth,
        otel.name = field::Empty,
    );
    span.follows_from(started_by);
    name_for_viewer(&span, || match task {
        Some(task) => format!("{agent} {task}"),
        None => agent.to_string(),
    });
    span
}

/// The span of turn `turn` of the agent whose span is `agent`, following
/// from the handling of the task results it reads.
pub(crate) fn turn_span(agent: &Span, turn: u64, reads: impl IntoIterator<Item = Span>) -> Span {
    let span = tracing::info_span!(parent: agent, "turn", turn, otel.name = field::Empty);
    for result in reads {
        span.follows_from(&result);
    }
    name_for_viewer(&span, || format!("turn {turn}"));
    span
}

/// The span of one attempt of a background tool, following from the turn
/// that called the tool.
pub(crate) fn task_span(
    agent: &Span,
    task_id: TaskId,
    attempt: u32,
    tool: &str,
    started_by: &Span,
) -> Span {
    let span = tracing::info_span!(
        parent: agent,
        "task",
        task_id = %task_id,
        attempt,
        tool,
        otel.name = field::Empty,
    );
    span.follows_from(started_by);
    name_for_viewer(&span, || format!("{tool} {task_id}"));
    span
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
        TASK_RESULT,
        task_id = %task_id,
        attempt,
        outcome,
        otel.name = field::Empty,
    );
    if let Some(spans) = spans {
        span.follows_from(&spans.started_by);
    }
    name_for_viewer(&span, || format!("result {task_id}"));
    span
}

/// The current span if it is a `task_result` span: when an agent ends a
/// task whose report it is handling, the turn that reads the result
/// follows from it. (`None` whenever nothing is traced.)
pub(crate) fn current_task_result() -> Option<Span> {
    let span = Span::current();
    span.metadata()
        .is_some_and(|m| m.name() == TASK_RESULT)
        .then_some(span)
}

/// With the `otel` feature, records the span's `otel.name`, the name a
/// trace viewer shows for it (`lead`, `researcher task-1`, `turn 2`, …)
/// instead of the generic `agent`, `turn`, …; without it, does nothing, so
/// logs do not repeat what the other fields say.
#[inline]
fn name_for_viewer(span: &Span, name: impl FnOnce() -> String) {
    #[cfg(feature = "otel")]
    if !span.is_disabled() {
        span.record("otel.name", name().as_str());
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, name);
}

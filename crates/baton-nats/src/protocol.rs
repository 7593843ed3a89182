//! What travels over NATS, and what the task bucket holds.

use async_nats::HeaderMap;
use baton_core::{AgentName, TaskId, TaskOutcome};
use baton_runtime::telemetry::{RemoteTrace, TraceContext};
use serde::{Deserialize, Serialize};

/// A delegated task, published on `<prefix>.tasks.<agent>`. When the
/// delegating process exports spans (the `otel` feature), the message also
/// carries the task's place in its trace as headers: see [`trace_headers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// The conversation that delegated it; results go back to its subject.
    pub conversation: String,
    /// The task's id in that conversation.
    pub task_id: TaskId,
    /// The orchestrator's attempt (supervision retries start new ones).
    pub attempt: u32,
    /// The sub-agent to run.
    pub agent: AgentName,
    /// Its prompt.
    pub prompt: String,
}

/// The header carrying the W3C `traceparent` of the turn that created a
/// task: a baton extension next to the standard `traceparent` (the
/// delegating agent's span) and `tracestate` headers.
pub const STARTED_BY_HEADER: &str = "baton-started-by";

/// Adds a task's trace context to a message's headers, as W3C trace
/// context: `traceparent` and `tracestate` for the delegating agent's span
/// (the worker's spans become its children), and `baton-started-by`, in
/// the `traceparent` format, for the turn that created the task (the
/// worker's span links to it).
pub fn trace_headers(trace: &RemoteTrace, headers: &mut HeaderMap) {
    headers.insert(TraceContext::TRACEPARENT, trace.parent.traceparent.as_str());
    if let Some(state) = &trace.parent.tracestate {
        headers.insert(TraceContext::TRACESTATE, state.as_str());
    }
    if let Some(turn) = &trace.started_by {
        headers.insert(STARTED_BY_HEADER, turn.traceparent.as_str());
    }
}

/// The trace context [`trace_headers`] wrote, if the message has a
/// `traceparent` header (tasks from a process that does not export spans
/// have none).
pub fn trace_from_headers(headers: Option<&HeaderMap>) -> Option<RemoteTrace> {
    let headers = headers?;
    let text = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    Some(RemoteTrace {
        parent: TraceContext {
            traceparent: text(TraceContext::TRACEPARENT)?,
            tracestate: text(TraceContext::TRACESTATE),
        },
        started_by: text(STARTED_BY_HEADER).map(|traceparent| TraceContext {
            traceparent,
            tracestate: None,
        }),
    })
}

/// A task's result, published on `<prefix>.results.<conversation>` with
/// the de-duplication id `<conversation>.<task>.<attempt>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultMessage {
    /// The conversation.
    pub conversation: String,
    /// The task.
    pub task_id: TaskId,
    /// The orchestrator's attempt this answers.
    pub attempt: u32,
    /// How it ended.
    pub outcome: TaskOutcome,
    /// The worker that ran it.
    pub worker: String,
}

/// Where a remote task is, as the task bucket records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteStatus {
    /// Published, not taken yet (or given back for another delivery).
    Pending,
    /// A worker runs it.
    Running,
    /// Finished; the outcome is in the entry.
    Done,
    /// The orchestrator asked for it to stop.
    CancelRequested,
}

/// One task's state in the task bucket. Every change is a compare-and-set
/// on the entry's revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// Where it is.
    pub status: RemoteStatus,
    /// The orchestrator's attempt.
    pub attempt: u32,
    /// The worker running it (or that ran it).
    pub worker: Option<String>,
    /// The JetStream delivery count when it was taken.
    pub delivery: u64,
    /// The outcome, once `Done`.
    pub outcome: Option<TaskOutcome>,
    /// Why the last delivery that failed was given back, if one was: kept
    /// so a task that later runs out of deliveries can say why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl TaskEntry {
    /// A freshly published attempt.
    pub fn pending(attempt: u32) -> Self {
        Self {
            status: RemoteStatus::Pending,
            attempt,
            worker: None,
            delivery: 0,
            outcome: None,
            last_error: None,
        }
    }
}

/// JetStream's advisory that a message reached its consumer's
/// `max_deliver` without an ack (`io.nats.jetstream.advisory.v1.max_deliver`,
/// on `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`).
/// Only the fields baton reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxDeliveriesAdvisory {
    /// The stream holding the message.
    pub stream: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// The message's sequence in the stream.
    pub stream_seq: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_survives_the_headers_round_trip() {
        let trace = RemoteTrace {
            parent: TraceContext {
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                tracestate: Some("congo=t61rcWkgMzE".into()),
            },
            started_by: Some(TraceContext {
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01".into(),
                tracestate: None,
            }),
        };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "c.1.1");
        trace_headers(&trace, &mut headers);
        assert_eq!(
            headers.get("traceparent").map(|v| v.as_str()),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(trace_from_headers(Some(&headers)), Some(trace.clone()));

        let bare = RemoteTrace {
            parent: TraceContext {
                tracestate: None,
                ..trace.parent
            },
            started_by: None,
        };
        let mut headers = HeaderMap::new();
        trace_headers(&bare, &mut headers);
        assert!(headers.get("tracestate").is_none());
        assert!(headers.get(STARTED_BY_HEADER).is_none());
        assert_eq!(trace_from_headers(Some(&headers)), Some(bare));
    }

    #[test]
    fn a_task_without_trace_headers_has_no_trace() {
        assert_eq!(trace_from_headers(None), None);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "c.1.1");
        assert_eq!(trace_from_headers(Some(&headers)), None);
    }
}

//! With the `otel` feature in both processes, a task run by a remote worker
//! continues the trace of the conversation that delegated it: the
//! delegating side sends the W3C trace context with the task (NATS
//! headers), and the worker, a `baton-nats-worker` child process exporting
//! to the same OTLP receiver, opens its spans under it.
//!
//! Run with `cargo test -p baton-nats --features otel --test trace_propagation`.
#![cfg(feature = "otel")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_core::{Message, TaskOutcome};
use baton_nats::NatsExecutor;
use baton_runtime::telemetry::{init_otlp, OtlpConfig};
use baton_runtime::Orchestrator;
use baton_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use common::*;

const WORKER_ID: &str = "traced-worker";

/// Collects spans from `receiver` until `done` holds for them, for at most
/// `limit` (real time: the worker exports from another process).
fn spans_until(
    receiver: &OtlpReceiver,
    limit: Duration,
    done: impl Fn(&[ReceivedSpan]) -> bool,
) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + limit;
    let mut spans = Vec::new();
    loop {
        spans.extend(receiver.spans());
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "the spans did not arrive within {limit:?}: {:#?}",
            spans
                .iter()
                .map(|s| (s.service(), s.span.name.as_str()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The one span that `is` picks.
fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    is: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| is(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

fn from(service: &str) -> impl Fn(&ReceivedSpan) -> bool + '_ {
    move |s| s.service() == Some(service)
}

#[test]
fn a_remote_workers_spans_join_the_delegating_conversations_trace() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    let receiver = OtlpReceiver::start().expect("OTLP receiver");
    let _worker = Command::new(env!("CARGO_BIN_EXE_baton-nats-worker"))
        .args(["--nats", server.url(), "--agent", "echo", "--id", WORKER_ID])
        .args(["--otlp", receiver.url()])
        // Export every 50 ms: the worker process runs until it is killed.
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(ChildProcess)
        .expect("worker starts");

    // The delegating process (this one, the only test in this binary): its
    // own exporter and service name, for every thread.
    let guard = init_otlp(&OtlpConfig::new(receiver.url()).service_name("delegator"))
        .expect("the OTLP exporter, installed globally");
    actix_rt::System::new().block_on(async {
        let executor = NatsExecutor::connect(server.config(), "traced")
            .await
            .expect("executor");
        let convo = Orchestrator::start(lead(1, remote("echo", &executor)));
        convo.send_user("go").await.expect("send");
        convo.settled().await.expect("settled");
        let history = convo.history().await.expect("history");
        let outcome = history.messages().iter().find_map(|m| match m {
            Message::TaskResult { outcome, .. } => Some(outcome.clone()),
            _ => None,
        });
        assert_eq!(
            outcome,
            Some(TaskOutcome::Succeeded {
                output: "echo: p0".into()
            })
        );
        convo.shutdown().await.expect("shutdown");
    });
    guard
        .shutdown()
        .expect("export the delegating side's spans");

    // The worker's spans come in its own batches; wait for its task span
    // and the turn of the sub-agent it ran.
    let spans = spans_until(&receiver, Duration::from_secs(20), |spans| {
        let worker = spans.iter().filter(|s| from("baton-nats-worker")(s));
        let names: Vec<&str> = worker.map(|s| s.span.name.as_str()).collect();
        names.contains(&"echo task-1 on traced-worker")
            && names.contains(&"echo")
            && names.contains(&"turn 1")
            && spans.iter().any(|s| from("delegator")(s))
    });

    // The delegating side: the lead (the conversation, a root) and the
    // turn that created the task.
    let lead = one(&spans, "the lead's agent span", |s| {
        from("delegator")(s) && s.attribute("agent") == Some("lead")
    });
    assert!(lead.span.parent_span_id.is_empty(), "the lead is the root");
    let trace_id = &lead.span.trace_id;
    let turn1 = one(&spans, "the lead's turn 1", |s| {
        from("delegator")(s)
            && s.span.name == "turn 1"
            && s.span.parent_span_id == lead.span.span_id
    });
    let result = one(&spans, "the lead handling the result", |s| {
        from("delegator")(s) && s.span.name == "result task-1"
    });
    assert_eq!(&result.span.trace_id, trace_id);

    // The worker's task span: in the lead's trace, a child of the lead's
    // span (where a local sub-agent's span would be), linked to turn 1.
    let task = one(&spans, "the worker's task span", |s| {
        from("baton-nats-worker")(s) && s.span.name == "echo task-1 on traced-worker"
    });
    assert_eq!(
        &task.span.trace_id, trace_id,
        "the worker continues the delegating side's trace"
    );
    assert_eq!(
        task.span.parent_span_id, lead.span.span_id,
        "under the delegating agent's span"
    );
    assert_eq!(task.attribute("task_id"), Some("task-1"));
    assert_eq!(task.attribute("attempt"), Some("1"));
    assert_eq!(task.attribute("worker"), Some(WORKER_ID));
    assert_eq!(task.span.links.len(), 1, "{:?}", task.span.links);
    assert_eq!(task.span.links[0].span_id, turn1.span.span_id);
    assert_eq!(&task.span.links[0].trace_id, trace_id);

    // The sub-agent's own spans, in the worker, nest under the task span.
    let agent = one(&spans, "the worker's agent span", |s| {
        from("baton-nats-worker")(s) && s.span.name == "echo"
    });
    assert_eq!(&agent.span.trace_id, trace_id);
    assert_eq!(agent.span.parent_span_id, task.span.span_id);
    let turn = one(&spans, "the worker's turn 1", |s| {
        from("baton-nats-worker")(s) && s.span.name == "turn 1"
    });
    assert_eq!(&turn.span.trace_id, trace_id);
    assert_eq!(turn.span.parent_span_id, agent.span.span_id);
}

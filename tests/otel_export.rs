//! With the `otel` feature, a delegation tree's spans reach an OTLP/HTTP
//! collector: a real receiver on 127.0.0.1 decodes the protobuf export
//! requests, and the spans keep the tree (parent span ids), the task and
//! agent attributes, and the links from results to the turns that started
//! the work.
//!
//! Run with `cargo test -p baton --features otel --test otel_export`.
#![cfg(feature = "otel")]

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use baton::runtime::telemetry::{otlp_layer, OtlpConfig};
use baton::runtime::virtual_time::block_on_paused;
use baton::{Agent, ChatRequest, Message, Orchestrator, ScriptedModel, ScriptedTurn};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

/// An OTLP/HTTP traces endpoint on a free port of 127.0.0.1, running on
/// its own thread; every decoded export request goes to `requests`.
struct Receiver {
    url: String,
    requests: mpsc::Receiver<ExportTraceServiceRequest>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn export(
    State(sink): State<mpsc::Sender<ExportTraceServiceRequest>>,
    body: Bytes,
) -> impl IntoResponse {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            let _ = sink.send(request);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
                .into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

impl Receiver {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let (sink, requests) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = Router::new()
                    .route("/v1/traces", post(export))
                    .with_state(sink);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        Self {
            url,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<(Span, HashMap<String, String>)> {
        let mut spans = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            for resource in request.resource_spans {
                let resource_attrs = resource
                    .resource
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push((span, resource_attrs.clone()));
                    }
                }
            }
        }
        spans
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Attribute values as text: strings as they are, numbers in decimal.
fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

/// The lead delegates two topics to researchers; each researcher delegates
/// a page fetch to a fetcher, then answers.
fn tree_model() -> ScriptedModel {
    ScriptedModel::from_fn(
        |req: &ChatRequest| match (req.agent.as_str(), req.messages.last()) {
            ("lead", Some(Message::User { .. })) => {
                ScriptedTurn::call("create_task", json!({"agent": "researcher", "prompt": "a"}))
                    .and_call("create_task", json!({"agent": "researcher", "prompt": "b"}))
            }
            ("researcher", Some(Message::User { .. })) => {
                ScriptedTurn::call("create_task", json!({"agent": "fetcher", "prompt": "page"}))
            }
            ("fetcher", _) => ScriptedTurn::text("page text").after(Duration::from_millis(200)),
            (agent, Some(Message::Tool { .. })) => ScriptedTurn::text(format!("{agent} waits")),
            (agent, _) => ScriptedTurn::text(format!("{agent} done")),
        },
    )
}

#[test]
fn a_delegation_tree_reaches_an_otlp_collector_as_one_trace_tree() {
    let receiver = Receiver::start();
    let config = OtlpConfig::new(&receiver.url).service_name("otel-export-test");
    let (layer, guard) = otlp_layer(&config).expect("OTLP layer");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        block_on_paused(async {
            let model = tree_model();
            let fetcher = Agent::builder("fetcher").model(model.clone()).build();
            let researcher = Agent::builder("researcher")
                .model(model.clone())
                .delegates_to([fetcher])
                .build();
            let lead = Agent::builder("lead")
                .model(model)
                .delegates_to([researcher])
                .build();
            let convo = Orchestrator::start(lead);
            convo.send_user("go").await.expect("send");
            convo.settled().await.expect("settled");
            convo.shutdown().await.expect("shutdown");
        });
    });
    // Shutting the exporter down sends every finished span and waits for
    // the receiver's answer.
    guard.shutdown().expect("export");
    let received = receiver.spans();
    assert!(!received.is_empty(), "no span reached the receiver");
    for (_, resource) in &received {
        assert_eq!(
            resource.get("service.name").map(String::as_str),
            Some("otel-export-test")
        );
    }
    let spans: Vec<(Span, HashMap<String, String>)> = received
        .into_iter()
        .map(|(span, _)| {
            let attrs = attributes(&span.attributes);
            (span, attrs)
        })
        .collect();

    // One trace: every span shares the conversation's trace id.
    let trace_id = &spans[0].0.trace_id;
    assert!(spans.iter().all(|(s, _)| &s.trace_id == trace_id));

    // Spans carry their viewer names (`lead`, `turn 1`, …), so they are
    // told apart by the field that only their kind has: `agent` for agent
    // spans, `turn` for turns, `outcome` for the handling of a result.
    let find = |kind: &str, attrs: &[(&str, &str)]| -> Vec<&(Span, HashMap<String, String>)> {
        spans
            .iter()
            .filter(|(_, a)| {
                a.contains_key(kind)
                    && (kind == "agent" || !a.contains_key("agent"))
                    && attrs
                        .iter()
                        .all(|(k, v)| a.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    };
    let one = |kind: &str, attrs: &[(&str, &str)]| -> &(Span, HashMap<String, String>) {
        let found = find(kind, attrs);
        assert_eq!(found.len(), 1, "{kind} {attrs:?}");
        found[0]
    };

    // The tree, by parent span ids: lead → task-1, task-2 (researchers) →
    // task-3, task-4 (fetchers).
    let (lead, lead_attrs) = one("agent", &[("agent", "lead")]);
    assert!(
        lead.parent_span_id.is_empty(),
        "the conversation is the root"
    );
    assert_eq!(lead_attrs.get("depth").map(String::as_str), Some("0"));
    assert!(!lead_attrs.contains_key("task_id"));
    assert_eq!(lead.name, "lead");
    let researchers = find("agent", &[("agent", "researcher"), ("depth", "1")]);
    assert_eq!(researchers.len(), 2);
    let mut fetcher_tasks = Vec::new();
    for (researcher, attrs) in researchers {
        assert_eq!(researcher.parent_span_id, lead.span_id);
        let task = attrs.get("task_id").expect("researcher task_id");
        assert_eq!(researcher.name, format!("researcher {task}"));
        assert!(
            !attrs.contains_key("parent"),
            "the lead's tasks have no parent task"
        );
        let (fetcher, fetcher_attrs) = one(
            "agent",
            &[
                ("agent", "fetcher"),
                ("parent", task.as_str()),
                ("depth", "2"),
            ],
        );
        assert_eq!(fetcher.parent_span_id, researcher.span_id);
        fetcher_tasks.push(fetcher_attrs["task_id"].clone());
    }
    let mut task_ids: Vec<&str> = find("agent", &[])
        .iter()
        .filter_map(|(_, a)| a.get("task_id").map(String::as_str))
        .collect();
    task_ids.sort_unstable();
    assert_eq!(task_ids, ["task-1", "task-2", "task-3", "task-4"]);
    fetcher_tasks.sort();
    assert_eq!(fetcher_tasks, ["task-3", "task-4"]);

    // Turns nest under their agent; the researchers start from the lead's
    // first turn, and their results link back to it.
    let lead_turns: Vec<&Span> = find("turn", &[("turn", "1")])
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| s.parent_span_id == lead.span_id)
        .collect();
    assert_eq!(lead_turns.len(), 1, "the lead's turn 1");
    let turn1 = lead_turns[0];
    assert_eq!(turn1.name, "turn 1");
    for task in ["task-1", "task-2"] {
        let (worker, _) = one("agent", &[("task_id", task)]);
        assert!(
            worker.links.iter().any(|l| l.span_id == turn1.span_id),
            "{task}'s agent span links to the lead's turn 1"
        );
        let (result, attrs) = one("outcome", &[("task_id", task)]);
        assert_eq!(result.name, format!("result {task}"));
        assert_eq!(result.parent_span_id, lead.span_id);
        assert_eq!(attrs.get("outcome").map(String::as_str), Some("succeeded"));
        assert_eq!(result.links.len(), 1);
        assert_eq!(result.links[0].span_id, turn1.span_id);
        assert_eq!(&result.links[0].trace_id, trace_id);
    }
}

//! With the `otel` feature, a delegation tree's spans reach an OTLP/HTTP
//! collector: a real receiver on 127.0.0.1 decodes the protobuf export
//! requests, and the spans keep the tree (parent span ids), the task and
//! agent attributes, and the links from results to the turns that started
//! the work.
//!
//! Run with `cargo test -p baton --features otel --test otel_export`.
#![cfg(feature = "otel")]

use std::collections::HashMap;
use std::time::Duration;

use baton::runtime::telemetry::{otlp_layer, OtlpConfig};
use baton::runtime::virtual_time::block_on_paused;
use baton::{Agent, ChatRequest, Message, Orchestrator, ScriptedModel, ScriptedTurn};
use baton_testkit::otlp::{OtlpReceiver, Span};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

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
    let receiver = OtlpReceiver::start().expect("OTLP receiver");
    let config = OtlpConfig::new(receiver.url()).service_name("otel-export-test");
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
    for span in &received {
        assert_eq!(span.service(), Some("otel-export-test"));
    }
    let spans: Vec<(Span, HashMap<String, String>)> = received
        .into_iter()
        .map(|r| (r.span, r.attributes))
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

//! Agent spans nest as the delegation tree, carrying task_id, parent,
//! depth and agent, so a log reads as a tree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use baton::runtime::virtual_time::block_on_paused;
use baton::{Agent, ChatRequest, Message, Orchestrator, ScriptedModel, ScriptedTurn};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[derive(Debug, Clone, Default)]
struct SpanInfo {
    name: String,
    fields: HashMap<String, String>,
    parent: Option<u64>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<HashMap<u64, SpanInfo>>>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut info = SpanInfo {
            name: attrs.metadata().name().to_owned(),
            ..SpanInfo::default()
        };
        attrs.record(&mut Fields(&mut info.fields));
        info.parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        if let Ok(mut spans) = self.0.lock() {
            spans.insert(id.into_u64(), info);
        }
    }
}

#[test]
fn agent_spans_nest_as_the_tree() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    tracing::subscriber::with_default(subscriber, || {
        block_on_paused(async {
            let model = ScriptedModel::from_fn(|req: &ChatRequest| {
                match (req.agent.as_str(), req.messages.last()) {
                    ("lead", Some(Message::User { .. })) => ScriptedTurn::call(
                        "create_task",
                        json!({"agent": "researcher", "prompt": "a"}),
                    ),
                    ("researcher", Some(Message::User { .. })) => ScriptedTurn::call(
                        "create_task",
                        json!({"agent": "fetcher", "prompt": "b"}),
                    ),
                    (agent, _) => ScriptedTurn::text(format!("{agent} done")),
                }
            });
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
            convo.send_user("go").await.unwrap();
            convo.settled().await.unwrap();
        });
    });
    let spans = recorder.0.lock().unwrap().clone();
    let agent_span = |name: &str| {
        spans
            .iter()
            .find(|(_, s)| {
                s.name == "agent" && s.fields.get("agent").map(String::as_str) == Some(name)
            })
            .map(|(id, s)| (*id, s.clone()))
            .unwrap_or_else(|| panic!("no agent span for {name}"))
    };
    let (lead_id, lead) = agent_span("lead");
    let (researcher_id, researcher) = agent_span("researcher");
    let (_, fetcher) = agent_span("fetcher");
    assert_eq!(lead.fields.get("depth").map(String::as_str), Some("0"));
    assert_eq!(researcher.parent, Some(lead_id));
    assert_eq!(
        researcher.fields.get("task_id").map(String::as_str),
        Some("task-1")
    );
    assert_eq!(
        researcher.fields.get("depth").map(String::as_str),
        Some("1")
    );
    assert_eq!(fetcher.parent, Some(researcher_id));
    assert_eq!(
        fetcher.fields.get("parent").map(String::as_str),
        Some("task-1")
    );
    assert_eq!(
        fetcher.fields.get("task_id").map(String::as_str),
        Some("task-2")
    );
    assert_eq!(fetcher.fields.get("depth").map(String::as_str), Some("2"));
}

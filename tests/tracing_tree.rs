//! Agent spans nest as the delegation tree, carrying task_id, parent,
//! depth and agent, so a log reads as a tree; a background result's
//! handling follows from the turn that started the work.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::core::MemoryJournal;
use baton::runtime::virtual_time::block_on_paused;
use baton::{Agent, ChatRequest, Message, Orchestrator, ScriptedModel, ScriptedTurn, TaskId};
use common::DeepResearch;
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One span as recorded; spans are numbered in creation order, since
/// `tracing` reuses the ids of closed spans.
#[derive(Debug, Clone, Default)]
struct SpanInfo {
    name: String,
    fields: HashMap<String, String>,
    parent: Option<usize>,
    follows_from: Vec<usize>,
}

impl SpanInfo {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
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

#[derive(Default)]
struct Recorded {
    spans: Vec<SpanInfo>,
    /// Open spans: tracing id → index in `spans`.
    live: HashMap<u64, usize>,
}

/// A layer that records every span, its parent and its `follows_from`
/// relations.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Recorded>>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut info = SpanInfo {
            name: attrs.metadata().name().to_owned(),
            ..SpanInfo::default()
        };
        attrs.record(&mut Fields(&mut info.fields));
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        if let Ok(mut rec) = self.0.lock() {
            info.parent = parent.and_then(|p| rec.live.get(&p).copied());
            let index = rec.spans.len();
            rec.spans.push(info);
            rec.live.insert(id.into_u64(), index);
        }
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, _ctx: Context<'_, S>) {
        if let Ok(mut rec) = self.0.lock() {
            let (Some(&span), Some(&follows)) = (
                rec.live.get(&span.into_u64()),
                rec.live.get(&follows.into_u64()),
            ) else {
                panic!("follows_from between spans that are not open");
            };
            rec.spans[span].follows_from.push(follows);
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        if let Ok(mut rec) = self.0.lock() {
            rec.live.remove(&id.into_u64());
        }
    }
}

impl Recorder {
    /// Runs `scenario` on a paused clock with this recorder as the
    /// subscriber; returns the spans.
    fn record<F: std::future::Future<Output = ()>>(scenario: impl FnOnce() -> F) -> Spans {
        let recorder = Recorder::default();
        let subscriber = tracing_subscriber::registry().with(recorder.clone());
        tracing::subscriber::with_default(subscriber, || block_on_paused(scenario()));
        let spans = std::mem::take(&mut recorder.0.lock().unwrap().spans);
        Spans(spans)
    }
}

struct Spans(Vec<SpanInfo>);

impl Spans {
    fn find(&self, name: &str, fields: &[(&str, &str)]) -> Vec<usize> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name == name && fields.iter().all(|(k, v)| s.field(k) == Some(v)))
            .map(|(i, _)| i)
            .collect()
    }

    fn one(&self, name: &str, fields: &[(&str, &str)]) -> usize {
        match self.find(name, fields)[..] {
            [one] => one,
            ref found => panic!("{} spans {name}{fields:?}: {found:?}", found.len()),
        }
    }

    fn agent(&self, agent: &str) -> usize {
        self.one("agent", &[("agent", agent)])
    }

    /// The span of turn `turn` of the agent whose span is `agent`.
    fn turn(&self, agent: usize, turn: u64) -> usize {
        let turn = turn.to_string();
        let found: Vec<usize> = self
            .find("turn", &[("turn", &turn)])
            .into_iter()
            .filter(|&t| self.0[t].parent == Some(agent))
            .collect();
        assert_eq!(found.len(), 1, "turn {turn} of span {agent}");
        found[0]
    }
}

impl std::ops::Index<usize> for Spans {
    type Output = SpanInfo;
    fn index(&self, i: usize) -> &SpanInfo {
        &self.0[i]
    }
}

#[test]
fn agent_spans_nest_as_the_tree() {
    let spans = Recorder::record(|| async {
        let model = ScriptedModel::from_fn(|req: &ChatRequest| {
            match (req.agent.as_str(), req.messages.last()) {
                ("lead", Some(Message::User { .. })) => {
                    ScriptedTurn::call("create_task", json!({"agent": "researcher", "prompt": "a"}))
                }
                ("researcher", Some(Message::User { .. })) => {
                    ScriptedTurn::call("create_task", json!({"agent": "fetcher", "prompt": "b"}))
                }
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
    let lead = spans.agent("lead");
    let researcher = spans.agent("researcher");
    let fetcher = spans.agent("fetcher");
    assert_eq!(spans[lead].field("depth"), Some("0"));
    assert_eq!(spans[researcher].parent, Some(lead));
    assert_eq!(spans[researcher].field("task_id"), Some("task-1"));
    assert_eq!(spans[researcher].field("depth"), Some("1"));
    assert_eq!(spans[fetcher].parent, Some(researcher));
    assert_eq!(spans[fetcher].field("parent"), Some("task-1"));
    assert_eq!(spans[fetcher].field("task_id"), Some("task-2"));
    assert_eq!(spans[fetcher].field("depth"), Some("2"));
    // Each worker's span follows from the turn that delegated to it.
    assert_eq!(spans[researcher].follows_from, [spans.turn(lead, 1)]);
    assert_eq!(spans[fetcher].follows_from, [spans.turn(researcher, 1)]);
}

/// The lead starts a background tool and a delegation in its first turn;
/// both results come back later, each handled in a `task_result` span that
/// follows from that first turn, and the turn reading them follows from
/// their handling.
#[test]
fn background_results_follow_from_the_turn_that_started_them() {
    background_results_follow(false);
}

/// The same with a journal: a result is concluded only once it is durable,
/// still inside the span of its handling.
#[test]
fn background_results_follow_from_their_turn_through_the_journal() {
    background_results_follow(true);
}

fn background_results_follow(journaled: bool) {
    let spans = Recorder::record(|| async move {
        let model = ScriptedModel::from_fn(|req: &ChatRequest| {
            match (req.agent.as_str(), req.messages.last()) {
                ("lead", Some(Message::User { .. })) => {
                    ScriptedTurn::call("deep_research", json!({"topic": "tides"})).and_call(
                        "create_task",
                        json!({"agent": "researcher", "prompt": "moons"}),
                    )
                }
                ("lead", Some(Message::Tool { .. })) => ScriptedTurn::text("working on it"),
                ("researcher", _) => {
                    ScriptedTurn::text("moons found").after(Duration::from_secs(1))
                }
                (_, _) => ScriptedTurn::text("done"),
            }
        });
        let researcher = Agent::builder("researcher").model(model.clone()).build();
        let lead = Agent::builder("lead")
            .model(model)
            .background_tool(DeepResearch { secs: 5 })
            .delegates_to([researcher])
            .build();
        let mut convo = Orchestrator::builder(lead);
        if journaled {
            convo = convo.journal(Arc::new(MemoryJournal::new()));
        }
        let convo = convo.spawn();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
    });
    let lead = spans.agent("lead");
    let turn1 = spans.turn(lead, 1);
    for (task, outcome) in [("task-1", "succeeded"), ("task-2", "succeeded")] {
        let result = spans.one("task_result", &[("task_id", task)]);
        assert_eq!(spans[result].parent, Some(lead), "{task}");
        assert_eq!(spans[result].field("outcome"), Some(outcome));
        assert_eq!(spans[result].field("attempt"), Some("1"));
        assert_eq!(spans[result].follows_from, [turn1], "{task}");
        // The turn that reads the result follows from its handling.
        let readers: Vec<usize> = spans
            .find("turn", &[])
            .into_iter()
            .filter(|&t| spans[t].follows_from.contains(&result))
            .collect();
        assert_eq!(readers.len(), 1, "{task} is read by one turn");
        assert_eq!(spans[readers[0]].parent, Some(lead));
        assert!(readers[0] > result);
    }
    // The background tool's attempt runs in a span following from turn 1.
    let attempt = spans.one("task", &[("task_id", "task-1")]);
    assert_eq!(spans[attempt].parent, Some(lead));
    assert_eq!(spans[attempt].follows_from, [turn1]);
}

/// A delegation that waits for approval starts only after later turns;
/// its worker, its result and its retries still follow from the turn that
/// asked for it.
#[test]
fn a_task_started_late_still_follows_from_the_turn_that_asked_for_it() {
    let spans = Recorder::record(|| async {
        let model = ScriptedModel::from_fn(|req: &ChatRequest| {
            match (req.agent.as_str(), req.messages.last()) {
                ("lead", Some(Message::User { content })) if content == "go" => ScriptedTurn::call(
                    "create_task",
                    json!({"agent": "researcher", "prompt": "moons"}),
                ),
                ("lead", Some(Message::User { .. })) => ScriptedTurn::text("hi"),
                ("lead", Some(Message::Tool { .. })) => ScriptedTurn::text("awaiting approval"),
                ("researcher", _) => ScriptedTurn::text("moons found"),
                (_, _) => ScriptedTurn::text("done"),
            }
        });
        let researcher = Agent::builder("researcher").model(model.clone()).build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([researcher])
            .require_approval("researcher")
            .build();
        let convo = Orchestrator::start(lead);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        convo.send_user("hello").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        convo.approve(TaskId::new(1)).await.unwrap();
        convo.settled().await.unwrap();
    });
    let lead = spans.agent("lead");
    let turn1 = spans.turn(lead, 1);
    // Turn 3 (answering "hello") was the lead's current turn at approval.
    let _ = spans.turn(lead, 3);
    let researcher = spans.agent("researcher");
    assert_eq!(spans[researcher].follows_from, [turn1]);
    let result = spans.one("task_result", &[("task_id", "task-1")]);
    assert_eq!(spans[result].follows_from, [turn1]);
    assert_eq!(spans[spans.turn(lead, 4)].follows_from, [result]);
}

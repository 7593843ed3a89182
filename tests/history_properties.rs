//! Property test: whatever the interleaving of user inputs, inline and
//! background tool calls and task completions, the conversation's history
//! keeps its invariants.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::core::{MemoryJournal, Replay};
use baton::runtime::virtual_time::block_on_paused;
use baton::{
    Agent, Event, Message, Orchestrator, ScriptedModel, ScriptedTurn, Tool, ToolError, ToolOutput,
};
use proptest::prelude::*;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct SleepArgs {
    ms: u64,
    tag: String,
}

struct Sleep {
    name: &'static str,
}

impl Tool for Sleep {
    type Args = SleepArgs;
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "Sleeps, then returns its tag."
    }
    async fn call(&self, args: SleepArgs) -> Result<ToolOutput, ToolError> {
        tokio::time::sleep(Duration::from_millis(args.ms)).await;
        Ok(args.tag.into())
    }
}

/// One model reply: a latency, then either text or some tool calls, each
/// `(background?, tool latency in ms)`.
#[derive(Debug, Clone)]
struct Decision {
    latency_ms: u64,
    calls: Vec<(bool, u64)>,
}

fn decision() -> impl Strategy<Value = Decision> {
    (
        0u64..300,
        prop::collection::vec((any::<bool>(), 0u64..500), 0..4),
    )
        .prop_map(|(latency_ms, calls)| Decision { latency_ms, calls })
}

fn run(decisions: Vec<Decision>, user_gaps_ms: Vec<u64>) {
    block_on_paused(async move {
        let queue = Arc::new(Mutex::new(VecDeque::from(decisions)));
        let counter = Arc::new(Mutex::new(0u32));
        let model = ScriptedModel::from_fn(move |_req| {
            let next = queue.lock().expect("lock").pop_front();
            let Some(d) = next else {
                return ScriptedTurn::text("done");
            };
            let latency = Duration::from_millis(d.latency_ms);
            if d.calls.is_empty() {
                return ScriptedTurn::text("ok").after(latency);
            }
            let mut n = counter.lock().expect("lock");
            let mut turn: Option<ScriptedTurn> = None;
            for (background, ms) in d.calls {
                *n += 1;
                let tool = if background { "bg" } else { "inline" };
                let args = json!({"ms": ms, "tag": format!("r{n}")});
                turn = Some(match turn {
                    None => ScriptedTurn::call(tool, args),
                    Some(t) => t.and_call(tool, args),
                });
            }
            turn.map(|t| t.after(latency))
                .unwrap_or_else(|| ScriptedTurn::text("ok"))
        });
        let agent = Agent::builder("a")
            .model(model)
            .tool(Sleep { name: "inline" })
            .background_tool(Sleep { name: "bg" })
            .build();
        let journal = MemoryJournal::new();
        let convo = Orchestrator::builder(agent)
            .journal(Arc::new(journal.clone()))
            .spawn();
        let mut events = convo.subscribe();
        let mut sent = Vec::new();
        for (i, gap) in user_gaps_ms.iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(*gap)).await;
            let text = format!("user-{i}");
            convo.send_user(text.clone()).await.expect("send");
            sent.push(text);
        }
        convo.settled().await.expect("settled");
        let history = convo.history().await.expect("history");

        // 1. The tool protocol holds: every call answered exactly once, in place.
        prop_assert_eq!(history.check_tool_protocol(), Ok(()));

        // 2. Inputs (user messages and task results) entered history exactly
        //    once each, in the order they arrived at the actor.
        let mut arrivals = Vec::new();
        while let Ok(e) = events.try_recv() {
            match e.event {
                Event::UserMessage { text } => arrivals.push(text),
                Event::TaskFinished { task_id, .. } => arrivals.push(task_id.to_string()),
                _ => {}
            }
        }
        let folded: Vec<String> = history
            .messages()
            .iter()
            .filter_map(|m| match m {
                Message::User { content } => Some(content.clone()),
                Message::TaskResult { task_id, .. } => Some(task_id.to_string()),
                _ => None,
            })
            .collect();
        prop_assert_eq!(&folded, &arrivals);
        let users: Vec<&String> = folded.iter().filter(|t| t.starts_with("user-")).collect();
        prop_assert_eq!(users, sent.iter().collect::<Vec<_>>());

        // 3. Every background task ended and its result is in history once,
        //    after the call that started it.
        let records = convo.tasks();
        prop_assert!(records
            .iter()
            .all(|r| r.status == baton::TaskStatus::Succeeded));
        for r in &records {
            let id = r.id.to_string();
            let started = history.messages().iter().position(|m| match m {
                Message::Tool { content, .. } => content.contains(&format!("\"{id}\"")),
                _ => false,
            });
            let landed = history
                .messages()
                .iter()
                .position(|m| matches!(m, Message::TaskResult { task_id, .. } if *task_id == r.id));
            prop_assert!(
                started.is_some() && landed.is_some() && started < landed,
                "{id}"
            );
        }
        // 4. Replay = live: the journal rebuilds exactly the history the
        //    actor held, with nothing pending.
        let replay = Replay::from_records(journal.records());
        prop_assert_eq!(&replay.history, history.messages());
        prop_assert!(replay.pending_inputs.is_empty());
        prop_assert_eq!(replay.tasks.len(), records.len());
        Ok(())
    })
    .expect("property holds");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn history_invariants_hold_under_any_interleaving(
        decisions in prop::collection::vec(decision(), 0..12),
        user_gaps_ms in prop::collection::vec(0u64..400, 1..6),
    ) {
        run(decisions, user_gaps_ms);
    }
}

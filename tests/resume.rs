//! Resuming a conversation from its journal: nothing lost, nothing counted
//! twice, running work picked up again.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton::core::{JournalRecord, MemoryJournal, Replay, TaskRecord, TaskTree};
use baton::runtime::virtual_time::block_on_paused;
use baton::runtime::Supervision;
use baton::{
    Agent, Message, Orchestrator, ScriptedModel, ScriptedTurn, TaskId, TaskStatus, Tool, ToolError,
    ToolOutput,
};
use common::*;
use serde_json::json;

/// A payment: slow, and not safe to run twice.
struct Pay;

impl Tool for Pay {
    type Args = NoArgs;
    fn name(&self) -> &str {
        "pay"
    }
    fn description(&self) -> &str {
        "Pays the invoice. Not idempotent."
    }
    async fn call(&self, _args: NoArgs) -> Result<ToolOutput, ToolError> {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok("paid".into())
    }
    fn idempotent(&self) -> bool {
        false
    }
}

fn agent(model: ScriptedModel) -> Agent {
    Agent::builder("assistant")
        .model(model)
        .system_prompt("sys")
        .background_tool(DeepResearch { secs: 10 })
        .background_tool(Pay)
        .build()
}

fn model() -> ScriptedModel {
    ScriptedModel::from_fn(|req| match req.messages.last() {
        Some(Message::User { content }) if content == "start" => ScriptedTurn::calls(
            "deep_research",
            (0..5).map(|i| json!({ "topic": format!("t{i}") })),
        )
        .and_call("pay", json!({})),
        Some(Message::User { content }) => {
            ScriptedTurn::text(format!("re: {content}")).after(Duration::from_secs(1))
        }
        Some(Message::TaskResult { task_id, .. }) => ScriptedTurn::text(format!("noted {task_id}")),
        _ => ScriptedTurn::text("started"),
    })
}

#[test]
fn a_resumed_conversation_loses_nothing_and_counts_nothing_twice() {
    let records = block_on_paused(async {
        let journal = MemoryJournal::new();
        let convo = durable(agent(model()), &journal);
        convo.send_user("start").await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        convo.send_user("hello").await.unwrap();
        // A second input arrives while the model answers the first: it is
        // acknowledged (journaled) but not yet in history at the "crash".
        tokio::time::sleep(Duration::from_millis(500)).await;
        convo.send_user("still there?").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The crash: whatever the journal holds now is all that survives.
        journal.records()
    });

    block_on_paused(async move {
        let replay = Replay::from_records(records);
        assert_eq!(replay.pending_inputs, vec![Message::user("still there?")]);
        let journal = MemoryJournal::new();
        let convo = Orchestrator::builder(agent(model()))
            .journal(Arc::new(journal.clone()))
            .resume(replay)
            .spawn();
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        assert_eq!(history.check_tool_protocol(), Ok(()));
        let t = texts(&history);
        for input in ["start", "hello", "still there?"] {
            assert_eq!(
                t.iter().filter(|m| *m == input).count(),
                1,
                "{input}: {t:?}"
            );
        }
        for i in 0..5 {
            let marker = format!("report on t{i}");
            assert_eq!(
                t.iter().filter(|m| m.ends_with(&marker)).count(),
                1,
                "{marker}: {t:?}"
            );
        }
        // The payment was not run again; the model was told.
        let pay = convo.check_task(TaskId::new(6)).unwrap();
        assert_eq!(pay.status, TaskStatus::Interrupted);
        assert!(t
            .iter()
            .any(|m| m.starts_with("[task task-6 from pay interrupted]")
                && m.contains("not idempotent")));
        // The research tasks were started again: a second attempt each.
        for i in 1..=5 {
            let r = convo.check_task(TaskId::new(i)).unwrap();
            assert_eq!((r.status, r.attempts), (TaskStatus::Succeeded, 2));
        }
        // New ids continue after the restored ones.
        assert_eq!(convo.tasks().len(), 6);
    });
}

#[test]
fn a_result_logged_twice_across_a_crash_is_folded_once() {
    block_on_paused(async {
        let journal = MemoryJournal::new();
        let model = ScriptedModel::new().script(
            "assistant",
            [
                ScriptedTurn::call("deep_research", json!({"topic": "x"})),
                ScriptedTurn::text("started"),
                ScriptedTurn::text("got it"),
            ],
        );
        let convo = durable(agent(model), &journal);
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        let mut records = journal.records();
        // The same completion, written again by a worker that did not know
        // its first report had landed.
        let duplicate = records
            .iter()
            .find(|r| matches!(r, baton::core::JournalRecord::TaskFinished { .. }))
            .cloned()
            .unwrap();
        records.push(duplicate);
        let replay = Replay::from_records(records);
        assert!(
            replay.pending_inputs.is_empty(),
            "{:?}",
            replay.pending_inputs
        );
        assert_eq!(replay.history, convo.history().await.unwrap().messages());
    });
}

fn flaky_agent(failures: u32) -> Agent {
    let model = ScriptedModel::from_fn(|req| match req.messages.last() {
        Some(Message::User { .. }) => ScriptedTurn::call("flaky", json!({})),
        Some(Message::TaskResult { .. }) => ScriptedTurn::text("done"),
        _ => ScriptedTurn::text("started"),
    });
    Agent::builder("lead")
        .model(model)
        .background_tool(Flaky {
            calls: Arc::default(),
            failures,
            takes: Duration::from_secs(1),
        })
        .supervision(Supervision::retry(2).backoff_ms(10))
        .build()
}

/// How many attempts the log gives each task, as `baton log` prints them.
fn logged_attempts(records: Vec<JournalRecord>) -> (u32, String) {
    let replay = Replay::from_records(records);
    let attempts = replay.tasks[0].0.attempts;
    let tasks = replay.tasks.into_iter().map(|(t, _)| t).collect();
    (
        attempts,
        TaskTree::from_records("lead".into(), tasks).render(),
    )
}

#[test]
fn retries_reach_the_journal_and_a_resume_counts_on() {
    let (whole, crashed) = block_on_paused(async {
        let journal = MemoryJournal::new();
        let convo = durable(flaky_agent(2), &journal);
        convo.send_user("go").await.unwrap();
        // The second attempt is running (the first failed after 1 s).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let crashed = journal.records();
        convo.settled().await.unwrap();
        let live = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!((live.status, live.attempts), (TaskStatus::Succeeded, 3));
        (journal.records(), crashed)
    });
    // The whole run: the log counts the three attempts, as the registry did.
    let (attempts, tree) = logged_attempts(whole);
    assert_eq!(attempts, 3);
    assert!(tree.contains("[succeeded] attempts=3"), "{tree}");
    // The crash came during the second attempt: the log knows it started.
    let (attempts, tree) = logged_attempts(crashed.clone());
    assert_eq!(attempts, 2);
    assert!(tree.contains("[running] attempts=2"), "{tree}");
    block_on_paused(async move {
        let journal = MemoryJournal::new();
        let convo = Orchestrator::builder(flaky_agent(0))
            .journal(Arc::new(journal.clone()))
            .resume(Replay::from_records(crashed))
            .spawn();
        convo.settled().await.unwrap();
        // Restarted as the third attempt, in the registry and in the log.
        let r = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!((r.status, r.attempts), (TaskStatus::Succeeded, 3));
        let records = journal.records();
        assert!(records.contains(&JournalRecord::TaskStarted {
            task_id: TaskId::new(1),
            attempt: 3
        }));
        assert!(records.iter().any(|r| matches!(
            r,
            JournalRecord::TaskFinished {
                attempts: Some(3),
                ..
            }
        )));
    });
}

#[test]
fn a_crash_while_a_wide_reply_is_dispatched_answers_each_started_call_with_its_task() {
    // A reply of 1,000 delegations is dispatched in batches; the "crash"
    // comes after the first batch is journaled, before the calls are
    // answered in history.
    let n = 1_000;
    let wide = move || {
        let all = ScriptedTurn::calls(
            "create_task",
            (0..n).map(|i| json!({"agent": "leaf", "prompt": i.to_string()})),
        );
        // The lead delegates when the user speaks, and only then (the
        // resumed run must not delegate again).
        let model = ScriptedModel::from_fn(move |req: &baton::ChatRequest| {
            match (req.agent.as_str(), req.messages.last()) {
                ("leaf", _) => ScriptedTurn::text("leaf done").after(Duration::from_secs(1)),
                (_, Some(Message::User { .. })) => all.clone(),
                _ => ScriptedTurn::text("ok"),
            }
        });
        let leaf = Agent::builder("leaf").model(model.clone()).build();
        Agent::builder("lead")
            .model(model)
            .delegates_to([leaf])
            .build()
    };
    let records = block_on_paused(async move {
        let journal = MemoryJournal::new();
        let convo = Orchestrator::builder(wide())
            .journal(Arc::new(journal.clone()))
            .event_capacity(16 * n)
            .spawn();
        let mut events = convo.subscribe();
        convo.send_user("go").await.unwrap();
        wait_for(&mut events, |e| {
            matches!(e, baton::Event::TaskCreated { .. })
        })
        .await;
        // Let the first batch's records reach the journal, not the rest.
        tokio::task::yield_now().await;
        journal.records()
    });
    let created = records
        .iter()
        .filter(|r| matches!(r, JournalRecord::TaskCreated { .. }))
        .count();
    assert!(
        (1..n).contains(&created),
        "the crash falls inside the dispatch ({created} of {n} tasks journaled)"
    );

    block_on_paused(async move {
        let convo = Orchestrator::builder(wide())
            .resume(Replay::from_records(records))
            .spawn();
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        assert_eq!(history.check_tool_protocol(), Ok(()));
        let answers: Vec<&Message> = history
            .messages()
            .iter()
            .filter(|m| matches!(m, Message::Tool { .. }))
            .collect();
        assert_eq!(answers.len(), n, "every call answered once");
        let (started, interrupted): (Vec<&Message>, Vec<&Message>) = answers
            .into_iter()
            .partition(|m| m.text().is_some_and(|t| t.contains("task_id")));
        assert_eq!(
            started.len(),
            created,
            "each call whose task was created is answered with that task"
        );
        assert!(interrupted
            .iter()
            .all(|m| m.text().is_some_and(|t| t.contains("restarted"))));
        // Those tasks ran to the end, once each.
        assert_eq!(results_in(&history), created);
        assert_eq!(convo.tasks().len(), created, "nothing started twice");
    });
}

#[test]
fn a_result_whose_record_could_not_be_written_waits_until_it_is() {
    block_on_paused(async {
        let model = ScriptedModel::from_fn(|req: &baton::ChatRequest| {
            match (req.agent.as_str(), req.messages.last()) {
                ("leaf", _) => ScriptedTurn::text("leaf done").after(Duration::from_secs(1)),
                (_, Some(Message::User { .. })) => ScriptedTurn::calls(
                    "create_task",
                    (0..3).map(|i| json!({"agent": "leaf", "prompt": i.to_string()})),
                ),
                _ => ScriptedTurn::text("ok"),
            }
        });
        let leaf = Agent::builder("leaf").model(model.clone()).build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([leaf])
            .build();
        let journal = Unreliable::failing_from_first_result(2);
        let convo = durable(lead, &journal);
        let start = tokio::time::Instant::now();
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        // The leaves are done, but their records were refused: no result yet.
        let history = convo.history().await.unwrap();
        assert_eq!(results_in(&history), 0, "no result without its record");
        convo.settled().await.unwrap();
        // Two refusals: appends went again after 200 ms, then 400 ms.
        assert_eq!(journal.refused(), 2);
        assert_eq!(start.elapsed(), Duration::from_millis(1_000 + 200 + 400));
        let history = convo.history().await.unwrap();
        assert_eq!(results_in(&history), 3);
        let records = journal.durable();
        let finished = records
            .iter()
            .filter(|r| matches!(r, JournalRecord::TaskFinished { .. }))
            .count();
        assert_eq!(finished, 3, "each result's record is in the log once");
        // And the log alone gives the same history back.
        let replay = Replay::from_records(records);
        assert_eq!(replay.history, history.messages().to_vec());
    });
}

/// Each task's records in `records`, counted by kind: (created, finished).
fn record_counts(records: &[JournalRecord]) -> std::collections::BTreeMap<TaskId, (u32, u32)> {
    let mut counts = std::collections::BTreeMap::<TaskId, (u32, u32)>::new();
    for r in records {
        match r {
            JournalRecord::TaskCreated { task, .. } => counts.entry(task.id).or_default().0 += 1,
            JournalRecord::TaskFinished { task_id, .. } => {
                counts.entry(*task_id).or_default().1 += 1;
            }
            _ => {}
        }
    }
    counts
}

#[test]
fn a_journal_down_for_a_while_loses_nothing_and_doubles_nothing() {
    block_on_paused(async {
        // "start" makes a reply (after 1 s) that starts three tasks of 2 s.
        let model = ScriptedModel::from_fn(|req| match req.messages.last() {
            Some(Message::User { .. }) => ScriptedTurn::calls(
                "deep_research",
                (0..3).map(|i| json!({ "topic": format!("t{i}") })),
            )
            .after(Duration::from_secs(1)),
            Some(Message::TaskResult { task_id, .. }) => {
                ScriptedTurn::text(format!("noted {task_id}"))
            }
            _ => ScriptedTurn::text("started"),
        });
        let lead = Agent::builder("lead")
            .model(model)
            .background_tool(DeepResearch { secs: 2 })
            .build();
        let journal = Unreliable::new();
        let convo = durable(lead, &journal);
        convo.send_user("start").await.unwrap();
        // The journal fails from before the reply until t = 5 s: the reply,
        // the tasks' creations, their answers and their results are all
        // handed to it while it fails.
        tokio::time::sleep(Duration::from_millis(500)).await;
        journal.go_down();
        tokio::time::sleep(Duration::from_millis(4_400)).await;
        assert!(journal.refused() > 2, "appends failed meanwhile");
        let history = convo.history().await.unwrap();
        assert_eq!(
            history.len(),
            6,
            "the user, the calls, three answers, \"started\""
        );
        assert!(
            !history
                .messages()
                .iter()
                .any(|m| matches!(m, Message::TaskResult { .. })),
            "no result before its record is durable"
        );
        journal.recover();
        convo.settled().await.unwrap();

        let history = convo.history().await.unwrap();
        let records = journal.durable();
        let appended = records
            .iter()
            .filter(|r| matches!(r, JournalRecord::Appended { .. }))
            .count();
        assert_eq!(appended, history.len(), "each message in the log once");
        for (id, counts) in record_counts(&records) {
            assert_eq!(counts, (1, 1), "{id}: created and finished once each");
        }
        let replay = Replay::from_records(records);
        assert_eq!(replay.history, history.messages().to_vec());
        assert!(
            replay.pending_inputs.is_empty(),
            "{:?}",
            replay.pending_inputs
        );
        let logged: Vec<_> = replay.tasks.into_iter().map(|(t, _)| t).collect();
        let live = convo.tasks();
        assert_eq!(logged.len(), 3);
        assert_eq!(
            logged
                .iter()
                .map(|t| (t.id, t.status, t.attempts, t.outcome.clone()))
                .collect::<Vec<_>>(),
            live.iter()
                .map(|t| (t.id, t.status, t.attempts, t.outcome.clone()))
                .collect::<Vec<_>>()
        );
        assert!(live.iter().all(|t| t.status == TaskStatus::Succeeded));
    });
}

#[test]
fn an_input_sent_while_the_journal_is_down_is_delivered_once_durable() {
    block_on_paused(async {
        let journal = Unreliable::new();
        let convo = durable(Agent::builder("lead").model(echo_model()).build(), &journal);
        journal.go_down();
        let start = tokio::time::Instant::now();
        let sending = {
            let convo = convo.clone();
            tokio::spawn(async move { convo.send_user("hello").await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!sending.is_finished(), "not accepted before it is durable");
        assert!(convo.history().await.unwrap().is_empty());
        journal.recover();
        sending.await.unwrap().unwrap();
        // Refused at 0, 0.2 and 0.6 s; the try at 1.4 s went through.
        assert_eq!(start.elapsed(), Duration::from_millis(200 + 400 + 800));
        assert_eq!(journal.refused(), 3);
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        assert_eq!(texts(&history), vec!["hello", "re: hello"]);
        let replay = Replay::from_records(journal.durable());
        assert_eq!(replay.history, history.messages().to_vec());
        assert!(replay.pending_inputs.is_empty());
    });
}

#[test]
fn a_journal_closed_for_good_stops_the_conversation_with_its_error() {
    block_on_paused(async {
        // The lead delegates one task; the sub-agent answers after 2 s. The
        // journal closes for good (its store's writer died) at t = 1 s.
        let model = ScriptedModel::from_fn(|req| match (req.agent.as_str(), req.messages.last()) {
            ("lead", Some(Message::User { .. })) => ScriptedTurn::calls(
                "create_task",
                [json!({"agent": "helper", "prompt": "look it up"})],
            ),
            ("lead", _) => ScriptedTurn::text("noted"),
            _ => ScriptedTurn::text("found it").after(Duration::from_secs(2)),
        });
        let helper = Agent::builder("helper").model(model.clone()).build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([helper])
            .build();
        let journal = Unreliable::new();
        let convo = durable(lead, &journal);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        journal.close();

        // No retrying forever (the clock is paused: retries would run it
        // on to the limit): the conversation stops and says why.
        let settled = tokio::time::timeout(Duration::from_secs(600), convo.settled())
            .await
            .expect("settled answers instead of retrying forever");
        let closed = |r: Result<(), baton::RuntimeError>| match r {
            Err(baton::RuntimeError::Journal(why)) => {
                assert!(why.contains("writer has stopped"), "{why}")
            }
            other => panic!("expected the journal's error, got {other:?}"),
        };
        closed(settled);
        closed(convo.send_user("anyone there?").await);
        // Stopping it now says why it stopped, too.
        closed(convo.suspend().await);
        closed(convo.shutdown().await);
        assert_eq!(convo.live_agents(), 0, "the whole tree stopped");
        // The result never became durable, so it never entered history,
        // and the log still has the task running: a resumed conversation
        // (on a store that works again) starts it over.
        let replay = Replay::from_records(journal.durable());
        assert!(!replay
            .history
            .iter()
            .any(|m| matches!(m, Message::TaskResult { .. })));
        assert_eq!(replay.tasks.len(), 1);
        assert!(!replay.tasks[0].0.status.is_terminal());
    });
}

/// The lead starts a background tool of 3 s and a sub-agent that answers
/// after 3 s, and notes each result.
fn busy_lead() -> Agent {
    let model = ScriptedModel::from_fn(|req| match (req.agent.as_str(), req.messages.last()) {
        ("lead", Some(Message::User { .. })) => {
            ScriptedTurn::call("deep_research", json!({"topic": "bees"})).and_call(
                "create_task",
                json!({"agent": "helper", "prompt": "look it up"}),
            )
        }
        ("lead", Some(Message::TaskResult { task_id, .. })) => {
            ScriptedTurn::text(format!("noted {task_id}"))
        }
        ("lead", _) => ScriptedTurn::text("started"),
        _ => ScriptedTurn::text("found it").after(Duration::from_secs(3)),
    });
    let helper = Agent::builder("helper").model(model.clone()).build();
    Agent::builder("lead")
        .model(model)
        .background_tool(DeepResearch { secs: 3 })
        .delegates_to([helper])
        .build()
}

#[test]
fn a_suspended_conversation_starts_its_running_tasks_again_on_resume() {
    let journal = MemoryJournal::new();
    let first = journal.clone();
    block_on_paused(async move {
        let convo = Orchestrator::builder(busy_lead())
            .journal(Arc::new(first.clone()))
            .spawn();
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        convo.suspend().await.unwrap();
        assert_eq!(convo.live_agents(), 0, "the whole tree stopped");
        // Nothing was ended: the log has both tasks running.
        assert!(!first
            .records()
            .iter()
            .any(|r| matches!(r, JournalRecord::TaskFinished { .. })));
        // Later: what the tasks would have done did not happen meanwhile.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!first
            .records()
            .iter()
            .any(|r| matches!(r, JournalRecord::TaskFinished { .. })));
    });

    block_on_paused(async move {
        let replay = Replay::from_records(journal.records());
        assert_eq!(replay.tasks.len(), 2);
        assert!(replay.tasks.iter().all(|(t, _)| !t.status.is_terminal()));
        let convo = Orchestrator::builder(busy_lead())
            .journal(Arc::new(journal.clone()))
            .resume(replay)
            .spawn();
        convo.settled().await.unwrap();
        let tasks = convo.tasks();
        assert_eq!(tasks.len(), 2);
        // Both ran to the end in the resumed conversation (they had not
        // ended before: see above), in a second attempt.
        for task in &tasks {
            assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
            assert_eq!(task.attempts, 2, "{task:?}");
        }
        let history = convo.history().await.unwrap();
        assert_eq!(history.check_tool_protocol(), Ok(()));
        assert_eq!(results_in(&history), 2, "each result once");
    });
}

#[test]
fn a_shut_down_conversation_cancels_its_running_tasks() {
    block_on_paused(async {
        let journal = MemoryJournal::new();
        let convo = durable(busy_lead(), &journal);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        convo.shutdown().await.unwrap();
        let replay = Replay::from_records(journal.records());
        assert_eq!(replay.tasks.len(), 2);
        assert!(replay
            .tasks
            .iter()
            .all(|(t, _)| t.status == TaskStatus::Cancelled));
    });
}

#[test]
fn inputs_are_delivered_in_the_order_of_the_log_when_an_append_failed() {
    block_on_paused(async {
        let journal = Unreliable::new();
        let convo = durable(Agent::builder("lead").model(echo_model()).build(), &journal);
        // A's append fails; B's, right after, succeeds and so makes A
        // durable too. A must still come first.
        journal.go_down();
        let a = {
            let convo = convo.clone();
            tokio::spawn(async move { convo.send_user("A").await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        journal.recover();
        let b = {
            let convo = convo.clone();
            tokio::spawn(async move { convo.send_user("B").await })
        };
        // At every moment a crash would resume as the conversation was:
        // the inputs in history, then those pending, in the log's order.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let replay = Replay::from_records(journal.durable());
            let mut inputs: Vec<String> = texts(&convo.history().await.unwrap())
                .into_iter()
                .filter(|t| !t.starts_with("re: "))
                .collect();
            inputs.extend(replay.pending_inputs.iter().filter_map(|m| match m {
                Message::User { content } => Some(content.clone()),
                _ => None,
            }));
            let logged = replay.history.len() + replay.pending_inputs.len();
            if logged > 0 {
                assert_eq!(inputs, ["A", "B"], "{:?}", replay);
            }
        }
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        convo.settled().await.unwrap();
        assert_eq!(
            texts(&convo.history().await.unwrap()),
            ["A", "re: A", "B", "re: B"]
        );
    });
}

/// A result's append that succeeds while a retry is scheduled (an earlier
/// one failed) resets the pause: the next, unrelated outage is tried again
/// after 200 ms, not after the pause the last one reached. (Before, only
/// a success with nothing in flight and no retry scheduled reset it.)
#[test]
fn a_success_while_a_retry_is_scheduled_resets_the_pause() {
    block_on_paused(async {
        let model = ScriptedModel::from_fn(|req: &baton::ChatRequest| {
            match (req.agent.as_str(), req.messages.last()) {
                ("leaf", Some(Message::User { content })) => {
                    let secs = match content.as_str() {
                        "1" => 1,
                        "2" => 2,
                        _ => 5,
                    };
                    ScriptedTurn::text("leaf done").after(Duration::from_secs(secs))
                }
                (_, Some(Message::User { .. })) => ScriptedTurn::calls(
                    "create_task",
                    (1..=3).map(|i| json!({"agent": "leaf", "prompt": i.to_string()})),
                ),
                _ => ScriptedTurn::text("ok"),
            }
        });
        let leaf = Agent::builder("leaf").model(model.clone()).build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([leaf])
            .build();
        let journal = Unreliable::new();
        let convo = durable(lead, &journal);
        let start = tokio::time::Instant::now();
        let at = |ms: u64| tokio::time::sleep_until(start + Duration::from_millis(ms));
        convo.send_user("go").await.unwrap();
        at(500).await;
        journal.hold_results();
        // Results 1 and 2 (at 1 s and 2 s) are in flight; 1 fails: a
        // retry is scheduled in 200 ms; then 2 lands, and 1 with it.
        at(2_100).await;
        journal.answer_oldest(false);
        at(2_150).await;
        journal.answer_oldest(true);
        at(2_500).await;
        assert_eq!(results_in(&convo.history().await.unwrap()), 2);
        journal.release();
        // Another outage: result 3 (at 5 s) fails; the store is back at
        // 5.1 s; the retry after 200 ms makes it durable.
        at(4_500).await;
        journal.go_down();
        at(5_100).await;
        journal.recover();
        at(5_300).await;
        assert_eq!(
            results_in(&convo.history().await.unwrap()),
            3,
            "not retried after 200 ms"
        );
        convo.settled().await.unwrap();
    });
}

/// A worker stopped by a closed journal reports `Failed`; its parent, with
/// retries left, does not start it again (new model calls and tools while
/// the journal is known closed): it stops too.
#[test]
fn a_worker_failed_by_a_closed_journal_is_not_started_again() {
    block_on_paused(async {
        let helper_turns = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&helper_turns);
        let model =
            ScriptedModel::from_fn(move |req| match (req.agent.as_str(), req.messages.last()) {
                ("lead", Some(Message::User { .. })) => ScriptedTurn::calls(
                    "create_task",
                    [json!({"agent": "helper", "prompt": "look it up"})],
                ),
                ("lead", _) => ScriptedTurn::text("noted"),
                ("helper", Some(Message::User { .. })) => {
                    counted.fetch_add(1, Ordering::SeqCst);
                    ScriptedTurn::call("deep_research", json!({"topic": "bees"}))
                }
                _ => ScriptedTurn::text("found it"),
            });
        let helper = Agent::builder("helper")
            .model(model.clone())
            .background_tool(DeepResearch { secs: 2 })
            .build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([helper])
            .supervision(Supervision::retry(2))
            .build();
        let journal = Unreliable::new();
        let convo = durable(lead, &journal);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        journal.close();
        let settled = tokio::time::timeout(Duration::from_secs(600), convo.settled())
            .await
            .expect("settled answers");
        assert!(
            matches!(settled, Err(baton::RuntimeError::Journal(_))),
            "{settled:?}"
        );
        assert_eq!(
            helper_turns.load(Ordering::SeqCst),
            1,
            "the sub-agent was started again (a new attempt) after the journal closed"
        );
    });
}

/// `send_user` after `suspend` answers `Stopped`, and its input is not in
/// the log (a resume would answer an input its sender was told failed).
#[test]
fn an_input_sent_after_suspend_is_refused_and_not_journaled() {
    block_on_paused(async {
        let journal = MemoryJournal::new();
        let agent = Agent::builder("assistant").model(echo_model()).build();
        let convo = durable(agent, &journal);
        convo.send_user("first").await.unwrap();
        convo.settled().await.unwrap();
        convo.suspend().await.unwrap();
        let late = convo.send_user("late").await;
        let logged = journal
            .records()
            .iter()
            .any(|r| matches!(r, JournalRecord::UserInput { text } if text == "late"));
        assert_eq!(late, Err(baton::RuntimeError::Stopped));
        assert!(
            !logged,
            "the refused input is in the log (a resume answers it)"
        );
    });
}

/// A `settled` waiting when the conversation is suspended answers with an
/// error, not `Ok`: its task still runs (in the log) and never settled.
#[test]
fn settled_pending_across_suspend_answers_stopped() {
    block_on_paused(async {
        let model = ScriptedModel::from_fn(|req| match req.messages.last() {
            Some(Message::User { .. }) => {
                ScriptedTurn::call("deep_research", json!({"topic": "bees"}))
            }
            _ => ScriptedTurn::text("noted"),
        });
        let agent = Agent::builder("assistant")
            .model(model)
            .background_tool(DeepResearch { secs: 30 })
            .build();
        let journal = MemoryJournal::new();
        let convo = durable(agent, &journal);
        convo.send_user("go").await.unwrap();
        let waiter = {
            let convo = convo.clone();
            tokio::spawn(async move { convo.settled().await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        convo.suspend().await.unwrap();
        let settled = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("settled answers")
            .unwrap();
        assert_eq!(settled, Err(baton::RuntimeError::Stopped));
    });
}

/// A lead that delegates once to `helper` and notes its result; the model
/// records every request.
fn delegating_model() -> ScriptedModel {
    ScriptedModel::from_fn(|req| match (req.agent.as_str(), req.messages.last()) {
        ("lead", Some(Message::User { .. })) => ScriptedTurn::call(
            "create_task",
            json!({"agent": "helper", "prompt": "look it up"}),
        ),
        ("lead", _) => ScriptedTurn::text("noted"),
        _ => ScriptedTurn::text("found it"),
    })
    .recording()
}

fn delegating_lead(model: &ScriptedModel) -> Agent {
    let helper = Agent::builder("helper").model(model.clone()).build();
    Agent::builder("lead")
        .model(model.clone())
        .delegates_to([helper])
        .build()
}

/// Suspends `convo` (or shuts it down) as soon as an agent has created a
/// task: the sub-agent's seed is made, but the sub-agent has not run yet.
/// (It runs on this thread, after this task: the task's event wakes this
/// one before the sub-agent is spawned.)
fn stop_at_first_task(
    convo: &baton::Conversation,
    suspend: bool,
) -> tokio::task::JoinHandle<Result<(), baton::RuntimeError>> {
    let mut events = convo.subscribe();
    let convo = convo.clone();
    tokio::task::spawn_local(async move {
        wait_for(&mut events, |e| {
            matches!(e, baton::Event::TaskCreated { .. })
        })
        .await;
        if suspend {
            convo.suspend().await
        } else {
            convo.shutdown().await
        }
    })
}

/// The sub-agent stopped at once: it never started (its task never
/// read running).
fn assert_never_started(events: &mut tokio::sync::broadcast::Receiver<baton::EventEnvelope>) {
    let started = matching(&drain(events), |e| {
        matches!(e, baton::Event::TaskStarted { .. })
    });
    assert!(started.is_empty(), "{started:?}");
}

/// A sub-agent not started yet when the conversation is suspended starts
/// no work: no model request (before, it sent one after `suspend` had
/// returned). The log keeps its task running, so a resume runs it.
#[test]
fn a_sub_agent_not_started_when_suspended_sends_nothing_and_runs_after_resume() {
    let journal = MemoryJournal::new();
    let first = journal.clone();
    block_on_paused(async move {
        let model = delegating_model();
        let convo = durable(delegating_lead(&model), &first);
        let mut events = convo.subscribe();
        let suspended = stop_at_first_task(&convo, true);
        convo.send_user("go").await.unwrap();
        suspended.await.unwrap().unwrap();
        assert_eq!(convo.live_agents(), 0);
        assert_eq!(
            requests_of(&model, "helper"),
            0,
            "the sub-agent sent a model request after the conversation was suspended"
        );
        assert_never_started(&mut events);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(requests_of(&model, "helper"), 0);
        let replay = Replay::from_records(first.records());
        assert_eq!(replay.tasks.len(), 1);
        assert!(!replay.tasks[0].0.status.is_terminal(), "{replay:?}");
    });

    block_on_paused(async move {
        let model = delegating_model();
        let convo = Orchestrator::builder(delegating_lead(&model))
            .journal(Arc::new(journal.clone()))
            .resume(Replay::from_records(journal.records()))
            .spawn();
        convo.settled().await.unwrap();
        let task = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!((task.status, task.attempts), (TaskStatus::Succeeded, 2));
        assert_eq!(requests_of(&model, "helper"), 1);
        let history = convo.history().await.unwrap();
        assert_eq!(history.check_tool_protocol(), Ok(()));
        assert_eq!(results_in(&history), 1);
    });
}

/// A sub-agent not started yet when the conversation is shut down starts
/// no work, and its task is cancelled like the others.
#[test]
fn a_sub_agent_not_started_when_shut_down_sends_nothing_and_is_cancelled() {
    block_on_paused(async {
        let model = delegating_model();
        let journal = MemoryJournal::new();
        let convo = durable(delegating_lead(&model), &journal);
        let mut events = convo.subscribe();
        let stopped = stop_at_first_task(&convo, false);
        convo.send_user("go").await.unwrap();
        stopped.await.unwrap().unwrap();
        assert_eq!(convo.live_agents(), 0);
        assert_eq!(
            requests_of(&model, "helper"),
            0,
            "the sub-agent sent a model request after the conversation was shut down"
        );
        assert_never_started(&mut events);
        assert_eq!(
            convo.check_task(TaskId::new(1)).unwrap().status,
            TaskStatus::Cancelled
        );
        let replay = Replay::from_records(journal.records());
        assert_eq!(replay.tasks.len(), 1);
        assert_eq!(replay.tasks[0].0.status, TaskStatus::Cancelled);
    });
}

/// A tree with a worker on another thread: the lead delegates to `mid`
/// (task 1); `mid` runs a quick background tool (task 2), delegates to
/// `leaf` (task 3) and blocks its thread in an inline tool, so the
/// leaf's seed waits behind it on that thread. Returns the lead and what
/// says (and releases) the hold.
fn held_tree(
    model: &ScriptedModel,
) -> (
    Agent,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (hold, holding, release) = HoldThread::new();
    let leaf = Agent::builder("leaf").model(model.clone()).build();
    let mid = Agent::builder("mid")
        .model(model.clone())
        .background_tool(Flaky {
            calls: Arc::default(),
            failures: 0,
            takes: Duration::ZERO,
        })
        .tool(hold)
        .delegates_to([leaf])
        .build();
    let lead = Agent::builder("lead")
        .model(model.clone())
        .delegates_to([mid])
        .build();
    (lead, holding, release)
}

fn held_tree_model() -> ScriptedModel {
    ScriptedModel::from_fn(|req| match (req.agent.as_str(), req.messages.last()) {
        ("lead", Some(Message::User { .. })) => {
            ScriptedTurn::call("create_task", json!({"agent": "mid", "prompt": "m"}))
        }
        ("mid", Some(Message::User { .. })) => ScriptedTurn::call("flaky", json!({}))
            .and_call("create_task", json!({"agent": "leaf", "prompt": "l"}))
            .and_call("hold_thread", json!({})),
        _ => ScriptedTurn::text("done"),
    })
    .recording()
}

/// Whether the log holds a `TaskFinished` for `id`.
fn finished_in(records: &[JournalRecord], id: u64) -> bool {
    records.iter().any(
        |r| matches!(r, JournalRecord::TaskFinished { task_id, .. } if *task_id == TaskId::new(id)),
    )
}

/// Stops (suspends, or shuts down) the [`held_tree`] while `mid` holds its
/// thread, on a pool of one thread. The stop must not return until the
/// thread is released and `mid` and the leaf have stopped: by then `mid`
/// has journaled what it had to (the quick tool's result), and nothing
/// of the tree is left to write. (Before, it returned once the lead had
/// stopped, and `mid` wrote to the journal afterwards.) Returns the log.
fn stop_while_a_worker_holds_its_thread(suspend: bool) -> MemoryJournal {
    let journal = MemoryJournal::new();
    let log = journal.clone();
    block_on_paused(async move {
        let model = held_tree_model();
        let (lead, holding, release) = held_tree(&model);
        // Real threads for the workers (their clock is not paused).
        let convo = Orchestrator::builder(lead)
            .journal(Arc::new(journal.clone()))
            .worker_threads(1)
            .spawn();
        convo.send_user("go").await.unwrap();
        held(holding).await;
        let mut stop: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> = if suspend {
            Box::pin(convo.suspend())
        } else {
            Box::pin(convo.shutdown())
        };
        // Once the lead has stopped this thread has nothing to do, and the
        // paused clock runs ahead: a stop that returns without waiting for
        // the held worker has returned by then.
        let early = tokio::time::timeout(Duration::from_secs(60), &mut stop).await;
        assert!(
            early.is_err(),
            "returned while a worker was still running: {early:?}"
        );
        drop(release);
        stop.await.unwrap();
        assert_eq!(convo.live_agents(), 0);
        assert!(
            finished_in(&journal.records(), 2),
            "the quick tool's result, journaled by `mid` as it stopped, is in the log"
        );
        assert_eq!(
            requests_of(&model, "leaf"),
            0,
            "the leaf, on its way to its thread, sent a model request"
        );
    });
    log
}

#[test]
fn suspend_returns_once_workers_on_other_threads_have_stopped_and_journaled() {
    let journal = stop_while_a_worker_holds_its_thread(true);
    let replay = Replay::from_records(journal.records());
    let status = |id: u64| {
        replay
            .tasks
            .iter()
            .find(|(t, _)| t.id == TaskId::new(id))
            .map(|(t, _)| t.status)
    };
    assert_eq!(status(2), Some(TaskStatus::Succeeded));
    assert!(!status(1).unwrap().is_terminal() && !status(3).unwrap().is_terminal());

    // Resumed, `mid` starts over (its leaf with it) and runs to the end.
    block_on_paused(async move {
        let model = held_tree_model();
        let (lead, _holding, release) = held_tree(&model);
        drop(release);
        let convo = Orchestrator::builder(lead)
            .journal(Arc::new(journal.clone()))
            .resume(replay)
            .spawn();
        convo.settled().await.unwrap();
        let mid = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!((mid.status, mid.attempts), (TaskStatus::Succeeded, 2));
        assert_eq!(requests_of(&model, "leaf"), 1);
    });
}

#[test]
fn shutdown_returns_once_workers_on_other_threads_have_stopped_and_journaled() {
    let journal = stop_while_a_worker_holds_its_thread(false);
    let replay = Replay::from_records(journal.records());
    // In log order: a worker's tasks come after its own (which their
    // records name as parent).
    let statuses: Vec<(TaskId, TaskStatus)> =
        replay.tasks.iter().map(|(t, _)| (t.id, t.status)).collect();
    assert_eq!(
        statuses,
        [
            (TaskId::new(1), TaskStatus::Cancelled),
            (TaskId::new(2), TaskStatus::Succeeded),
            // Cancelled by `mid` as it stopped, before the stop returned.
            (TaskId::new(3), TaskStatus::Cancelled),
        ]
    );
}

/// The pool's worker thread, as a worker's model request found it.
type WorkerThread = Arc<std::sync::OnceLock<(actix_rt::ArbiterHandle, std::thread::ThreadId)>>;

/// A journal that keeps every record in the order it was handed over and,
/// before it takes the records of an append that announces a task (a
/// `TaskCreated` or `TaskStarted`) made off the worker thread, lets the
/// worker thread run everything it has been sent: a worker started
/// before the records that announce its task are handed over has then run
/// its first turn and journaled its subtask, every time, rather than in
/// the rare case its thread outruns the parent's.
#[derive(Clone, Default)]
struct DrainsWorkersFirst {
    log: MemoryJournal,
    worker: WorkerThread,
    /// Appends that let the worker thread run first.
    drained: Arc<AtomicU32>,
}

impl DrainsWorkersFirst {
    /// Runs what `worker` has been sent, and what that starts.
    fn drain(worker: &actix_rt::ArbiterHandle) {
        let (done, ran) = std::sync::mpsc::channel();
        // Behind a seed sent before: its closure spawns the worker's first
        // run, and this one a task behind that run.
        worker.spawn_fn(move || {
            tokio::task::spawn_local(async move {
                let _ = done.send(());
            });
        });
        ran.recv_timeout(Duration::from_secs(60))
            .expect("the worker thread runs");
    }
}

impl baton::core::Journal for DrainsWorkersFirst {
    fn append(
        &self,
        records: Vec<JournalRecord>,
    ) -> futures::future::BoxFuture<'static, Result<(), baton::core::JournalError>> {
        let announces = records.iter().any(|r| {
            matches!(
                r,
                JournalRecord::TaskCreated { .. } | JournalRecord::TaskStarted { .. }
            )
        });
        if let Some((handle, thread)) = self.worker.get() {
            if announces && *thread != std::thread::current().id() {
                Self::drain(handle);
                self.drained.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.log.append(records)
    }
}

/// Checks that every record naming a task comes after the records that
/// announce it: its `TaskCreated` before its `TaskStarted`, its
/// `TaskFinished` and its subtasks' `TaskCreated`; and the `TaskStarted`
/// of the attempt that created a subtask (`attempt_of` says which)
/// before that subtask's `TaskCreated`.
fn assert_announced_first(records: &[JournalRecord], attempt_of: impl Fn(&TaskRecord) -> u32) {
    let mut created = std::collections::HashSet::new();
    let mut started = std::collections::HashSet::new();
    for (at, record) in records.iter().enumerate() {
        let (named, attempt) = match record {
            JournalRecord::TaskCreated { task, .. } => {
                created.insert(task.id);
                (task.parent, task.parent.map(|_| attempt_of(task)))
            }
            JournalRecord::TaskStarted { task_id, attempt } => {
                started.insert((*task_id, *attempt));
                (Some(*task_id), None)
            }
            JournalRecord::TaskFinished { task_id, .. } => (Some(*task_id), None),
            JournalRecord::UserInput { .. } | JournalRecord::Appended { .. } => (None, None),
        };
        let Some(named) = named else { continue };
        assert!(
            created.contains(&named),
            "record {at} names {named} before its TaskCreated: {record:?}\nlog: {records:#?}"
        );
        if let Some(attempt) = attempt.filter(|a| *a > 1) {
            assert!(
                started.contains(&(named, attempt)),
                "record {at} was made by attempt {attempt} of {named} before its TaskStarted: \
                 {record:?}\nlog: {records:#?}"
            );
        }
    }
}

/// A tree over a worker thread, with a retry: the lead delegates `mid`
/// ("first", task 1), whose first attempt fails at once and whose second
/// delegates to `leaf` (task 2); then `mid` again ("second", task 3),
/// which delegates to `leaf` (task 4). Each `mid` tells its leaf which
/// attempt it runs. The first request of a worker shows the test which
/// thread the workers run on.
fn retried_tree(worker: WorkerThread) -> (Agent, ScriptedModel) {
    let firsts = Arc::new(AtomicU32::new(0));
    let model = ScriptedModel::from_fn(move |req| {
        if req.agent.as_str() != "lead" {
            let _ = worker.set((actix_rt::Arbiter::current(), std::thread::current().id()));
        }
        match (req.agent.as_str(), req.messages.last()) {
            ("lead", Some(Message::User { .. })) => {
                ScriptedTurn::call("create_task", json!({"agent": "mid", "prompt": "first"}))
            }
            ("lead", Some(Message::TaskResult { task_id, .. })) if *task_id == TaskId::new(1) => {
                ScriptedTurn::call("create_task", json!({"agent": "mid", "prompt": "second"}))
            }
            ("mid", Some(Message::User { content })) => {
                let attempt = if content == "first" {
                    firsts.fetch_add(1, Ordering::SeqCst) + 1
                } else {
                    1
                };
                if content == "first" && attempt == 1 {
                    return ScriptedTurn::fail("the first attempt fails");
                }
                ScriptedTurn::call(
                    "create_task",
                    json!({"agent": "leaf", "prompt": format!("attempt {attempt}")}),
                )
            }
            _ => ScriptedTurn::text("done"),
        }
    })
    .recording();
    let leaf = Agent::builder("leaf").model(model.clone()).build();
    let mid = Agent::builder("mid")
        .model(model.clone())
        .delegates_to([leaf])
        .build();
    let lead = Agent::builder("lead")
        .model(model.clone())
        .delegates_to([mid])
        .supervision(Supervision::retry(1).backoff_ms(10))
        .build();
    (lead, model)
}

/// Which attempt of its parent created a task of [`retried_tree`].
fn attempt_in_prompt(task: &TaskRecord) -> u32 {
    match &task.kind {
        baton::core::TaskKind::Delegation { prompt, .. } => prompt
            .strip_prefix("attempt ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
        baton::core::TaskKind::Tool { .. } => 1,
    }
}

/// A worker on another thread starts only once the records that announce
/// its task are handed to the journal: its task's `TaskCreated` and, for a
/// retry, the attempt's `TaskStarted`. (Before, the delegating agent
/// started its workers, then handed its records over, and launched a retry,
/// then journaled its attempt: a worker that ran first journaled its
/// subtask before its own task was in the log, and a crash in between
/// left a child without its parent.) The journal lets the worker thread
/// run before it takes the lead's announcing records, so the old order
/// shows every time.
#[test]
fn a_worker_journals_only_after_the_records_that_announce_its_task() {
    block_on_paused(async {
        let journal = DrainsWorkersFirst::default();
        let (lead, model) = retried_tree(Arc::clone(&journal.worker));
        let convo = Orchestrator::builder(lead)
            .journal(Arc::new(journal.clone()))
            .worker_threads(1)
            .spawn();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        assert_eq!(requests_of(&model, "leaf"), 2);
        let mid = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!((mid.status, mid.attempts), (TaskStatus::Succeeded, 2));
        for id in 2..=4 {
            let task = convo.check_task(TaskId::new(id)).unwrap();
            assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
        }
        // The retry's `TaskStarted` and the second `mid`'s `TaskCreated`
        // let the worker thread run first.
        assert!(journal.drained.load(Ordering::Relaxed) >= 2);
        let records = journal.log.records();
        assert_announced_first(&records, attempt_in_prompt);
        // The log knows both attempts of task 1, and the tree.
        let replay = Replay::from_records(records);
        let parents: Vec<(TaskId, Option<TaskId>, u32)> = replay
            .tasks
            .iter()
            .map(|(t, _)| (t.id, t.parent, t.attempts))
            .collect();
        let (one, three) = (Some(TaskId::new(1)), Some(TaskId::new(3)));
        assert_eq!(
            parents,
            [
                (TaskId::new(1), None, 2),
                (TaskId::new(2), one, 1),
                (TaskId::new(3), None, 1),
                (TaskId::new(4), three, 1),
            ]
        );
        convo.shutdown().await.unwrap();
    });
}

/// A journal that keeps every record in the order it was handed over and,
/// the first time a worker on another thread hands over the `TaskCreated`
/// of a subtask of `target`, first has the test cancel `target` (on the
/// conversation's thread) and waits until that cancel has returned: the
/// cancel then finds the subtask in the registry while its `TaskCreated`
/// is not in the log yet, every time, rather than in the rare case the
/// cancel lands between the worker making the subtask and handing over
/// its records.
#[derive(Clone)]
struct CancelsMidBatch {
    log: MemoryJournal,
    target: TaskId,
    /// The conversation's thread: its appends pass straight through.
    root: std::thread::ThreadId,
    /// Asks the test to cancel `target`; answered once it has.
    cancel: tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::Sender<()>>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl baton::core::Journal for CancelsMidBatch {
    fn append(
        &self,
        records: Vec<JournalRecord>,
    ) -> futures::future::BoxFuture<'static, Result<(), baton::core::JournalError>> {
        let announces_a_subtask = records.iter().any(|r| {
            matches!(r, JournalRecord::TaskCreated { task, .. } if task.parent == Some(self.target))
        });
        if announces_a_subtask
            && std::thread::current().id() != self.root
            && !self.fired.swap(true, Ordering::SeqCst)
        {
            let (done, cancelled) = std::sync::mpsc::channel();
            self.cancel.send(done).expect("the test waits to cancel");
            cancelled
                .recv_timeout(Duration::from_secs(60))
                .expect("the test cancels");
        }
        self.log.append(records)
    }
}

/// How many `TaskFinished` records `records` hold for each task.
fn finishes_per_task(records: &[JournalRecord]) -> std::collections::BTreeMap<TaskId, usize> {
    let mut finished = std::collections::BTreeMap::new();
    for record in records {
        if let JournalRecord::TaskFinished { task_id, .. } = record {
            *finished.entry(*task_id).or_default() += 1;
        }
    }
    finished
}

/// A cancel of a task whose worker, on another thread, has just made its
/// subtasks (in the registry) and not yet handed their `TaskCreated` to
/// the journal: the subtree reads cancelled at once, and each subtask's
/// cancellation is journaled after its `TaskCreated`, once, by the agent
/// that owns it (the worker, as it stops). Before, the cancelling agent
/// journaled the whole subtree's ends itself: the subtasks' `TaskFinished`
/// came before their `TaskCreated`, so the log (`Replay`, the store's
/// task table) never saw them end, and their owner did not journal them
/// again. The journal has the test cancel in that window, every time.
#[test]
fn a_subtree_cancelled_while_its_worker_announces_subtasks_ends_after_them_in_the_log() {
    block_on_paused(async {
        let model = ScriptedModel::from_fn(|req| match (req.agent.as_str(), req.messages.last()) {
            ("lead", Some(Message::User { .. })) => {
                ScriptedTurn::call("create_task", json!({"agent": "mid", "prompt": "m"}))
            }
            // Task 2: a sub-agent; task 3: a background tool.
            ("mid", Some(Message::User { .. })) => {
                ScriptedTurn::call("create_task", json!({"agent": "leaf", "prompt": "l"}))
                    .and_call("forever", json!({}))
            }
            ("leaf", _) => ScriptedTurn::hang(),
            _ => ScriptedTurn::text("ok"),
        });
        let leaf = Agent::builder("leaf").model(model.clone()).build();
        let mid = Agent::builder("mid")
            .model(model.clone())
            .delegates_to([leaf])
            .background_tool(Forever)
            .build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([mid])
            .build();
        let (cancel, mut to_cancel) = tokio::sync::mpsc::unbounded_channel();
        let journal = CancelsMidBatch {
            log: MemoryJournal::default(),
            target: TaskId::new(1),
            root: std::thread::current().id(),
            cancel,
            fired: Arc::default(),
        };
        let convo = Orchestrator::builder(lead)
            .journal(Arc::new(journal.clone()))
            .worker_threads(1)
            .spawn();
        let mut events = convo.subscribe();
        convo.send_user("go").await.unwrap();
        let done = to_cancel.recv().await.expect("the worker announces");
        assert_eq!(
            convo.cancel_task(TaskId::new(1)).await,
            Ok(TaskStatus::Cancelled)
        );
        let status = |n| convo.check_task(TaskId::new(n)).map(|t| t.status);
        let subtree = || [1, 2, 3].map(status);
        let cancelled = [Some(TaskStatus::Cancelled); 3];
        assert_eq!(subtree(), cancelled, "the subtree reads cancelled at once");
        done.send(()).unwrap();
        let check = |records: Vec<JournalRecord>| {
            assert_announced_first(&records, |_| 1);
            let once: std::collections::BTreeMap<TaskId, usize> =
                (1..=3).map(|n| (TaskId::new(n), 1)).collect();
            assert_eq!(finishes_per_task(&records), once, "{records:#?}");
            let replay = Replay::from_records(records);
            let logged: Vec<(TaskId, TaskStatus)> =
                replay.tasks.iter().map(|(t, _)| (t.id, t.status)).collect();
            let all_cancelled: Vec<(TaskId, TaskStatus)> = (1..=3)
                .map(|n| (TaskId::new(n), TaskStatus::Cancelled))
                .collect();
            assert_eq!(logged, all_cancelled);
        };
        // Settled includes the ends journaled by the subtree's owners.
        convo.settled().await.unwrap();
        check(journal.log.records());
        convo.shutdown().await.unwrap();
        check(journal.log.records());
        assert_eq!(subtree(), cancelled);
        assert_eq!(convo.live_agents(), 0);
        // Each task's end is announced once, after the task.
        let mut announced = Vec::new();
        for envelope in drain(&mut events) {
            match envelope.event {
                baton::Event::TaskCreated { task_id, .. } => announced.push((task_id, "created")),
                baton::Event::TaskFinished { task_id, .. } => announced.push((task_id, "finished")),
                _ => {}
            }
        }
        for n in 1..=3 {
            let id = TaskId::new(n);
            let of_task: Vec<&str> = announced
                .iter()
                .filter(|(t, _)| *t == id)
                .map(|(_, what)| *what)
                .collect();
            assert_eq!(of_task, ["created", "finished"], "{id}: {announced:?}");
        }
    });
}

/// A lead that delegates to `mid`, which (after a second) delegates to
/// the remote `far`, run by `executor`.
fn remote_tree(executor: &Arc<Noting>) -> Agent {
    let model = ScriptedModel::from_fn(|req| match (req.agent.as_str(), req.messages.last()) {
        ("lead", Some(Message::User { .. })) => {
            ScriptedTurn::call("create_task", json!({"agent": "mid", "prompt": "m"}))
        }
        ("mid", Some(Message::User { .. })) => {
            ScriptedTurn::call("create_task", json!({"agent": "far", "prompt": "f"}))
                .after(Duration::from_secs(1))
        }
        _ => ScriptedTurn::text("done"),
    });
    let far = Agent::builder("far").remote(executor.clone()).build();
    let mid = Agent::builder("mid")
        .model(model.clone())
        .delegates_to([far])
        .build();
    Agent::builder("lead")
        .model(model)
        .delegates_to([mid])
        .build()
}

/// Stops (suspends, or shuts down) the [`remote_tree`] just as the record
/// of `mid`'s remote task (task 2) becomes durable: its append lands
/// after the stop has begun and before `mid` gets its `Shutdown` (which
/// goes down the tree through the lead). The task must not be handed
/// out: it would start after the stop. (Before, it was: on suspend, a
/// resume dispatched it a second time.) Returns the journal.
fn stop_as_a_remote_task_becomes_durable(suspend: bool) -> Unreliable {
    let journal = Unreliable::new();
    let log = journal.clone();
    block_on_paused(async move {
        let executor = Arc::new(Noting::new(&journal));
        let convo = durable(remote_tree(&executor), &journal);
        convo.send_user("go").await.unwrap();
        journal.hold();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            executor.dispatched().is_empty(),
            "not published before its record is durable"
        );
        // Wakes `mid` (whose publication waits for the append) first, then
        // the lead with the stop: `mid` finds its record durable before
        // the stop reaches it.
        journal.release();
        if suspend {
            convo.suspend().await.unwrap();
        } else {
            convo.shutdown().await.unwrap();
        }
        assert_eq!(
            executor.dispatched(),
            [],
            "the remote task was handed out after the stop began"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(executor.dispatched().is_empty());
    });
    log
}

#[test]
fn a_remote_task_durable_as_the_conversation_is_suspended_is_dispatched_once_after_resume() {
    let journal = stop_as_a_remote_task_becomes_durable(true);
    let replay = Replay::from_records(journal.durable());
    // Both still running in the log: `mid` and its remote task.
    assert_eq!(replay.tasks.len(), 2);
    assert!(replay.tasks.iter().all(|(t, _)| !t.status.is_terminal()));

    // Resumed: `mid` starts over (its remote task, under it, is cancelled
    // as its parent starts over) and hands out its new remote task, once.
    block_on_paused(async move {
        let executor = Arc::new(Noting::new(&journal));
        let convo = Orchestrator::builder(remote_tree(&executor))
            .journal(Arc::new(journal.clone()))
            .resume(replay)
            .spawn();
        convo.settled().await.unwrap();
        assert_eq!(executor.dispatched(), [TaskId::new(3)]);
        let status = |n: u64| convo.check_task(TaskId::new(n)).unwrap().status;
        assert_eq!(status(1), TaskStatus::Succeeded);
        assert_eq!(status(2), TaskStatus::Cancelled);
        assert_eq!(status(3), TaskStatus::Succeeded);
    });
}

#[test]
fn a_remote_task_durable_as_the_conversation_is_shut_down_is_cancelled_not_dispatched() {
    let journal = stop_as_a_remote_task_becomes_durable(false);
    let replay = Replay::from_records(journal.durable());
    assert_eq!(replay.tasks.len(), 2);
    assert!(replay
        .tasks
        .iter()
        .all(|(t, _)| t.status == TaskStatus::Cancelled));
}

/// A worker whose task its parent has just cancelled finds the journal
/// closed: its report (failed by the closed journal) reaches a parent that
/// no longer has the task and ignores it. The conversation must stop all
/// the same and `settled` answer with the journal's error. (Before, nothing
/// carried the error up: the tree, marked stopping, started no turn, and
/// `settled` never answered.) On one thread the worker meets the journal
/// just before its parent removes the task (an actor handles its mailbox
/// before its futures, so the parent's `Shutdown` would win otherwise);
/// its report then arrives after the removal, as in the race where the
/// removal comes first.
#[test]
fn a_closed_journal_met_by_a_worker_just_cancelled_still_stops_the_conversation() {
    block_on_paused(async {
        let model = ScriptedModel::from_fn(|req| match (req.agent.as_str(), req.messages.last()) {
            ("lead", Some(Message::User { .. })) => ScriptedTurn::call(
                "create_task",
                json!({"agent": "helper", "prompt": "look it up"}),
            ),
            ("lead", _) => ScriptedTurn::text("noted"),
            ("helper", Some(Message::User { .. })) => {
                ScriptedTurn::call("deep_research", json!({"topic": "bees"}))
            }
            _ => ScriptedTurn::text("found it"),
        });
        let helper = Agent::builder("helper")
            .model(model.clone())
            .background_tool(DeepResearch { secs: 2 })
            .build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([helper])
            .build();
        let journal = Unreliable::new();
        let convo = durable(lead, &journal);
        convo.send_user("go").await.unwrap();
        journal.hold();
        // The helper's tool ends at 2 s: its result waits for a held append.
        tokio::time::sleep(Duration::from_secs(3)).await;
        // That append fails, closed for good (waking the helper first),
        // and the user cancels the helper's task (then the lead).
        journal.close();
        assert_eq!(
            convo.cancel_task(TaskId::new(1)).await,
            Ok(TaskStatus::Cancelled)
        );
        let settled = tokio::time::timeout(Duration::from_secs(600), convo.settled())
            .await
            .expect("settled answers (the conversation stopped)");
        assert!(
            matches!(&settled, Err(baton::RuntimeError::Journal(why)) if why.contains("writer has stopped")),
            "{settled:?}"
        );
        assert_eq!(convo.live_agents(), 0, "the whole tree stopped");
    });
}

/// A background tool that runs until the test opens its gate.
struct Gate {
    open: Arc<tokio::sync::Notify>,
}

impl Tool for Gate {
    type Args = NoArgs;
    fn name(&self) -> &str {
        "gate"
    }
    fn description(&self) -> &str {
        "Waits for its gate to open."
    }
    async fn call(&self, _args: NoArgs) -> Result<ToolOutput, ToolError> {
        self.open.notified().await;
        Ok("opened".into())
    }
}

/// With one slot in the tree's concurrency budget: the lead delegates to
/// `mid` (task 1), then (at 0.5 s) runs the gate tool (task 2), which waits for the
/// slot `mid` holds; after a second `mid` starts task 3 (`leaf` if
/// `delegate`, else the background tool `deep_research`), which waits
/// for the slot behind the gate tool, and goes idle, handing its slot to
/// the gate tool. So task 3 waits for the slot until the gate opens.
fn one_slot_tree(delegate: bool, open: &Arc<tokio::sync::Notify>) -> Agent {
    let model =
        ScriptedModel::from_fn(move |req| match (req.agent.as_str(), req.messages.last()) {
            ("lead", Some(Message::User { .. })) => {
                ScriptedTurn::call("create_task", json!({"agent": "mid", "prompt": "m"}))
            }
            ("lead", Some(Message::Tool { name, .. })) if name == "create_task" => {
                // Once `mid` holds the slot.
                ScriptedTurn::call("gate", json!({})).after(Duration::from_millis(500))
            }
            ("mid", Some(Message::User { .. })) if delegate => {
                ScriptedTurn::call("create_task", json!({"agent": "leaf", "prompt": "l"}))
                    .after(Duration::from_secs(1))
            }
            ("mid", Some(Message::User { .. })) => {
                ScriptedTurn::call("deep_research", json!({"topic": "bees"}))
                    .after(Duration::from_secs(1))
            }
            _ => ScriptedTurn::text("done"),
        })
        .recording();
    let leaf = Agent::builder("leaf").model(model.clone()).build();
    let mid = Agent::builder("mid")
        .model(model.clone())
        .background_tool(DeepResearch { secs: 1 })
        .delegates_to([leaf])
        .build();
    Agent::builder("lead")
        .model(model)
        .background_tool(Gate {
            open: Arc::clone(open),
        })
        .delegates_to([mid])
        .limits(baton::core::Limits {
            max_concurrent: 1,
            ..baton::core::Limits::default()
        })
        .build()
}

/// Suspends the [`one_slot_tree`] as the gate opens: the gate tool's slot
/// goes to task 3 after the stop began and before `mid`'s `Shutdown`
/// (one hop further down) reaches it. Task 3's attempt must not begin:
/// no `TaskStarted`, not running. (Before, a sub-agent was marked running
/// and its attempt's clock started; a tool started running.)
fn a_slot_granted_while_stopping(delegate: bool) {
    block_on_paused(async move {
        let open = Arc::new(tokio::sync::Notify::new());
        let journal = MemoryJournal::new();
        let convo = durable(one_slot_tree(delegate, &open), &journal);
        let mut events = convo.subscribe();
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let status = |n: u64| convo.check_task(TaskId::new(n)).unwrap().status;
        assert_eq!(
            (status(1), status(2), status(3)),
            (
                TaskStatus::Running,
                TaskStatus::Running,
                TaskStatus::Pending
            )
        );
        // Wakes the gate tool first, then the lead with the stop.
        open.notify_one();
        convo.suspend().await.unwrap();
        let started = matching(
            &drain(&mut events),
            |e| matches!(e, baton::Event::TaskStarted { task_id, .. } if *task_id == TaskId::new(3)),
        );
        assert!(
            started.is_empty(),
            "task 3 began after the stop: {started:?}"
        );
        assert_eq!(status(3), TaskStatus::Pending);
        // Suspended, not ended: the log has it still to run.
        let replay = Replay::from_records(journal.records());
        let third = replay.tasks.iter().find(|(t, _)| t.id == TaskId::new(3));
        assert!(
            third.is_some_and(|(t, _)| !t.status.is_terminal()),
            "{replay:?}"
        );
    });
}

#[test]
fn a_sub_agent_granted_its_slot_while_the_conversation_stops_does_not_begin() {
    a_slot_granted_while_stopping(true);
}

#[test]
fn a_tool_granted_its_slot_while_the_conversation_stops_does_not_begin() {
    a_slot_granted_while_stopping(false);
}

/// An approval handled after the stop began (sent just before it) starts
/// nothing, so it answers with the stop's error rather than `Pending`; the
/// task still awaits approval, in the log too (a resumed conversation
/// asks again).
#[test]
fn an_approval_while_the_conversation_is_suspended_answers_stopped() {
    block_on_paused(async {
        let model = delegating_model();
        let helper = Agent::builder("helper").model(model.clone()).build();
        let lead = Agent::builder("lead")
            .model(model.clone())
            .delegates_to([helper])
            .require_approval("helper")
            .build();
        let journal = MemoryJournal::new();
        let convo = durable(lead, &journal);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let id = TaskId::new(1);
        assert_eq!(
            convo.check_task(id).unwrap().status,
            TaskStatus::AwaitingApproval
        );
        // The approval is in the lead's mailbox before the stop, and
        // handled after the stop began.
        let (approved, suspended) = futures::join!(convo.approve(id), convo.suspend());
        suspended.unwrap();
        assert_eq!(approved, Err(baton::RuntimeError::Stopped));
        assert_eq!(requests_of(&model, "helper"), 0);
        assert_eq!(
            convo.check_task(id).unwrap().status,
            TaskStatus::AwaitingApproval
        );
        let replay = Replay::from_records(journal.records());
        assert_eq!(replay.tasks[0].0.status, TaskStatus::AwaitingApproval);
        // Once stopped, an approval says why too.
        assert_eq!(convo.approve(id).await, Err(baton::RuntimeError::Stopped));
    });
}

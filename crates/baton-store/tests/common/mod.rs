//! Behaviours every `Store` must have, run against each backend by
//! `sqlite_store.rs` and `postgres_store.rs`. Each takes a function that
//! opens (or reopens) the same store, as a new process would.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton_core::{
    Journal, JournalError, JournalRecord, Message, TaskId, TaskKind, TaskOutcome, TaskRecord,
    TaskStatus,
};
use baton_llm::{ScriptedModel, ScriptedTurn};
use baton_runtime::virtual_time::block_on_paused;
use baton_runtime::{Agent, Orchestrator};
use baton_store::Store;
use futures::future::BoxFuture;

/// Opens the store under test; called again to reopen it.
pub type Opener = Arc<dyn Fn() -> Arc<dyn Store> + Send + Sync>;

pub fn input(text: &str) -> JournalRecord {
    JournalRecord::UserInput { text: text.into() }
}

/// Task records as a store before the task table held them, one per
/// `events` row from `seq` 2 (after a user input at 1): task-1 created and
/// finished (its `TaskFinished` without attempts), task-2 created.
pub fn old_task_rows() -> Vec<(i64, String)> {
    let finished = serde_json::json!({
        "record": "task_finished",
        "task_id": "task-1",
        "outcome": {"status": "succeeded", "output": "old report"},
    });
    vec![
        (
            2,
            serde_json::to_string(&JournalRecord::TaskCreated {
                task: tool_task(1),
                arguments: Some("{}".into()),
            })
            .unwrap(),
        ),
        (
            3,
            serde_json::to_string(&JournalRecord::TaskCreated {
                task: tool_task(2),
                arguments: Some("{}".into()),
            })
            .unwrap(),
        ),
        (4, finished.to_string()),
    ]
}

/// A migrated store's task table was filled from its old records.
pub fn old_tasks_were_backfilled(store: &dyn Store) {
    let table = assert_task_table_agrees(store, "old");
    let statuses: Vec<_> = table.iter().map(|t| (t.4, t.6.as_deref())).collect();
    assert_eq!(
        statuses,
        [
            (TaskStatus::Succeeded, Some("old report")),
            (TaskStatus::Running, None)
        ]
    );
}

/// What the task table and the log must agree on for one task.
type TaskFacts = (
    TaskId,
    Option<TaskId>,
    String,
    String,
    TaskStatus,
    u32,
    Option<String>,
);

/// The task table of `conversation` says what its log says: every task
/// once, as `Replay` leaves it (parent, owner, source, status, attempts,
/// outcome), with times that make sense. Returns the rows compared.
pub fn assert_task_table_agrees(store: &dyn Store, conversation: &str) -> Vec<TaskFacts> {
    let replay = baton_core::Replay::from_records(store.read(conversation).unwrap());
    let mut from_log: Vec<TaskFacts> = Vec::new();
    for (t, _) in replay.tasks {
        from_log.retain(|f| f.0 != t.id);
        from_log.push((
            t.id,
            t.parent,
            t.owner.to_string(),
            t.kind.source().to_string(),
            t.status,
            t.attempts,
            t.outcome.as_ref().map(baton_store::tasks::summary),
        ));
    }
    from_log.sort_by_key(|f| f.0);
    let rows = store.tasks(conversation).unwrap();
    for row in &rows {
        assert_eq!(
            row.finished_at_ms.is_some(),
            row.status.is_terminal(),
            "{row:?}"
        );
        assert!(row.finished_at_ms.unwrap_or(i64::MAX) >= row.created_at_ms);
    }
    let from_table: Vec<TaskFacts> = rows
        .into_iter()
        .map(|r| {
            (
                r.id, r.parent, r.owner, r.source, r.status, r.attempts, r.outcome,
            )
        })
        .collect();
    assert_eq!(from_table, from_log, "the task table of `{conversation}`");
    from_table
}

/// Appends come back in order, per conversation, and survive a reopen.
pub async fn round_trip(open: Opener) {
    {
        let store = open();
        let a = store.journal("a").unwrap();
        let b = store.journal("b").unwrap();
        a.append(vec![input("a1"), input("a2")]).await.unwrap();
        b.append(vec![input("b1")]).await.unwrap();
        a.append(vec![input("a3")]).await.unwrap();
        assert_eq!(
            store.read("a").unwrap(),
            vec![input("a1"), input("a2"), input("a3")]
        );
        assert_eq!(store.read("nobody").unwrap(), vec![]);
    }
    let store = open();
    assert_eq!(store.conversations().unwrap(), ["a", "b"]);
    store
        .journal("a")
        .unwrap()
        .append(vec![input("a4")])
        .await
        .unwrap();
    let a = store.read("a").unwrap();
    assert_eq!(a.len(), 4);
    assert_eq!(a[3], input("a4"));
    assert_eq!(store.read("b").unwrap(), vec![input("b1")]);
}

/// 1,000 appends queued at once land once each, in call order, in fewer
/// transactions than appends.
pub async fn group_commit(open: Opener) {
    let store = open();
    let journal = store.journal("c").unwrap();
    let pending: Vec<_> = (0..1000)
        .map(|i| journal.append(vec![input(&format!("m{i}"))]))
        .collect();
    for p in pending {
        p.await.unwrap();
    }
    let records = store.read("c").unwrap();
    let expected: Vec<JournalRecord> = (0..1000).map(|i| input(&format!("m{i}"))).collect();
    assert_eq!(records, expected);
    assert_eq!(store.stats().appends(), 1000);
    assert_eq!(store.stats().records(), 1000);
    assert!(
        store.stats().transactions() < 1000,
        "group commit batches appends: {} transactions",
        store.stats().transactions()
    );
}

/// On a paused clock, waiting for a commit does not let tokio jump the
/// clock to the next timer (a scripted run would skip its own deadlines).
/// Call on a runtime started paused.
pub async fn appends_hold_a_paused_clock(open: Opener) {
    let store = open();
    let journal = store.journal("clock").unwrap();
    let start = tokio::time::Instant::now();
    let far_timer = tokio::spawn(tokio::time::sleep(Duration::from_secs(3600)));
    for i in 0..50 {
        journal.append(vec![input(&format!("m{i}"))]).await.unwrap();
    }
    let pending: Vec<_> = (0..50)
        .map(|i| journal.append(vec![input(&format!("n{i}"))]))
        .collect();
    for p in pending {
        p.await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(store.read("clock").unwrap().len(), 100);
    far_timer.abort();
}

pub fn tool_task(id: u64) -> TaskRecord {
    TaskRecord {
        id: TaskId::new(id),
        parent: None,
        owner: "assistant".into(),
        kind: TaskKind::Tool {
            tool: "research".into(),
        },
        status: TaskStatus::Running,
        created_ms: 0,
        finished_ms: None,
        outcome: None,
        attempts: 1,
        tokens: 0,
        call: None,
    }
}

/// Two stores writing one conversation, one after the other: a writer's
/// append lands after the rows the other committed before it, in commit
/// order, even where the other's row of several records left a gap below
/// its number (before, a writer numbering from its own count wrote its
/// record into that gap, under the other's rows, and the task table, which
/// had folded past it, never got it).
pub fn a_second_writer_of_a_conversation_appends_after_the_other(open: Opener) {
    let block = futures::executor::block_on;
    let created = |id: u64| JournalRecord::TaskCreated {
        task: tool_task(id),
        arguments: Some("{}".into()),
    };
    let (one, two) = (open(), open());
    block(one.journal("c").unwrap().append(vec![input("o1")])).unwrap();
    block(
        two.journal("c")
            .unwrap()
            .append(vec![input("t1"), created(1)]),
    )
    .unwrap();
    drop(two);
    block(one.journal("c").unwrap().append(vec![created(2)])).unwrap();
    drop(one);
    let store = open();
    assert_eq!(
        store.read("c").unwrap(),
        vec![input("o1"), input("t1"), created(1), created(2)]
    );
    assert_eq!(assert_task_table_agrees(store.as_ref(), "c").len(), 2);
}

/// A result logged twice across a crash is recognised by its task id: the
/// store keeps both records, the replay and the resumed conversation only
/// the first.
pub fn duplicate_completion_is_ignored(open: Opener) {
    block_on_paused(async move {
        let store = open();
        let journal = store.journal("dup").unwrap();
        let first = TaskOutcome::Succeeded {
            output: "report one".into(),
        };
        journal
            .append(vec![
                input("go"),
                JournalRecord::Appended {
                    message: Message::user("go"),
                },
                JournalRecord::TaskCreated {
                    task: tool_task(1),
                    arguments: Some(r#"{"topic":"x"}"#.into()),
                },
                JournalRecord::TaskFinished {
                    task_id: TaskId::new(1),
                    outcome: first.clone(),
                    attempts: Some(1),
                },
            ])
            .await
            .unwrap();
        // The crash: the task ran again and its result was logged again.
        journal
            .append(vec![JournalRecord::TaskFinished {
                task_id: TaskId::new(1),
                outcome: TaskOutcome::Succeeded {
                    output: "report two".into(),
                },
                attempts: Some(2),
            }])
            .await
            .unwrap();
        assert_eq!(store.read("dup").unwrap().len(), 5);
        let replay = store.replay("dup").unwrap();
        assert_eq!(replay.tasks[0].0.outcome, Some(first));
        // The table kept the first completion too.
        let table = assert_task_table_agrees(store.as_ref(), "dup");
        assert_eq!(table[0].6.as_deref(), Some("report one"));
        assert_eq!(table[0].5, 1);
        assert_eq!(replay.pending_inputs.len(), 1);
        let convo = Orchestrator::builder(agent(Gate::Open))
            .journal(store.journal("dup").unwrap())
            .resume(replay)
            .spawn();
        convo.settled().await.unwrap();
        let texts: Vec<String> = convo
            .history()
            .await
            .unwrap()
            .messages()
            .iter()
            .filter_map(Message::text)
            .collect();
        assert_eq!(texts.iter().filter(|t| t.contains("report")).count(), 1);
        assert!(texts.iter().any(|t| t.ends_with("report one")), "{texts:?}");
    });
}

/// A conversation name no store can hold (PostgreSQL: a NUL, or too long
/// for an index entry) is refused when its journal is asked for, on every
/// backend; the longest name taken is written and read back.
pub fn names_no_store_can_hold_are_refused(open: Opener) {
    let store = open();
    let refused = |name: &str, reason: &str| {
        let err = store.journal(name).err().expect("refused");
        assert!(
            matches!(&err, baton_store::StoreError::BadConversation { .. })
                && err.to_string().contains(reason),
            "{err}"
        );
    };
    refused(
        "a\0b",
        "`a\\0b` cannot name a conversation: it holds a NUL character",
    );
    let max = baton_store::store::MAX_CONVERSATION_BYTES;
    // Hex of a counter's hash: long, and not compressible.
    let long: String = (0..max as u64)
        .map(|i| {
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60;
            char::from_digit(h as u32, 16).unwrap()
        })
        .collect();
    refused(&format!("{long}x"), "more than 1024");
    let journal = store.journal(&long).unwrap();
    futures::executor::block_on(journal.append(vec![input("fits")])).unwrap();
    assert_eq!(store.read(&long).unwrap(), vec![input("fits")]);
}

/// A task whose result (or owner, or tool) holds a NUL character, which
/// PostgreSQL's `text` cannot: the append lands, and so do the later ones
/// (before, PostgreSQL refused the batch, and every later one with it, for
/// good); the log keeps the text whole, the task table with U+FFFD.
pub fn a_nul_in_a_task_is_kept(open: Opener) {
    let store = open();
    let journal = store.journal("nul").unwrap();
    let mut task = tool_task(1);
    task.owner = "lead\0x".into();
    task.kind = TaskKind::Tool {
        tool: "sh\0".into(),
    };
    let records = vec![
        JournalRecord::TaskCreated {
            task,
            arguments: Some("{}".into()),
        },
        JournalRecord::TaskFinished {
            task_id: TaskId::new(1),
            outcome: TaskOutcome::Succeeded {
                output: "bin\0ary".into(),
            },
            attempts: Some(1),
        },
        input("later"),
    ];
    futures::executor::block_on(journal.append(records[..2].to_vec())).unwrap();
    futures::executor::block_on(journal.append(records[2..].to_vec())).unwrap();
    assert_eq!(store.read("nul").unwrap(), records);
    let rows = store.tasks("nul").unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].owner.as_str(),
            rows[0].source.as_str(),
            rows[0].outcome.as_deref()
        ),
        ("lead\u{FFFD}x", "sh\u{FFFD}", Some("bin\u{FFFD}ary"))
    );
}

/// A replay from a snapshot and the records after it equals the replay of
/// the whole journal; journals take snapshots by themselves as records go
/// by; the journal itself stays whole.
pub fn snapshots_replay_as_the_whole_journal(open: Opener) {
    block_on_paused(async move {
        let store = open();
        store.set_snapshot_every(0);
        let journal = store.journal("snap").unwrap();
        assert_eq!(store.snapshot("snap").unwrap(), None, "nothing to snapshot");
        let mut n = 0u64;
        let finish = |id: u64, text: &str| JournalRecord::TaskFinished {
            task_id: TaskId::new(id),
            outcome: TaskOutcome::Succeeded {
                output: format!("{text} {id}"),
            },
            attempts: Some(1),
        };
        for round in 0..3u64 {
            let mut records = Vec::new();
            for i in 0..10u64 {
                n += 1;
                records.push(input(&format!("input {n}")));
                records.push(JournalRecord::Appended {
                    message: Message::user(format!("input {n}")),
                });
                let id = round * 10 + i + 1;
                records.push(JournalRecord::TaskCreated {
                    task: tool_task(id),
                    arguments: Some(format!("{{\"n\":{id}}}")),
                });
                if i % 2 == 0 {
                    records.push(finish(id, "result"));
                    records.push(finish(id, "duplicate"));
                }
            }
            records.push(input("not yet folded"));
            journal.append(records).await.unwrap();
            let before = store.replay("snap").unwrap();
            let seq = store.snapshot("snap").unwrap().expect("a snapshot");
            assert_eq!(seq, store.read("snap").unwrap().len() as i64);
            assert_eq!(store.snapshot("snap").unwrap(), None, "nothing new");
            let after = store.replay("snap").unwrap();
            assert_eq!(after, before);
            assert_eq!(
                after,
                baton_core::Replay::from_records(store.read("snap").unwrap())
            );
        }
        assert_eq!(store.stats().snapshots(), 3);
        let replay = store.replay("snap").unwrap();
        assert_eq!(replay.tasks.len(), 30);
        assert_eq!(replay.pending_inputs.len(), 3 + 15);

        // Automatic: every 100 records (or the latest snapshot's length,
        // if larger) through a journal, on a thread of its own.
        store.set_snapshot_every(100);
        let auto = store.journal("auto").unwrap();
        for i in 0..250 {
            auto.append(vec![input(&format!("a{i}"))]).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.stats().snapshots() < 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(store.stats().snapshots() >= 4, "an automatic snapshot");
        assert_eq!(
            store.read("auto").unwrap().len(),
            250,
            "the journal stays whole"
        );
        assert_eq!(
            store.replay("auto").unwrap(),
            baton_core::Replay::from_records(store.read("auto").unwrap())
        );
    });
}

/// Whether the research tool ever finishes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Never: the process "dies" with every task in flight.
    Closed,
    /// After ten virtual seconds.
    Open,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct TopicArgs {
    topic: String,
}

/// A slow background job.
struct Research(Gate);

impl baton_core::Tool for Research {
    type Args = TopicArgs;
    fn name(&self) -> &str {
        "research"
    }
    fn description(&self) -> &str {
        "Slow research."
    }
    async fn call(&self, args: TopicArgs) -> Result<baton_core::ToolOutput, baton_core::ToolError> {
        if self.0 == Gate::Closed {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(format!("report on {}", args.topic).into())
    }
}

/// An agent that starts 20 research tasks on "start" and answers "ok" to
/// anything else.
pub fn agent(gate: Gate) -> Agent {
    let model = ScriptedModel::from_fn(|req| match req.messages.last() {
        Some(Message::User { content }) if content == "start" => {
            let mut t = ScriptedTurn::call("research", serde_json::json!({"topic": "t0"}));
            for i in 1..20 {
                t = t.and_call("research", serde_json::json!({ "topic": format!("t{i}") }));
            }
            t
        }
        _ => ScriptedTurn::text("ok"),
    });
    Agent::builder("assistant")
        .model(model)
        .background_tool(Research(gate))
        .build()
}

/// A journal that a simulated `kill -9` cuts: after [`Severable::cut`],
/// nothing more reaches the store and appends never resolve, as in a
/// process that is gone. (Dropping a runtime is not a crash: its actors
/// stop and log their tasks as cancelled.)
pub struct Severable {
    inner: Arc<dyn Journal>,
    cut: Arc<AtomicBool>,
}

impl Severable {
    pub fn new(inner: Arc<dyn Journal>) -> (Arc<Self>, Arc<AtomicBool>) {
        let cut = Arc::new(AtomicBool::new(false));
        let journal = Arc::new(Self {
            inner,
            cut: Arc::clone(&cut),
        });
        (journal, cut)
    }
}

impl Journal for Severable {
    fn append(&self, records: Vec<JournalRecord>) -> BoxFuture<'static, Result<(), JournalError>> {
        if self.cut.load(Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        self.inner.append(records)
    }
}

/// Makes the store's appends fail (`true`) or land again (`false`).
pub type Breaker = Arc<dyn Fn(bool) + Send + Sync>;

/// The store's writes fail for a while (from before a reply that starts
/// five tasks, past the tasks' end) and then work again, while a
/// conversation runs on it: nothing reaches the store meanwhile, no result
/// is folded meanwhile, and afterwards the store replays to exactly the
/// history and tasks the actor holds, each record written once, and the
/// task table agrees.
pub fn a_store_failing_for_a_while_loses_nothing(open: Opener, fail: Breaker) {
    block_on_paused(async move {
        let store = open();
        let model = ScriptedModel::from_fn(|req| match req.messages.last() {
            Some(Message::User { .. }) => {
                let mut t = ScriptedTurn::call("research", serde_json::json!({"topic": "t0"}));
                for i in 1..5 {
                    t = t.and_call("research", serde_json::json!({ "topic": format!("t{i}") }));
                }
                t.after(Duration::from_secs(1))
            }
            _ => ScriptedTurn::text("ok"),
        });
        let agent = Agent::builder("assistant")
            .model(model)
            .background_tool(Research(Gate::Open))
            .build();
        let convo = Orchestrator::builder(agent)
            .journal(store.journal("c1").unwrap())
            .spawn();
        convo.send_user("start").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        fail(true);
        // The reply comes at 1 s, the results at 11 s.
        tokio::time::sleep(Duration::from_millis(12_400)).await;
        let history = convo.history().await.unwrap();
        assert_eq!(
            history.len(),
            8,
            "the user, the calls, five answers, \"ok\""
        );
        assert!(!history
            .messages()
            .iter()
            .any(|m| matches!(m, Message::TaskResult { .. })));
        let meanwhile = store.read("c1").unwrap();
        assert!(
            !meanwhile
                .iter()
                .any(|r| matches!(r, JournalRecord::TaskCreated { .. })),
            "nothing landed while the store failed: {meanwhile:?}"
        );
        fail(false);
        convo.settled().await.unwrap();

        let history = convo.history().await.unwrap();
        let records = store.read("c1").unwrap();
        let count = |f: fn(&JournalRecord) -> bool| records.iter().filter(|r| f(r)).count();
        assert_eq!(count(|r| matches!(r, JournalRecord::UserInput { .. })), 1);
        assert_eq!(
            count(|r| matches!(r, JournalRecord::Appended { .. })),
            history.len(),
            "each message once"
        );
        assert_eq!(count(|r| matches!(r, JournalRecord::TaskCreated { .. })), 5);
        assert_eq!(
            count(|r| matches!(r, JournalRecord::TaskFinished { .. })),
            5
        );
        let replay = store.replay("c1").unwrap();
        assert_eq!(replay.history, history.messages().to_vec());
        assert!(
            replay.pending_inputs.is_empty(),
            "{:?}",
            replay.pending_inputs
        );
        let facts = |t: &TaskRecord| (t.id, t.status, t.attempts, t.outcome.clone());
        let logged: Vec<_> = replay.tasks.iter().map(|(t, _)| facts(t)).collect();
        let live: Vec<_> = convo.tasks().iter().map(facts).collect();
        assert_eq!(logged, live);
        assert!(live.iter().all(|t| t.1 == TaskStatus::Succeeded));
        assert_eq!(assert_task_table_agrees(store.as_ref(), "c1").len(), 5);
    });
}

/// The database refuses every row for its data (`refuse(true)`: an
/// administrator adds a required column to a table, which baton does not
/// fill), a row it took before too: the fault is the database's, not the
/// records'. So nothing is refused and no journal is closed: every append,
/// in a batch of several or alone, the first of a conversation or not,
/// fails with an error that may pass, saying so and why (`why`, the
/// database's words), and nothing lands. Once the column is dropped
/// (`refuse(false)`), the kept records land, in order, each once, the task
/// table agreeing, and later appends succeed. (Before, each append was
/// refused as if for its own data, and the journal of every conversation
/// that wrote was closed.) Each append creates a task, so that a refusing
/// task table is met too.
pub fn a_database_refusing_every_row_is_waited_for(open: Opener, refuse: Breaker, why: &str) {
    let store = open();
    let block = futures::executor::block_on;
    let (one, two) = (store.journal("one").unwrap(), store.journal("two").unwrap());
    let with_task = |text: &str, id: u64| {
        vec![
            input(text),
            JournalRecord::TaskCreated {
                task: tool_task(id),
                arguments: Some("{}".into()),
            },
        ]
    };
    block(one.append(with_task("a", 1))).unwrap();
    refuse(true);
    let waits = |result: Result<(), JournalError>| {
        let error = result.unwrap_err();
        assert!(!error.is_closed(), "the journal stays open: {error}");
        let message = error.message();
        assert!(
            message.contains("the database refuses every journal row alike")
                && message.contains(why),
            "{message}"
        );
    };
    // Alone, and no other conversation has a row to copy for the probe.
    waits(block(one.append(with_task("b", 2))));
    // Alone, the first of its conversation.
    waits(block(two.append(with_task("x", 1))));
    // Queued at once, so that they may share a batch.
    let pending = vec![
        one.append(with_task("c", 3)),
        two.append(with_task("y", 2)),
        one.append(Vec::new()),
    ];
    for result in pending.into_iter().map(block) {
        waits(result);
    }
    assert_eq!(store.read("one").unwrap(), with_task("a", 1));
    assert_eq!(store.read("two").unwrap(), vec![]);
    refuse(false);
    block(one.append(Vec::new())).unwrap();
    block(two.append(with_task("z", 3))).unwrap();
    block(one.append(vec![input("d")])).unwrap();
    let all = |parts: Vec<Vec<JournalRecord>>| parts.concat();
    assert_eq!(
        store.read("one").unwrap(),
        all(vec![
            with_task("a", 1),
            with_task("b", 2),
            with_task("c", 3),
            vec![input("d")]
        ])
    );
    assert_eq!(
        store.read("two").unwrap(),
        all(vec![
            with_task("x", 1),
            with_task("y", 2),
            with_task("z", 3)
        ])
    );
    assert_eq!(assert_task_table_agrees(store.as_ref(), "one").len(), 3);
    assert_eq!(assert_task_table_agrees(store.as_ref(), "two").len(), 3);
}

/// A conversation "dies" with 20 tasks in flight and resumes from the store
/// in a new runtime: every input and every result is in history exactly
/// once, and the journal then replays to what the actor holds.
pub fn resume_through_the_runtime(open: Opener) {
    let first = Arc::clone(&open);
    block_on_paused(async move {
        let store = first();
        let (journal, kill) = Severable::new(store.journal("c1").unwrap());
        let convo = Orchestrator::builder(agent(Gate::Closed))
            .journal(journal)
            .spawn();
        convo.send_user("start").await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        convo.send_user("still there?").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The process "dies" here: nothing more reaches the store.
        kill.store(true, Ordering::SeqCst);
    });
    block_on_paused(async move {
        let store = open();
        let replay = store.replay("c1").unwrap();
        assert!(store.snapshot("c1").unwrap().is_some());
        assert_eq!(
            store.replay("c1").unwrap(),
            replay,
            "the same from a snapshot"
        );
        assert_eq!(replay.tasks.len(), 20);
        let table = assert_task_table_agrees(store.as_ref(), "c1");
        assert_eq!(table.len(), 20);
        assert!(
            replay.tasks.iter().all(|(t, _)| !t.status.is_terminal()),
            "every task was in flight at the crash: {:?}",
            replay
                .tasks
                .iter()
                .map(|(t, _)| &t.outcome)
                .collect::<Vec<_>>()
        );
        let convo = Orchestrator::builder(agent(Gate::Open))
            .journal(store.journal("c1").unwrap())
            .resume(replay)
            .spawn();
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        assert_eq!(history.check_tool_protocol(), Ok(()));
        let texts: Vec<String> = history
            .messages()
            .iter()
            .filter_map(Message::text)
            .collect();
        for input in ["start", "still there?"] {
            assert_eq!(texts.iter().filter(|t| *t == input).count(), 1, "{input}");
        }
        for i in 0..20 {
            let marker = format!("report on t{i}");
            assert_eq!(
                texts.iter().filter(|t| t.ends_with(&marker)).count(),
                1,
                "{marker}"
            );
        }
        assert!(convo
            .tasks()
            .iter()
            .all(|r| r.status == TaskStatus::Succeeded));
        let again = store.replay("c1").unwrap();
        assert_eq!(again.history, history.messages());
        assert!(again.pending_inputs.is_empty());
        // The task table followed: every task ended, as a second attempt.
        let table = assert_task_table_agrees(store.as_ref(), "c1");
        assert!(
            table
                .iter()
                .all(|t| t.4 == TaskStatus::Succeeded && t.5 == 2),
            "{table:?}"
        );
        assert!(again
            .tasks
            .iter()
            .all(|(r, _)| matches!(r.outcome, Some(TaskOutcome::Succeeded { .. }))));
    });
}

/// How long a research task takes, in virtual seconds, by its topic.
fn research_secs(topic: &str) -> u64 {
    1 + topic.bytes().map(u64::from).sum::<u64>() % 5
}

/// A research tool whose time depends on its topic.
struct TimedResearch;

impl baton_core::Tool for TimedResearch {
    type Args = TopicArgs;
    fn name(&self) -> &str {
        "research"
    }
    fn description(&self) -> &str {
        "Research that takes a while."
    }
    async fn call(&self, args: TopicArgs) -> Result<baton_core::ToolOutput, baton_core::ToolError> {
        tokio::time::sleep(Duration::from_secs(research_secs(&args.topic))).await;
        Ok(format!("report on {}", args.topic).into())
    }
}

/// An agent that, told `go K N`, starts N research tasks, and answers
/// anything else with text.
fn planning_agent() -> Agent {
    let model = ScriptedModel::from_fn(|req| match req.messages.last() {
        Some(Message::User { content }) if content.starts_with("go ") => {
            let mut words = content.split(' ').skip(1);
            let k = words.next().unwrap_or("0").to_owned();
            let n: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            if n == 0 {
                return ScriptedTurn::text(format!("nothing to do for {k}"));
            }
            let topic = |i: usize| serde_json::json!({ "topic": format!("{k}-{i}") });
            let mut t = ScriptedTurn::call("research", topic(0));
            for i in 1..n {
                t = t.and_call("research", topic(i));
            }
            t
        }
        _ => ScriptedTurn::text("ok"),
    });
    Agent::builder("assistant")
        .model(model)
        .background_tool(TimedResearch)
        .build()
}

/// Replay = live, through the store: random runs (inputs at random virtual
/// times, each starting 0–3 background tasks, a snapshot now and then) are
/// journaled to the store, and the conversation rebuilt from the store
/// equals what the actor holds.
pub fn replay_through_the_store_equals_live(open: Opener, cases: u32) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let store = open();
    let plan = proptest::collection::vec((0u64..6, 0usize..4, any::<bool>()), 1..5);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&plan, |plan| {
            let id = format!("live-{}", case.fetch_add(1, Ordering::Relaxed));
            let store = Arc::clone(&store);
            let (live, tasks, replay) = block_on_paused(async move {
                let convo = Orchestrator::builder(planning_agent())
                    .journal(store.journal(&id).unwrap())
                    .spawn();
                for (k, (delay, n, snapshot)) in plan.into_iter().enumerate() {
                    convo.send_user(format!("go {k} {n}")).await.unwrap();
                    tokio::time::sleep(Duration::from_secs(delay)).await;
                    if snapshot {
                        store.snapshot(&id).unwrap();
                    }
                }
                convo.settled().await.unwrap();
                let live = convo.history().await.unwrap().messages().to_vec();
                let mut tasks: Vec<_> = convo
                    .tasks()
                    .into_iter()
                    .map(|t| (t.id, t.status, t.attempts))
                    .collect();
                tasks.sort_by_key(|(id, _, _)| *id);
                let table: Vec<_> = assert_task_table_agrees(store.as_ref(), &id)
                    .into_iter()
                    .map(|t| (t.0, t.4, t.5))
                    .collect();
                assert_eq!(table, tasks, "the task table is the live registry");
                let tasks = tasks
                    .into_iter()
                    .map(|(id, s, _)| (id, s))
                    .collect::<Vec<_>>();
                (live, tasks, store.replay(&id).unwrap())
            });
            prop_assert_eq!(&replay.history, &live);
            prop_assert!(replay.pending_inputs.is_empty());
            let mut stored: Vec<_> = replay.tasks.iter().map(|(t, _)| (t.id, t.status)).collect();
            stored.sort_by_key(|(id, _)| *id);
            prop_assert_eq!(stored, tasks);
            Ok(())
        })
        .unwrap();
}

/// The `events` rows of a conversation, as (seq, length of its JSON text),
/// by seq, read straight from the backend.
pub type RowsOf = Box<dyn Fn(&str) -> Vec<(i64, usize)>>;

/// One append larger than a row may be (`MAX_ROW_BYTES`): 1,500 tasks
/// created and finished with long results, and an input larger than a row
/// on its own, in the middle. It lands in several rows, each within the
/// limit but for the one holding only the large input, numbered by their
/// last record; it reads back, replays and fills the task table as the
/// records say, from a snapshot too, and later appends number on from it.
pub async fn a_burst_larger_than_a_row_is_split(open: Opener, rows_of: RowsOf) {
    let limit = baton_store::snapshot::MAX_ROW_BYTES;
    let finish = |id: u64| JournalRecord::TaskFinished {
        task_id: TaskId::new(id),
        outcome: TaskOutcome::Succeeded {
            output: format!("{id}: {}", "result ".repeat(150)),
        },
        attempts: Some(1),
    };
    let mut records = Vec::new();
    for id in 1..=1500 {
        records.push(JournalRecord::TaskCreated {
            task: tool_task(id),
            arguments: Some(format!("{{\"n\":{id}}}")),
        });
        records.push(finish(id));
        if id == 700 {
            records.push(input(&"large ".repeat(limit / 5)));
        }
    }
    let total = records.len() as i64;
    let store = open();
    store.set_snapshot_every(0);
    store
        .journal("burst")
        .unwrap()
        .append(records.clone())
        .await
        .unwrap();
    assert_eq!(store.stats().records(), total as u64);
    let rows = rows_of("burst");
    assert!(rows.len() >= 4, "{} rows", rows.len());
    assert_eq!(rows.last().unwrap().0, total, "the last row's seq");
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
    let large: Vec<_> = rows.iter().filter(|(_, len)| *len > limit).collect();
    assert_eq!(large.len(), 1, "only the large input's row: {large:?}");
    assert_eq!(store.read("burst").unwrap(), records);
    let replay = baton_core::Replay::from_records(records.clone());
    assert_eq!(store.replay("burst").unwrap(), replay);
    let table = assert_task_table_agrees(store.as_ref(), "burst");
    assert_eq!(table.len(), 1500);
    assert_eq!(store.snapshot("burst").unwrap(), Some(total));
    assert_eq!(store.replay("burst").unwrap(), replay);
    drop(store);
    let store = open();
    store
        .journal("burst")
        .unwrap()
        .append(vec![input("after")])
        .await
        .unwrap();
    assert_eq!(rows_of("burst").last().unwrap().0, total + 1);
    records.push(input("after"));
    assert_eq!(store.read("burst").unwrap(), records);
    assert_eq!(
        store.replay("burst").unwrap(),
        baton_core::Replay::from_records(records)
    );
}

/// Old events (one record a row, each at a time of its own) of two
/// conversations, `a` and `b`, with `tasks` tasks each: created, started
/// again, and (all but every 7th) finished, every 5th of those twice. Over
/// three rows a task, more than one page of the task-table backfill.
pub struct OldEvents {
    /// `(conversation, seq, at_ms, record)`, in order.
    pub rows: Vec<(String, i64, i64, String)>,
    /// `(conversation, task, created_at_ms, finished_at_ms)` as a writer
    /// committing the rows one at a time would have left the task table.
    pub times: Vec<(String, u64, i64, Option<i64>)>,
}

pub fn many_old_events(tasks: u64) -> OldEvents {
    let mut out = OldEvents {
        rows: Vec::new(),
        times: Vec::new(),
    };
    let mut at_ms = 1_000_000;
    for conversation in ["a", "b"] {
        let mut seq = 0;
        let mut push = |record: JournalRecord| {
            seq += 1;
            at_ms += 1;
            let text = serde_json::to_string(&record).unwrap();
            out.rows.push((conversation.to_owned(), seq, at_ms, text));
            at_ms
        };
        for id in 1..=tasks {
            let created = push(JournalRecord::TaskCreated {
                task: tool_task(id),
                arguments: None,
            });
            push(JournalRecord::TaskStarted {
                task_id: TaskId::new(id),
                attempt: 2,
            });
            let mut finished = None;
            if id % 7 != 0 {
                let finish = |text: &str| JournalRecord::TaskFinished {
                    task_id: TaskId::new(id),
                    outcome: TaskOutcome::Succeeded {
                        output: format!("{text} {conversation} {id}"),
                    },
                    attempts: None,
                };
                finished = Some(push(finish("report")));
                if id % 5 == 0 {
                    push(finish("again"));
                }
            }
            out.times
                .push((conversation.to_owned(), id, created, finished));
        }
    }
    out
}

/// The task table of a store migrated from [`many_old_events`] agrees
/// with the log, and each task's times are those of its rows.
pub fn many_old_events_were_backfilled(store: &dyn Store, old: &OldEvents) {
    let mut times = Vec::new();
    for conversation in ["a", "b"] {
        let table = assert_task_table_agrees(store, conversation);
        assert!(table.iter().all(|t| t.5 == 2), "two attempts each");
        assert!(table
            .iter()
            .all(|t| t.6.as_deref().is_none_or(|o| o.starts_with("report"))));
        times.extend(store.tasks(conversation).unwrap().into_iter().map(|t| {
            (
                conversation.to_owned(),
                t.id.get(),
                t.created_at_ms,
                t.finished_at_ms,
            )
        }));
    }
    assert_eq!(times, old.times);
}

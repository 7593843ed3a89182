//! The SQLite store over real files.

use std::sync::Arc;
use std::time::Duration;

use baton_core::{Journal, JournalRecord, Message, Replay, TaskOutcome, TaskStatus};
use baton_llm::{ScriptedModel, ScriptedTurn};
use baton_runtime::virtual_time::block_on_paused;
use baton_runtime::{Agent, Orchestrator};
use baton_store::{SqliteStore, StoreError};

fn input(text: &str) -> JournalRecord {
    JournalRecord::UserInput { text: text.into() }
}

#[tokio::test]
async fn appends_come_back_in_order_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        let a = store.journal("a").unwrap();
        let b = store.journal("b").unwrap();
        a.append(vec![input("a1"), input("a2")]).await.unwrap();
        b.append(vec![input("b1")]).await.unwrap();
        a.append(vec![input("a3")]).await.unwrap();
        assert_eq!(
            store.read("a").unwrap(),
            vec![input("a1"), input("a2"), input("a3")]
        );
    }
    let store = SqliteStore::open(&path).unwrap();
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
}

#[tokio::test]
async fn concurrent_appends_land_once_each_and_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let journal = store.journal("c").unwrap();
    // Call order is the journal's order: queue all 1,000, then wait.
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
    assert!(
        store.stats().transactions() < 1000,
        "group commit batches appends: {} transactions",
        store.stats().transactions()
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    let bytes = b"these are my notes, not a database\n".repeat(100);
    std::fs::write(&path, &bytes).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotSqlite { .. }), "{err}");
    assert!(err.to_string().contains("notes.db"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn another_programs_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let conn = rusqlite_like::open(&path);
        conn.execute_batch("CREATE TABLE users (id INTEGER); INSERT INTO users VALUES (1);")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert_eq!(
        err,
        StoreError::Foreign {
            path: path.clone(),
            tables: "users".into()
        }
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_store_from_a_newer_baton_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    drop(SqliteStore::open(&path).unwrap());
    {
        let conn = rusqlite_like::open(&path);
        conn.execute(
            "UPDATE baton_meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    }
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 99,
                known: 1,
                ..
            }
        ),
        "{err}"
    );
}

/// Plain rusqlite, to make files the way another program would.
mod rusqlite_like {
    pub fn open(path: &std::path::Path) -> rusqlite::Connection {
        rusqlite::Connection::open(path).unwrap()
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct TopicArgs {
    topic: String,
}

/// A slow background job.
struct Research;

impl baton_core::Tool for Research {
    type Args = TopicArgs;
    fn name(&self) -> &str {
        "research"
    }
    fn description(&self) -> &str {
        "Slow research."
    }
    async fn call(&self, args: TopicArgs) -> Result<baton_core::ToolOutput, baton_core::ToolError> {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(format!("report on {}", args.topic).into())
    }
}

fn agent() -> Agent {
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
        .background_tool(Research)
        .build()
}

#[test]
fn a_conversation_resumes_from_its_sqlite_journal_with_nothing_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("convo.db");
    // First life: start 20 slow tasks, chat, then stop mid-flight.
    block_on_paused({
        let path = path.clone();
        async move {
            let store = SqliteStore::open(&path).unwrap();
            let convo = Orchestrator::builder(agent())
                .journal(Arc::new(store.journal("c1").unwrap()))
                .spawn();
            convo.send_user("start").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            convo.send_user("still there?").await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            // The process "dies" here: nothing is shut down cleanly. (The
            // store's writer finishes its queue as the runtime drops, as a
            // killed process's last commits would either land or not.)
        }
    });
    // Second life: a new process opens the same file.
    block_on_paused(async move {
        let store = SqliteStore::open(&path).unwrap();
        let replay = Replay::from_records(store.read("c1").unwrap());
        assert_eq!(replay.tasks.len(), 20);
        let convo = Orchestrator::builder(agent())
            .journal(Arc::new(store.journal("c1").unwrap()))
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
        // And the journal now replays to exactly what the actor holds.
        let again = Replay::from_records(store.read("c1").unwrap());
        assert_eq!(again.history, history.messages());
        assert!(again.pending_inputs.is_empty());
        assert!(again
            .tasks
            .iter()
            .all(|(r, _)| matches!(r.outcome, Some(TaskOutcome::Succeeded { .. }))));
    });
}

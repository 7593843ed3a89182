//! The SQLite store over real files: the behaviours every store shares
//! (`common`), and the refusals of files that are not baton stores.

mod common;

use std::path::Path;
use std::sync::Arc;

use baton_core::Journal;
use baton_store::{SqliteJournal, SqliteStore, StoreError};
use common::{input, Opener};

/// Opens (or reopens) one SQLite file through `baton_store::open`.
fn opener(path: &Path) -> Opener {
    let spec = path.display().to_string();
    Arc::new(move || baton_store::open(&spec).expect("open the SQLite store"))
}

#[tokio::test]
async fn appends_come_back_in_order_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    common::round_trip(opener(&dir.path().join("store.db"))).await;
}

#[tokio::test(start_paused = true)]
async fn appends_do_not_let_a_paused_clock_skip_ahead() {
    let dir = tempfile::tempdir().unwrap();
    common::appends_hold_a_paused_clock(opener(&dir.path().join("clock.db"))).await;
}

#[tokio::test]
async fn concurrent_appends_land_once_each_and_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    common::group_commit(opener(&dir.path().join("store.db"))).await;
}

#[test]
fn a_conversation_resumes_from_its_sqlite_journal_with_nothing_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    common::resume_through_the_runtime(opener(&dir.path().join("convo.db")));
}

#[test]
fn a_store_failing_for_a_while_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failing.db");
    // A trigger another connection adds makes every insert of a row fail.
    let fail: common::Breaker = {
        let path = path.clone();
        Arc::new(move |on: bool| {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            let sql = if on {
                "CREATE TRIGGER test_failure BEFORE INSERT ON events \
                 BEGIN SELECT RAISE(ABORT, 'the disk is full'); END;"
            } else {
                "DROP TRIGGER test_failure;"
            };
            conn.execute_batch(sql).unwrap();
        })
    };
    common::a_store_failing_for_a_while_loses_nothing(opener(&path), fail);
}

/// A connection of the test's own to the file at `path`.
fn connect(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

/// Rebuilds `table` of the file `conn` holds as SQLite changes a table in
/// ways `ALTER TABLE` cannot (a `NOT NULL` column, a check): its `CREATE`
/// statement made by `change` from the one it has, its rows copied by
/// `SELECT {columns} FROM {table}`.
fn rebuild(
    conn: &rusqlite::Connection,
    table: &str,
    change: impl FnOnce(&str) -> String,
    columns: &str,
) {
    let create: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get(0),
        )
        .unwrap();
    let new = change(&create).replacen(table, &format!("{table}_new"), 1);
    conn.execute_batch(&format!(
        "BEGIN; {new}; INSERT INTO {table}_new SELECT {columns} FROM {table}; \
         DROP TABLE {table}; ALTER TABLE {table}_new RENAME TO {table}; COMMIT;"
    ))
    .unwrap();
}

/// The `events` table rebuilt with `CHECK (condition)`, as an
/// administrator might add one.
fn check_events(path: &Path, condition: &str) {
    let check = |create: &str| {
        let end = create.rfind(')').unwrap();
        format!("{}, CHECK ({condition}){}", &create[..end], &create[end..])
    };
    rebuild(&connect(path), "events", check, "*");
}

/// `table` rebuilt with a first column `tenant TEXT NOT NULL`, which no
/// insert of baton's fills; then that column dropped again.
fn required_column(path: &Path, table: &'static str) -> common::Breaker {
    let path = path.to_owned();
    Arc::new(move |on: bool| {
        let conn = connect(&path);
        if on {
            let add = |create: &str| {
                let (head, tail) = create.split_at(create.find('(').unwrap() + 1);
                format!("{head}tenant TEXT NOT NULL, {tail}")
            };
            rebuild(&conn, table, add, "'main', *");
        } else {
            conn.execute_batch(&format!("ALTER TABLE {table} DROP COLUMN tenant;"))
                .unwrap();
        }
    })
}

/// An append the database can never take (here a check, added by the
/// test, refusing one conversation's rows: `SQLITE_CONSTRAINT_CHECK`, a
/// refusal of the data), while it takes the other conversations' rows,
/// fails alone, its journal closed, and the other conversations' appends,
/// in its batch and later, are written. The probe that tells this from a
/// database refusing every row writes nothing: it is rolled back.
#[test]
fn an_append_that_can_never_land_does_not_stall_other_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.db");
    let store = opener(&path)();
    check_events(&path, "conversation <> 'bad'");
    let block = futures::executor::block_on;
    let (good, bad) = (
        store.journal("good").unwrap(),
        store.journal("bad").unwrap(),
    );
    let pending = vec![
        good.append(vec![input("a")]),
        bad.append(vec![input("x")]),
        good.append(vec![input("b")]),
    ];
    let results: Vec<_> = pending.into_iter().map(block).collect();
    assert_eq!(results[0], Ok(()));
    let error = results[1].clone().unwrap_err();
    assert!(error.is_closed(), "{error}");
    assert!(
        error
            .message()
            .contains("the store refused a record of `bad` (CHECK constraint failed"),
        "{error}"
    );
    assert!(block(bad.append(Vec::new())).is_err_and(|e| e.is_closed()));
    assert_eq!(results[2], Ok(()));
    assert_eq!(block(good.append(vec![input("c")])), Ok(()));
    assert_eq!(
        store.read("good").unwrap(),
        vec![input("a"), input("b"), input("c")]
    );
    assert_eq!(store.read("bad").unwrap(), vec![]);
    assert_eq!(
        store.conversations().unwrap(),
        vec!["good".to_owned()],
        "the probe left nothing"
    );
}

/// An administrator adds a `NOT NULL` column to `events` (SQLite says
/// `SQLITE_CONSTRAINT_NOTNULL`, a refusal of the data): the writer finds
/// that the database refuses every row and waits, refusing nothing, until
/// the column is dropped. (A trigger's `RAISE` would not do here: SQLite
/// says `SQLITE_CONSTRAINT_TRIGGER`, which the writer takes for a failure
/// that may pass, so it never took it for a refusal of the data.)
#[test]
fn a_database_refusing_every_event_row_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refusing.db");
    common::a_database_refusing_every_row_is_waited_for(
        opener(&path),
        required_column(&path, "events"),
        "NOT NULL constraint failed: events.tenant",
    );
}

/// A task table that refuses every row (the column added to it) does not
/// stop the journal: SQLite writes the table apart from the events, when
/// its writer is idle, so appends land while `Store::tasks` still tells
/// the log's tasks (folded from the events); once the column is dropped,
/// the table catches up.
#[test]
fn a_task_table_refusing_every_row_does_not_stop_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refusing.db");
    let store = opener(&path)();
    let journal = store.journal("one").unwrap();
    let block = futures::executor::block_on;
    block(journal.append(with_task("a", 1))).unwrap();
    let refuse = required_column(&path, "tasks");
    refuse(true);
    block(journal.append(with_task("b", 2))).unwrap();
    block(journal.append(with_task("c", 3))).unwrap();
    assert_eq!(
        common::assert_task_table_agrees(store.as_ref(), "one").len(),
        3
    );
    refuse(false);
    block(journal.append(with_task("d", 4))).unwrap();
    drop((journal, store));
    assert_eq!(task_table(&path, "one"), (4, 8, 8));
    let store = opener(&path)();
    assert_eq!(
        common::assert_task_table_agrees(store.as_ref(), "one").len(),
        4
    );
}

/// Two writers of one conversation (two stores on one file): whichever
/// brings the task table up to date, and whenever, it says what the log
/// says, since it is folded from the events and not from what each writer
/// saw. (Here one writer creates the task and the other ends it while the
/// table refuses rows, so neither can write it then; before, the writer
/// that created it could write its stale row over the other's end.)
#[test]
fn two_writers_of_a_conversation_leave_the_task_table_right() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.db");
    let block = futures::executor::block_on;
    let (one, two) = (opener(&path)(), opener(&path)());
    let refuse = required_column(&path, "tasks");
    refuse(true);
    block(one.journal("c").unwrap().append(with_task("m1", 1))).unwrap();
    block(two.journal("c").unwrap().append(vec![finished(1)])).unwrap();
    refuse(false);
    block(one.journal("d").unwrap().append(vec![input("elsewhere")])).unwrap();
    drop(one);
    block(two.journal("c").unwrap().append(vec![input("m2")])).unwrap();
    drop(two);
    assert_eq!(task_table(&path, "c"), (1, 4, 4));
    let store = opener(&path)();
    let tasks = common::assert_task_table_agrees(store.as_ref(), "c");
    assert_eq!(tasks[0].4, baton_core::TaskStatus::Succeeded);
}

/// A task table refusing rows and one append refused for its own data:
/// the probe that tells a bad append from a database refusing everything
/// tries only an `events` row (a batch writes no task rows), so the bad
/// append is refused alone and the others land.
#[test]
fn a_refusing_task_table_does_not_make_a_bad_append_stall_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad2.db");
    let store = opener(&path)();
    let block = futures::executor::block_on;
    let (good, bad) = (
        store.journal("good").unwrap(),
        store.journal("bad").unwrap(),
    );
    block(good.append(with_task("g0", 1))).unwrap();
    check_events(&path, "conversation <> 'bad'");
    required_column(&path, "tasks")(true);
    let pending = vec![
        good.append(vec![input("a")]),
        bad.append(with_task("x", 1)),
        good.append(vec![input("b")]),
    ];
    let results: Vec<_> = pending.into_iter().map(block).collect();
    assert_eq!(results[0], Ok(()));
    assert!(
        results[1].as_ref().is_err_and(|e| e.is_closed()),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], Ok(()));
}

/// Task `id` succeeded.
fn finished(id: u64) -> baton_core::JournalRecord {
    baton_core::JournalRecord::TaskFinished {
        task_id: baton_core::TaskId::new(id),
        outcome: baton_core::TaskOutcome::Succeeded {
            output: "done".into(),
        },
        attempts: Some(1),
    }
}

/// The same, with the bad append alone, so that no other append lands
/// beside it and only the probe can tell: it looks at `events` only (a
/// batch writes no task rows), so the append is refused for its data and
/// its journal closed. (With a task row in the probe, as before, the
/// append was taken for one a database refusing every row refuses, and
/// waited, for good.)
#[test]
fn a_refusing_task_table_does_not_hide_an_append_refused_alone_for_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.db");
    let store = opener(&path)();
    let block = futures::executor::block_on;
    let good = store.journal("good").unwrap();
    block(good.append(with_task("a", 1))).unwrap();
    required_column(&path, "tasks")(true);
    check_events(&path, "conversation <> 'bad'");
    let bad = store.journal("bad").unwrap();
    let refused = block(bad.append(with_task("x", 1))).unwrap_err();
    assert!(
        refused.is_closed()
            && refused
                .message()
                .contains("the store refused a record of `bad` (CHECK constraint failed"),
        "{refused}"
    );
    block(good.append(with_task("b", 2))).unwrap();
    assert_eq!(store.read("bad").unwrap(), vec![]);
}

/// An input and a task created: two records.
fn with_task(text: &str, id: u64) -> Vec<baton_core::JournalRecord> {
    vec![
        input(text),
        baton_core::JournalRecord::TaskCreated {
            task: common::tool_task(id),
            arguments: Some("{}".into()),
        },
    ]
}

/// The task table of `path` as another program reads it: how many rows
/// `conversation` has, up to which event they go (`tasks_folded`), and its
/// last event.
fn task_table(path: &Path, conversation: &str) -> (i64, i64, i64) {
    connect(path)
        .query_row(
            "SELECT (SELECT COUNT(*) FROM tasks WHERE conversation = ?1), \
             (SELECT COALESCE(MAX(seq), 0) FROM tasks_folded WHERE conversation = ?1), \
             (SELECT COALESCE(MAX(seq), 0) FROM events WHERE conversation = ?1)",
            [conversation],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap()
}

/// The task table is written when the writer is idle: once the store is
/// closed it holds every task of the log, up to its last event.
#[test]
fn the_task_table_is_written_when_the_writer_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idle.db");
    let store = opener(&path)();
    let journal = store.journal("c").unwrap();
    let block = futures::executor::block_on;
    for id in 1..=20 {
        block(journal.append(with_task(&format!("m{id}"), id))).unwrap();
        assert_eq!(
            common::assert_task_table_agrees(store.as_ref(), "c").len(),
            usize::try_from(id).unwrap()
        );
    }
    drop((journal, store));
    assert_eq!(task_table(&path, "c"), (20, 40, 40));
}

/// A crash leaves the task table behind the log (the events of the last
/// batches committed, the writer gone before it was idle; here the table
/// is set back to its start, a state a crash can leave). Readers fold the
/// events it lacks; the next writer of the conversation folds them into
/// the table. (Without the fold, `Store::tasks` would miss the tasks;
/// without the catch-up, the table would keep missing them.)
#[test]
fn a_task_table_left_behind_by_a_crash_is_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("behind.db");
    let store = opener(&path)();
    let journal = store.journal("c").unwrap();
    let other = store.journal("other").unwrap();
    let block = futures::executor::block_on;
    for id in 1..=5 {
        block(journal.append(with_task(&format!("m{id}"), id))).unwrap();
    }
    block(other.append(with_task("x", 1))).unwrap();
    drop((journal, other, store));
    connect(&path)
        .execute_batch(
            "DELETE FROM tasks WHERE conversation = 'c'; \
             UPDATE tasks_folded SET seq = 0 WHERE conversation = 'c';",
        )
        .unwrap();
    let store = opener(&path)();
    assert_eq!(
        common::assert_task_table_agrees(store.as_ref(), "c").len(),
        5
    );
    assert_eq!(task_table(&path, "c"), (0, 0, 10), "reading writes nothing");
    let journal = store.journal("c").unwrap();
    block(journal.append(with_task("m6", 6))).unwrap();
    drop((journal, store));
    assert_eq!(task_table(&path, "c"), (6, 12, 12));
    assert_eq!(task_table(&path, "other"), (1, 2, 2));
    let store = opener(&path)();
    assert_eq!(
        common::assert_task_table_agrees(store.as_ref(), "c").len(),
        6
    );
}

#[test]
fn snapshots_replay_as_the_whole_journal() {
    let dir = tempfile::tempdir().unwrap();
    common::snapshots_replay_as_the_whole_journal(opener(&dir.path().join("snap.db")));
}

#[test]
fn replay_through_the_store_equals_live() {
    let dir = tempfile::tempdir().unwrap();
    common::replay_through_the_store_equals_live(opener(&dir.path().join("live.db")), 24);
}

#[test]
fn names_no_store_can_hold_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::names_no_store_can_hold_are_refused(opener(&dir.path().join("names.db")));
}

#[test]
fn a_nul_in_a_task_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    common::a_nul_in_a_task_is_kept(opener(&dir.path().join("nul.db")));
}

#[test]
fn a_second_writer_of_a_conversation_appends_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    common::a_second_writer_of_a_conversation_appends_after_the_other(opener(
        &dir.path().join("two.db"),
    ));
}

#[test]
fn a_duplicate_completion_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    common::duplicate_completion_is_ignored(opener(&dir.path().join("dup.db")));
}

#[test]
fn opening_an_existing_store_that_is_not_there_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    let err = baton_store::open_existing(&path.display().to_string()).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("missing.db"), "{err}");
    assert!(!path.exists());
    // An empty file is no store either, and stays empty.
    std::fs::write(&path, b"").unwrap();
    let err = baton_store::open_existing(&path.display().to_string()).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"");
}

#[test]
fn the_sqlite_store_api_still_works_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("plain.db")).unwrap();
    let journal: SqliteJournal = store.journal("p").unwrap();
    futures::executor::block_on(journal.append(vec![input("x")])).unwrap();
    assert_eq!(store.read("p").unwrap(), vec![input("x")]);
    assert_eq!(store.conversations().unwrap(), ["p"]);
    assert_eq!(store.stats().records(), 1);
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
            location: path.clone().into(),
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
                known: baton_store::migrations::SCHEMA_VERSION,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_version_1_store_is_migrated_and_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let conn = rusqlite_like::open(&path);
        conn.execute_batch(
            r#"CREATE TABLE baton_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
               CREATE TABLE events (conversation TEXT NOT NULL, seq INTEGER NOT NULL,
                   at_ms INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (conversation, seq));
               INSERT INTO baton_meta VALUES ('schema_version', '1');
               INSERT INTO events VALUES ('old', 1, 0, '{"record":"user_input","text":"hello"}');"#,
        )
        .unwrap();
        for (seq, record) in common::old_task_rows() {
            conn.execute(
                "INSERT INTO events VALUES ('old', ?1, 0, ?2)",
                rusqlite::params![seq, record],
            )
            .unwrap();
        }
    }
    let store = baton_store::open(&path.display().to_string()).unwrap();
    let records = store.read("old").unwrap();
    assert_eq!((records.len(), &records[0]), (4, &input("hello")));
    common::old_tasks_were_backfilled(store.as_ref());
    assert_eq!(store.snapshot("old").unwrap(), Some(4));
    assert_eq!(store.replay("old").unwrap().pending_inputs.len(), 2);
    let version: String = rusqlite_like::open(&path)
        .query_row(
            "SELECT value FROM baton_meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(version, "4");
}

/// A version-1 file: `baton_meta` and `events` (`columns`), with `rows`.
fn version_1_file(path: &Path, columns: &str, rows: &[(String, i64, i64, String)]) {
    let mut conn = rusqlite_like::open(path);
    let tx = conn.transaction().unwrap();
    tx.execute_batch(&format!(
        "CREATE TABLE baton_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE events ({columns}, PRIMARY KEY (conversation, seq));
         INSERT INTO baton_meta VALUES ('schema_version', '1');"
    ))
    .unwrap();
    for (conversation, seq, at_ms, record) in rows {
        tx.execute(
            "INSERT INTO events VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![conversation, seq, at_ms, record],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

const EVENTS_V1: &str = "conversation TEXT NOT NULL, seq INTEGER NOT NULL, \
                         at_ms INTEGER NOT NULL, record TEXT NOT NULL";

#[test]
fn a_large_old_store_has_its_task_table_filled_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.db");
    let old = common::many_old_events(1_200);
    assert!(old.rows.len() > 3 * baton_store::migrations::BACKFILL_PAGE_ROWS);
    version_1_file(&path, EVENTS_V1, &old.rows);
    let store = baton_store::open(&path.display().to_string()).unwrap();
    common::many_old_events_were_backfilled(store.as_ref(), &old);
}

#[test]
fn a_column_of_an_unexpected_type_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typed.db");
    let mut rows = common::many_old_events(3).rows;
    rows[4].2 = 0;
    version_1_file(&path, EVENTS_V1, &rows);
    rusqlite_like::open(&path)
        .execute("UPDATE events SET at_ms = 'yesterday' WHERE at_ms = 0", [])
        .unwrap();
    let err = baton_store::open(&path.display().to_string()).unwrap_err();
    assert!(
        matches!(&err, StoreError::BadColumn { table, column, .. } if table == "events" && column == "at_ms"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("column `at_ms` of table `events` cannot be read"),
        "{err}"
    );
    assert_eq!(
        baton_store::migrations::inspect(&path).unwrap(),
        1,
        "left as it was"
    );
}

/// The reads of snapshots and of the list of conversations name the table
/// and column too (they said only SQLite's message before).
#[test]
fn a_snapshot_or_conversation_of_an_unexpected_type_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typed.db");
    let store = SqliteStore::open(&path).unwrap();
    let journal = store.journal("c").unwrap();
    futures::executor::block_on(journal.append(vec![input("hello")])).unwrap();
    store.snapshot("c").unwrap();
    let bad_column = |err: StoreError, table: &str, column: &str| {
        let text = format!("column `{column}` of table `{table}` cannot be read");
        assert!(err.to_string().contains(&text), "{err}");
    };
    // Blobs, which a TEXT column keeps as they are.
    let conn = rusqlite_like::open(&path);
    conn.execute("UPDATE snapshots SET records = X'5b5d'", [])
        .unwrap();
    bad_column(store.replay("c").unwrap_err(), "snapshots", "records");
    conn.execute(
        "INSERT INTO events (conversation, seq, at_ms, record) VALUES (X'00ff', 1, 0, '{}')",
        [],
    )
    .unwrap();
    bad_column(store.conversations().unwrap_err(), "events", "conversation");
}

#[test]
fn a_new_file_has_16_kib_pages_and_an_old_one_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let page_size = |path: &std::path::Path| -> i64 {
        rusqlite_like::open(path)
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap()
    };
    let new = dir.path().join("new.db");
    drop(baton_store::open(&new.display().to_string()).unwrap());
    assert_eq!(page_size(&new), 16 * 1024);
    let old = dir.path().join("old.db");
    rusqlite_like::open(&old)
        .execute_batch(
            "PRAGMA page_size = 4096;
             CREATE TABLE baton_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE events (conversation TEXT NOT NULL, seq INTEGER NOT NULL,
                 at_ms INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (conversation, seq));
             INSERT INTO baton_meta VALUES ('schema_version', '1');",
        )
        .unwrap();
    drop(baton_store::open(&old.display().to_string()).unwrap());
    assert_eq!(page_size(&old), 4096);
}

#[tokio::test]
async fn a_new_snapshot_replaces_the_older_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snaps.db");
    let store = baton_store::open(&path.display().to_string()).unwrap();
    let journal = store.journal("s").unwrap();
    for i in 0..3 {
        journal.append(vec![input(&format!("m{i}"))]).await.unwrap();
        assert_eq!(store.snapshot("s").unwrap(), Some(i + 1));
    }
    let rows: Vec<i64> = {
        let conn = rusqlite_like::open(&path);
        let mut stmt = conn.prepare("SELECT seq FROM snapshots").unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert_eq!(rows, [3]);
    assert_eq!(store.replay("s").unwrap().pending_inputs.len(), 3);
}

#[tokio::test]
async fn a_burst_larger_than_a_row_is_split_over_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("burst.db");
    let rows_path = path.clone();
    let rows_of: common::RowsOf = Box::new(move |conversation| {
        let conn = rusqlite_like::open(&rows_path);
        let mut stmt = conn
            .prepare("SELECT seq, length(CAST(record AS BLOB)) FROM events WHERE conversation = ?1 ORDER BY seq")
            .unwrap();
        let rows = stmt
            .query_map([conversation], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    });
    common::a_burst_larger_than_a_row_is_split(opener(&path), rows_of).await;
}

/// Plain rusqlite, to make files the way another program would.
mod rusqlite_like {
    pub fn open(path: &std::path::Path) -> rusqlite::Connection {
        rusqlite::Connection::open(path).unwrap()
    }
}

#[test]
fn processes_opening_one_new_file_at_once_migrate_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    for round in 0..5 {
        let path = path.with_extension(format!("{round}.db"));
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || SqliteStore::open(&path).map(|_| ()))
            })
            .collect();
        for o in opened {
            o.join()
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        assert_eq!(
            baton_store::migrations::inspect(&path).unwrap(),
            baton_store::migrations::SCHEMA_VERSION
        );
    }
}

/// A check lets only conversations named `tenant-…` write, in a store with
/// no rows yet. The first append, of `misnamed`, is refused, and so is the
/// probe's minimal row (its conversation is no tenant's either), with no
/// row of another conversation to copy: nothing yet tells this from a
/// database refusing every row, so the append waits, answered with an
/// error that may pass. But only `misnamed`'s appends wait: `tenant-1`'s
/// land, and once one has, `misnamed`'s append is found refused for its
/// data, dropped, and its journal closed. (Before, `misnamed`'s append was
/// kept at the head of the batches and every later append of every
/// conversation failed behind it, for good.)
#[test]
fn a_database_wrongly_found_refusing_every_row_holds_up_only_that_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.db");
    let store = opener(&path)();
    check_events(&path, "conversation LIKE 'tenant-%'");
    let block = futures::executor::block_on;
    let (bad, good) = (
        store.journal("misnamed").unwrap(),
        store.journal("tenant-1").unwrap(),
    );
    let waits = block(bad.append(vec![input("x")])).unwrap_err();
    assert!(
        !waits.is_closed()
            && waits
                .message()
                .contains("the database refuses every journal row alike"),
        "{waits}"
    );
    assert_eq!(
        block(good.append(vec![input("a")])),
        Ok(()),
        "tenant-1 does not stall behind `misnamed`"
    );
    let refused = block(bad.append(Vec::new())).unwrap_err();
    assert!(
        refused.is_closed()
            && refused
                .message()
                .contains("the store refused a record of `misnamed` (CHECK constraint failed"),
        "{refused}"
    );
    assert_eq!(block(good.append(vec![input("b")])), Ok(()));
    assert_eq!(
        store.read("tenant-1").unwrap(),
        vec![input("a"), input("b")]
    );
    assert_eq!(store.read("misnamed").unwrap(), vec![]);
    assert_eq!(
        store.conversations().unwrap(),
        vec!["tenant-1".to_owned()],
        "the probe left nothing"
    );
}

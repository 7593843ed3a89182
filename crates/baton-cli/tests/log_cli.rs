//! `baton log` against stores written by real `baton run`s: the history and
//! the tree are printed, several conversations are listed, and a missing or
//! foreign file is a clear error that leaves the disk as it was. The same
//! conversation copied into PostgreSQL prints the same (skipped when no
//! server is reachable, unless `BATON_REQUIRE_POSTGRES=1`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use baton_store::{PgOptions, PgStore, Store, StoreError};

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/scenarios")
        .join(format!("{name}.toml"))
}

fn baton() -> Command {
    Command::cargo_bin("baton").expect("the baton binary")
}

/// Plays the research scenario into `store` as conversation `id`.
fn run_into(store: &Path, id: &str) {
    play_into("research", store, id);
}

/// Plays scenario `name` into `store` as conversation `id`.
fn play_into(name: &str, store: &Path, id: &str) {
    baton()
        .arg("run")
        .arg(scenario(name))
        .arg("--store")
        .arg(store)
        .args(["--conversation", id])
        .assert()
        .success();
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_stored_run_prints_its_history_and_its_tree() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("research.db");
    run_into(&db, "research");
    let output = baton().arg("log").arg(&db).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with(&format!("conversation research in {}:", db.display())),
        "{text}"
    );
    let history: Vec<&str> = text
        .split("\nhistory:\n")
        .nth(1)
        .and_then(|rest| rest.split("\ntasks:\n").next())
        .expect("a history section before the tasks")
        .lines()
        .collect();
    assert!(history[0].trim_start().starts_with("1 system"), "{text}");
    assert!(
        history.iter().any(|l| l.contains(" user ")),
        "the user's input is a line: {text}"
    );
    assert!(
        history.iter().any(|l| l.contains("→ create_task(")),
        "delegations show as calls: {text}"
    );
    let results = history.iter().filter(|l| l.contains(" task ")).count();
    let tree = text.split("\ntasks:\n").nth(1).expect("a tasks section");
    assert!(tree.starts_with("  lead\n"), "{tree}");
    let researchers = tree.matches("researcher [succeeded]").count();
    assert!(researchers > 0, "{tree}");
    assert_eq!(results, researchers, "one result line per delegation");
    assert!(tree.contains("fetcher [succeeded]"), "nested tasks: {tree}");
    assert!(!text.contains("accepted, not yet in history"), "{text}");
}

#[test]
fn a_retried_task_shows_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("flaky.db");
    play_into("flaky_worker", &db, "flaky");
    let output = baton().arg("log").arg(&db).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let tree = text.split("\ntasks:\n").nth(1).expect("a tasks section");
    // Failed twice, then succeeded: three attempts; the worker took one.
    assert!(
        tree.contains("flaky_fetch [succeeded] attempts=3"),
        "{tree}"
    );
    assert!(tree.contains("worker [succeeded] attempts=1"), "{tree}");

    // The task table says the same, without a replay.
    let output = baton().arg("log").arg(&db).arg("--tasks").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(table.starts_with("tasks of flaky in "), "{table}");
    assert!(
        table.contains("task-1 parent=- owner=lead delegation worker [succeeded] attempts=1"),
        "{table}"
    );
    assert!(
        table.contains(
            "task-2 parent=task-1 owner=worker tool flaky_fetch [succeeded] attempts=3 took="
        ),
        "{table}"
    );
    assert!(table.contains("revenue up 12%"), "the outcome: {table}");
}

#[test]
fn several_conversations_are_listed_and_each_can_be_picked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("two.db");
    run_into(&db, "first");
    run_into(&db, "second");
    let output = baton().arg("log").arg(&db).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("2 conversations"), "{text}");
    assert!(text.contains("  first  "), "{text}");
    assert!(text.contains("  second  "), "{text}");
    assert!(text.contains(" tasks (0 not ended)"), "{text}");

    let output = baton()
        .arg("log")
        .arg(&db)
        .args(["--conversation", "second"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("conversation second in "));

    let output = baton()
        .arg("log")
        .arg(&db)
        .args(["--conversation", "third"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("no conversation `third`"), "{err}");
    assert!(err.contains("first, second"), "{err}");
}

#[test]
fn a_missing_store_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nothing-here.db");
    let output = baton().arg("log").arg(&db).output().unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("nothing-here.db"), "{err}");
    assert!(err.contains("no baton store"), "{err}");
    assert!(!db.exists(), "baton log created {}", db.display());
}

#[test]
fn a_foreign_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let bytes = b"my notes, not a database\n".repeat(50);
    std::fs::write(&notes, &bytes).unwrap();
    let output = baton().arg("log").arg(&notes).output().unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("not an SQLite database"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(std::fs::read(&notes).unwrap(), bytes);
}

#[test]
fn an_unknown_scheme_says_which_stores_exist() {
    let output = baton()
        .args(["log", "mysql://127.0.0.1/test"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("unknown scheme `mysql`"), "{err}");
    assert!(err.contains("postgres://"), "{err}");
}

#[tokio::test]
async fn a_conversation_in_postgres_prints_as_it_does_from_sqlite() {
    let url = std::env::var("BATON_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("baton_log_test_{}", std::process::id());
    let pg = match PgStore::open(
        &url,
        PgOptions {
            schema: schema.clone(),
        },
    ) {
        Ok(pg) => pg,
        Err(StoreError::Postgres { message, .. })
            if !std::env::var("BATON_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") =>
        {
            // Straight to stderr, past the test harness's capture.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL at {url} is unreachable ({message}); \
                 BATON_REQUIRE_POSTGRES=1 makes this a failure"
            );
            return;
        }
        Err(e) => panic!("PostgreSQL at {url}: {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("research.db");
    run_into(&db, "research");
    let records = baton_store::open(&db.display().to_string())
        .unwrap()
        .read("research")
        .unwrap();
    Store::journal(&pg, "research")
        .unwrap()
        .append(records)
        .await
        .unwrap();

    let spec = format!("{url}?schema={schema}");
    let from_pg = baton().args(["log", &spec]).output().unwrap();
    let from_sqlite = baton().arg("log").arg(&db).output().unwrap();
    pg.destroy().unwrap();
    assert!(from_pg.status.success(), "{}", stderr(&from_pg));
    let (pg_text, sqlite_text) = (stdout(&from_pg), stdout(&from_sqlite));
    assert!(
        pg_text.starts_with(&format!(
            "conversation research in {url} (schema {schema}):"
        )),
        "{pg_text}"
    );
    let body = |t: &str| t.split_once("\n").map(|(_, b)| b.to_owned());
    assert_eq!(body(&pg_text), body(&sqlite_text));
}

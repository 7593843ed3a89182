//! The crash test: `baton run --store` is killed with SIGKILL while 100
//! background tasks are in flight, started again on the same store, and
//! every result and every input ends up in the history exactly once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use baton_core::{Message, Replay, TaskId, TaskStatus};
use baton_testkit::PgSchema;

const TASKS: usize = 100;

fn scenario() -> String {
    let calls: Vec<String> = (1..=TASKS)
        .map(|n| format!("{{ tool = \"work\", args = {{ n = {n} }} }}"))
        .collect();
    format!(
        r#"
[scenario]
name = "crash"
seed = 3

[agents.lead]
tools = ["work"]
repeat_last_turn = true
turns = [
    {{ calls = [{}] }},
    {{ text = "All {TASKS} started." }},
    {{ text = "ok {{results}}" }},
]

[tools.work]
parameters = {{ n = "integer" }}
background = true
latency = {{ min_ms = 500, max_ms = 3000 }}
result = "result {{n}}"

[[script]]
at_ms = 0
user = "go"

[[script]]
at_ms = 200
user = "how is it going?"
"#,
        calls.join(", ")
    )
}

fn baton_run(file: &Path, store: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.arg("run")
        .arg(file)
        .arg("--real-time")
        .arg("--json")
        .arg("--store")
        .arg(store);
    cmd
}

fn replay(store: &str) -> Replay {
    baton_store::open_existing(store)
        .and_then(|s| s.replay("crash"))
        .unwrap_or_else(|e| panic!("{store}: {e}"))
}

/// The store's task table says what its log says: each task's status and
/// attempts as the replay has them. Returns them.
fn task_table_agrees(store: &str, replay: &Replay) -> Vec<(TaskId, TaskStatus, u32)> {
    let table: Vec<_> = baton_store::open_existing(store)
        .and_then(|s| s.tasks("crash"))
        .unwrap_or_else(|e| panic!("{store}: {e}"))
        .into_iter()
        .map(|t| (t.id, t.status, t.attempts))
        .collect();
    let mut logged: Vec<_> = replay
        .tasks
        .iter()
        .map(|(t, _)| (t.id, t.status, t.attempts))
        .collect();
    logged.sort_by_key(|t| t.0);
    assert_eq!(table, logged, "the task table agrees with the log");
    table
}

#[test]
fn a_killed_run_resumes_with_every_result_and_input_exactly_once_sqlite() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = dir.path().join("crash.db");
    kill_and_resume(dir.path(), &store.display().to_string());
}

#[test]
fn a_killed_run_resumes_with_every_result_and_input_exactly_once_postgres() {
    let Some(schema) = PgSchema::new_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    kill_and_resume(dir.path(), &schema.store_spec());
}

fn kill_and_resume(dir: &Path, store: &str) {
    let file = dir.join("crash.toml");
    std::fs::write(&file, scenario()).unwrap_or_else(|e| panic!("{e}"));

    // First run: kill it once some tasks have finished and most have not.
    let mut child = baton_run(&file, store)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start baton: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut finished = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_else(|e| panic!("{e}"));
        if line.contains(r#""type":"task_finished""#) {
            finished += 1;
            if finished == 20 {
                break;
            }
        }
    }
    assert_eq!(finished, 20, "the first run ended before 20 tasks finished");
    child.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}")); // SIGKILL on Unix
    let _ = child.wait();

    let before = replay(store);
    let done_before = before
        .tasks
        .iter()
        .filter(|(t, _)| t.status.is_terminal())
        .count();
    assert!(
        (20..TASKS).contains(&done_before),
        "the kill should land with tasks in flight: {done_before} of {TASKS} done"
    );
    let table_before = task_table_agrees(store, &before);

    // Second run on the same store: it resumes and settles.
    let out = baton_run(&file, store)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming conversation `crash`"), "{stderr}");

    let replay = replay(store);
    let mut results: BTreeMap<String, usize> = BTreeMap::new();
    let mut inputs = Vec::new();
    for message in &replay.history {
        match message {
            Message::TaskResult {
                task_id, outcome, ..
            } => {
                assert!(outcome.is_success(), "{task_id}: {outcome:?}");
                *results.entry(task_id.to_string()).or_insert(0) += 1;
            }
            Message::User { content } => inputs.push(content.clone()),
            _ => {}
        }
    }
    assert!(
        replay.pending_inputs.is_empty(),
        "{:?}",
        replay.pending_inputs
    );
    assert_eq!(
        results.len(),
        TASKS,
        "every task's result is in the history"
    );
    let twice: Vec<_> = results.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "results counted twice: {twice:?}");
    assert_eq!(inputs, ["go", "how is it going?"]);
    // The task table followed the resume: every task succeeded, those in
    // flight at the kill on a second attempt.
    let table = task_table_agrees(store, &replay);
    assert_eq!(table.len(), TASKS);
    for ((id, status, attempts), (_, was, _)) in table.iter().zip(&table_before) {
        assert_eq!(*status, TaskStatus::Succeeded, "{id}");
        let expected = if was.is_terminal() { 1 } else { 2 };
        assert_eq!(*attempts, expected, "{id} was {was:?} at the kill");
    }
}

//! `baton chat` driven through a pipe, as a script would.

use std::path::PathBuf;

use assert_cmd::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
}

fn position(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` is missing from:\n{haystack}"))
}

#[test]
fn a_background_task_completes_while_two_other_inputs_are_answered() {
    let out = Command::cargo_bin("baton")
        .unwrap_or_else(|e| panic!("{e}"))
        .args(["chat", "--agents"])
        .arg(fixture("chat_agents.toml"))
        .write_stdin("honeybees\n/tasks\nWhat is 2 + 2?\nTell me a joke\n")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let started = position(&stdout, "[task-1 deep_research started]");
    let listed = position(&stdout, "task-1 deep_research running (attempt 1)");
    let sum = position(&stdout, "assistant: 2 + 2 = 4.");
    let joke = position(
        &stdout,
        "assistant: Bees hum because they forgot the words.",
    );
    let finished = position(
        &stdout,
        "[task-1 succeeded: honeybees: 2 million flowers per pound of honey]",
    );
    let folded = position(
        &stdout,
        "assistant: Research done: honeybees: 2 million flowers per pound of honey",
    );
    // The task was still running while both other questions were answered,
    // and its result joined the conversation after them.
    assert!(
        started < listed && listed < sum && sum < joke && joke < finished && finished < folded,
        "{stdout}"
    );
}

#[test]
fn commands_report_unknown_tasks_and_typos() {
    let out = Command::cargo_bin("baton")
        .unwrap_or_else(|e| panic!("{e}"))
        .args(["chat", "--agents"])
        .arg(fixture("chat_agents.toml"))
        .write_stdin("/cancel task-9\n/dance\n/cancel\n/tree\n/quit\nnever sent\n")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("cannot cancel task-9:"), "{stdout}");
    assert!(
        stdout.contains("unknown command /dance; /help lists them"),
        "{stdout}"
    );
    assert!(stdout.contains("/cancel needs a task id"), "{stdout}");
    assert!(
        stdout.contains("assistant"),
        "the tree shows the root agent: {stdout}"
    );
    assert!(
        !stdout.contains("never sent"),
        "input after /quit was read: {stdout}"
    );
}

#[test]
fn an_unknown_agent_is_a_clear_error() {
    let out = Command::cargo_bin("baton")
        .unwrap_or_else(|e| panic!("{e}"))
        .args(["chat", "--agent", "nobody", "--agents"])
        .arg(fixture("chat_agents.toml"))
        .write_stdin("")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no agent `nobody`; agents: assistant"),
        "{stderr}"
    );
}

/// `baton chat --session planning` on `store`, fed `input` through a pipe.
fn chat_session(store: &std::path::Path, input: &str) -> std::process::Output {
    Command::cargo_bin("baton")
        .unwrap_or_else(|e| panic!("{e}"))
        .args(["chat", "--session", "planning", "--store"])
        .arg(store)
        .arg("--agents")
        .arg(fixture("chat_agents.toml"))
        .write_stdin(input.to_owned())
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_session_resumes_from_its_store() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = dir.path().join("sessions.db");
    let chat = |input: &str| chat_session(&store, input);
    let first = chat("honeybees\n");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}");
    assert!(stdout.contains("[task-1 succeeded"), "{stdout}");

    let second = chat("/tasks\nWhat is 2 + 2?\n");
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("resuming conversation `planning`"),
        "{stderr}"
    );
    // The task table and the history came back: the finished task is
    // listed, and the next reply is the script's next turn, not its first.
    assert!(
        stdout.contains("task-1 deep_research succeeded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("assistant: Bees hum because they forgot the words."),
        "{stdout}"
    );
    assert!(!stdout.contains("[task-2"), "nothing ran twice: {stdout}");
}

#[test]
fn quitting_a_session_keeps_its_running_task_for_the_next_time() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = dir.path().join("sessions.db");
    let chat = |input: &str| chat_session(&store, input);
    // The research task runs 1.5 s; the user quits right after it started.
    let first = chat("honeybees\n/quit\n");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}");
    assert!(
        stdout.contains("[task-1 deep_research started]"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "(1 running task(s) kept: they start again when you resume with --session planning)"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("[task-1 cancelled"), "{stdout}");

    // Resumed: the task starts again and its result comes in.
    let second = chat("/tasks\n");
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("task-1 deep_research running"), "{stdout}");
    assert!(
        stdout.contains("[task-1 succeeded") && !stdout.contains("[task-2"),
        "{stdout}"
    );
}

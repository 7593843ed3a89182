//! `baton run`, `baton test` and `baton validate`, run as the real binary.

use std::path::PathBuf;

use assert_cmd::Command;

fn baton() -> Command {
    Command::cargo_bin("baton").unwrap_or_else(|e| panic!("the baton binary: {e}"))
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_example_scenario_passes_baton_test() {
    let out = baton()
        .arg("test")
        .arg(repo("examples/scenarios"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for name in [
        "weather",
        "research",
        "chat_while_waiting",
        "flaky_worker",
        "realtime_async",
        "cancel_subtree",
    ] {
        assert!(
            stdout.contains(&format!("PASS {name} (")),
            "{name}:\n{stdout}"
        );
    }
    assert!(
        stdout.trim_end().ends_with("6 passed, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn a_failed_expectation_shows_a_diff_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let weather = std::fs::read_to_string(repo("examples/scenarios/weather.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let wrong = weather
        .replace("model_calls = 2", "model_calls = 3")
        .replace("max_duration_ms = 1400", "max_duration_ms = 1000");
    std::fs::write(dir.path().join("wrong.toml"), wrong).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        repo("examples/scenarios/flaky_worker.toml"),
        dir.path().join("right.toml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let out = baton()
        .arg("test")
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("PASS flaky_worker"), "{stdout}");
    assert!(stdout.contains("FAIL weather"), "{stdout}");
    assert!(
        stdout.contains("expectation `model_calls` failed\n    - 3\n    + 2 (assistant = 2)"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("expectation `max_duration_ms` failed\n    - at most 1000 ms\n    + 1400 ms"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("1 passed, 1 failed"),
        "{stdout}"
    );
}

#[test]
fn validate_names_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[agents.lead]\ndelegates_to = [\"fetchr\"]\nturns = [{ text = \"hi\" }]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = baton()
        .arg("validate")
        .arg(&bad)
        .arg(repo("examples/scenarios/weather.toml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: {}:2:17: agent `lead` delegates to `fetchr`, which is not defined",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("weather.toml: 1 agent(s), 1 tool(s)"));
}

#[test]
fn the_schema_in_docs_is_the_one_the_types_generate() {
    let out = baton()
        .args(["validate", "--schema"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let generated = text(&out.stdout);
    let schema: serde_json::Value =
        serde_json::from_str(&generated).unwrap_or_else(|e| panic!("not JSON: {e}"));
    assert!(schema["properties"]["agents"].is_object(), "{schema}");
    let in_docs = std::fs::read_to_string(repo("docs/scenario.schema.json"))
        .unwrap_or_else(|e| panic!("docs/scenario.schema.json: {e}"));
    assert_eq!(
        in_docs, generated,
        "docs/scenario.schema.json is stale: regenerate it with `baton validate --schema > docs/scenario.schema.json`"
    );
}

#[test]
fn run_json_prints_every_event_kind_as_json_lines() {
    let out = baton()
        .arg("run")
        .arg("--json")
        .arg(fixture("every_event.toml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut kinds = std::collections::BTreeSet::new();
    let mut last_seq = 0;
    for line in text(&out.stdout).lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let seq = event["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq: {line}"));
        assert!(seq > last_seq, "events out of order at {line}");
        last_seq = seq;
        kinds.insert(event["type"].as_str().unwrap_or_default().to_owned());
    }
    let every: std::collections::BTreeSet<String> = [
        "user_message",
        "turn_started",
        "turn_finished",
        "turn_failed",
        "turn_interrupted",
        "assistant_message",
        "tool_call_started",
        "tool_call_finished",
        "task_created",
        "task_started",
        "task_retrying",
        "approval_requested",
        "approval_decided",
        "budget_exceeded",
        "task_finished",
        "idle",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let missing: Vec<_> = every.difference(&kinds).collect();
    assert!(missing.is_empty(), "missing event kinds: {missing:?}");
}

#[test]
fn run_prints_the_tree_timeline_and_answer() {
    let out = baton()
        .arg("run")
        .arg(repo("examples/scenarios/research.toml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("research: settled in 3.537s (virtual time)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("└ task-1 researcher [succeeded]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("peak parallelism: 9 tasks at 0.700s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("critical path: task-3 researcher"),
        "{stdout}"
    );
    assert!(
        stdout.contains("answer:\n  Report on honeybees."),
        "{stdout}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = baton()
        .args(["run", "no/such/scenario.toml"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error: cannot read no/such/scenario.toml"),
        "{}",
        text(&out.stderr)
    );
}

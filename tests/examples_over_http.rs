//! The core examples, run as real programs, talking to the mock LLM server
//! over HTTP through `OpenAiChat` (`BATON_MODEL`), instead of the scripted
//! model. `cargo test` builds the examples first.

use std::path::PathBuf;
use std::process::Command;

use baton_testkit::{MockLlmServer, MockScript};

/// `target/<profile>/examples/<name>`, next to this test's own binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join("examples").join(name)
}

fn run_against_mock(name: &str) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("crates/baton-testkit/scripts")
        .join(format!("{name}.json"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime
        .block_on(MockLlmServer::start(
            MockScript::from_file(&script).expect("script loads"),
        ))
        .expect("mock server starts");
    let output = Command::new(example(name))
        .env(
            "BATON_MODEL",
            format!("openai:mock-model@{}", server.openai_base_url()),
        )
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the {name} example at {}: {e}",
                example(name).display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !runtime.block_on(async { server.requests() }).is_empty(),
        "the example used the server"
    );
    stdout
}

#[test]
fn the_weather_example_runs_against_the_mock_server() {
    let out = run_against_mock("weather");
    assert!(out.contains("sequential (one lookup per turn)"), "{out}");
    assert!(out.contains("parallel   (all in one turn)"), "{out}");
    assert!(out.contains("answer:"), "{out}");
}

#[test]
fn the_chat_while_waiting_example_runs_against_the_mock_server() {
    let out = run_against_mock("chat_while_waiting");
    assert!(
        out.contains("user:      Meanwhile: what's the weather in Paris?"),
        "{out}"
    );
    assert!(out.contains("task-1 succeeded"), "{out}");
    assert!(out.contains("The research is in"), "{out}");
}

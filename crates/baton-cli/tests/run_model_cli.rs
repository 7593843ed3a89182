//! `baton run --model`: every agent of a scenario talks to a real HTTP
//! model (the bundled mock server speaking the OpenAI API) instead of its
//! scripted turns.

use std::path::PathBuf;

use baton_testkit::{MockLlmServer, MockScript};

const SCRIPT: &str = r#"{
  "agents": [{
    "match": "You answer questions about the weather.",
    "turns": [
      { "tool_calls": [
          { "name": "get_weather", "arguments": { "city": "Rome" } },
          { "name": "get_weather", "arguments": { "city": "Quito" } } ] },
      { "text": "From the HTTP model: Rome and Quito are sunny." }
    ]
  }]
}"#;

#[tokio::test(flavor = "multi_thread")]
async fn model_overrides_the_scripted_turns() {
    let script = MockScript::from_json(SCRIPT).unwrap_or_else(|e| panic!("{e}"));
    let server = MockLlmServer::start(script)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let model = format!("openai:mock@{}", server.openai_base_url());
    let scenario =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/weather.toml");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["run", "--json", "--model", &model])
            .arg(scenario)
            .env_remove("OPENAI_API_KEY")
            .output()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let cities: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "tool_call_finished")
        .filter_map(|e| e["output"].as_str())
        .collect();
    // The simulated tool still answers, for the cities the HTTP model chose.
    assert_eq!(cities, ["Rome: 21°C and sunny", "Quito: 21°C and sunny"]);
    assert!(events.iter().any(|e| e["type"] == "assistant_message"
        && e["text"] == "From the HTTP model: Rome and Quito are sunny."));
    assert_eq!(server.requests().len(), 2, "two model calls over HTTP");
}

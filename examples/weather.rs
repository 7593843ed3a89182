//! Five weather lookups, each a one-second async call: once one per model
//! turn (sequential), once all in a single turn (parallel, as baton runs
//! inline tools). Prints both times side by side: about 5 s against 1 s.
//!
//! ```text
//! cargo run --example weather
//! BATON_MODEL=openai:gpt-4o-mini cargo run --example weather   # a real model
//! ```
//!
//! With `BATON_MODEL` set (any model string, e.g. pointed at
//! `baton mock-llm --script crates/baton-testkit/scripts/weather.json`), the
//! agent talks to that model instead of the scripted one.

use std::time::{Duration, Instant};

use baton::{Agent, Orchestrator, ScriptedModel, ScriptedTurn, Tool, ToolError, ToolOutput};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

const CITIES: [&str; 5] = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo"];

#[derive(Deserialize, JsonSchema)]
struct WeatherArgs {
    /// The city to look up.
    city: String,
}

/// A weather lookup that takes one second, like a slow HTTP API.
struct GetWeather;

impl Tool for GetWeather {
    type Args = WeatherArgs;

    fn name(&self) -> &str {
        "get_weather"
    }

    fn description(&self) -> &str {
        "Current weather in a city."
    }

    async fn call(&self, args: WeatherArgs) -> Result<ToolOutput, ToolError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(format!("{}: 21°C, clear", args.city).into())
    }
}

fn lookup(city: &str) -> ScriptedTurn {
    ScriptedTurn::call("get_weather", json!({ "city": city }))
}

/// Plays one conversation with `script` and returns its wall-clock time
/// and final answer.
async fn play(script: Vec<ScriptedTurn>) -> anyhow::Result<(Duration, String)> {
    let model = baton::llm::model_from_env_or(ScriptedModel::new().script("assistant", script))?;
    let agent = Agent::builder("assistant")
        .shared_model(model)
        .system_prompt("You are helpful.")
        .tool(GetWeather)
        .build();
    let convo = Orchestrator::start(agent);
    let start = Instant::now();
    convo
        .send_user("What's the weather in Paris, Tokyo, Lima, Oslo and Cairo?")
        .await?;
    convo.settled().await?;
    let answer = convo
        .history()
        .await?
        .last_assistant_text()
        .unwrap_or_default()
        .to_owned();
    convo.shutdown().await?;
    Ok((start.elapsed(), answer))
}

#[actix::main]
async fn main() -> anyhow::Result<()> {
    let summary = ScriptedTurn::text("Clear skies and 21°C in all five cities.");

    let mut sequential: Vec<ScriptedTurn> = CITIES.iter().map(|c| lookup(c)).collect();
    sequential.push(summary.clone());

    let mut all_at_once = lookup(CITIES[0]);
    for city in &CITIES[1..] {
        all_at_once = all_at_once.and_call("get_weather", json!({ "city": city }));
    }
    let parallel = vec![all_at_once, summary];

    println!("Five weather lookups, each taking 1 s:\n");
    let (seq_time, _) = play(sequential).await?;
    println!(
        "  sequential (one lookup per turn): {:>5.2} s",
        seq_time.as_secs_f64()
    );
    let (par_time, answer) = play(parallel).await?;
    println!(
        "  parallel   (all in one turn):     {:>5.2} s",
        par_time.as_secs_f64()
    );
    println!(
        "\n  speed-up: {:.1}x\n  answer:   {answer}",
        seq_time.as_secs_f64() / par_time.as_secs_f64()
    );
    Ok(())
}

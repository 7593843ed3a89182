//! A real agent (baton-runtime) whose model is `OpenAiChat` talking to the
//! mock server over loopback: the weather round trip end to end.

use baton_core::{ToolError, ToolOutput};
use baton_llm::{HttpSettings, OpenAiChat};
use baton_runtime::{Agent, Orchestrator};
use baton_testkit::mock_llm::{MockLlmServer, MockScript, MockToolCall, MockTurn};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct WeatherArgs {
    /// The city.
    city: String,
}

struct GetWeather;

impl baton_core::Tool for GetWeather {
    type Args = WeatherArgs;

    fn name(&self) -> &str {
        "get_weather"
    }

    fn description(&self) -> &str {
        "Current weather in a city."
    }

    async fn call(&self, args: WeatherArgs) -> Result<ToolOutput, ToolError> {
        Ok(format!("{}: 21°C, clear", args.city).into())
    }
}

#[actix_rt::test]
async fn the_weather_agent_runs_through_openai_chat_against_the_mock() {
    let cities = ["Paris", "Tokyo", "Lima"];
    let script = MockScript::new().agent(
        "You are helpful.",
        vec![
            MockTurn::tool_calls(
                cities
                    .iter()
                    .map(|c| MockToolCall::new("get_weather", json!({ "city": c })))
                    .collect(),
            ),
            MockTurn::text("Clear skies and 21°C in all three cities."),
        ],
    );
    for stream in [false, true] {
        let server = MockLlmServer::start(script.clone()).await.expect("server");
        let model = OpenAiChat::builder("mock")
            .base_url(server.openai_base_url())
            .settings(HttpSettings::default())
            .stream(stream)
            .build()
            .expect("client");
        let agent = Agent::builder("assistant")
            .model(model)
            .system_prompt("You are helpful.")
            .tool(GetWeather)
            .build();
        let convo = Orchestrator::start(agent);
        convo
            .send_user("What's the weather in Paris, Tokyo and Lima?")
            .await
            .expect("sent");
        convo.settled().await.expect("settled");
        let history = convo.history().await.expect("history");
        assert_eq!(
            history.last_assistant_text(),
            Some("Clear skies and 21°C in all three cities.")
        );
        convo.shutdown().await.expect("shutdown");
        let requests = server.requests();
        assert_eq!(requests.len(), 2, "two model turns");
        // The second request carries the three tool results, answering the calls by id.
        let messages = requests[1].body["messages"].as_array().expect("messages");
        let tool_results: Vec<_> = messages.iter().filter(|m| m["role"] == "tool").collect();
        assert_eq!(tool_results.len(), 3);
        assert_eq!(tool_results[0]["content"], "Paris: 21°C, clear");
        let call_ids: Vec<_> = messages
            .iter()
            .filter(|m| m["role"] == "assistant")
            .flat_map(|m| m["tool_calls"].as_array().cloned().unwrap_or_default())
            .map(|c| c["id"].clone())
            .collect();
        assert_eq!(call_ids.len(), 3);
        assert!(tool_results
            .iter()
            .all(|r| call_ids.contains(&r["tool_call_id"])));
        assert_eq!(requests[1].streamed(), stream);
    }
}

//! The mock scripts shipped for the examples parse and serve what the
//! examples' scripted models do.

use baton_testkit::mock_llm::{MockLlmServer, MockScript, MockTurn};

fn script(name: &str) -> MockScript {
    MockScript::from_file(format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))).expect("parses")
}

#[tokio::test]
async fn the_weather_script_calls_get_weather_then_summarises() {
    let s = script("weather.json");
    let turns = &s.agents[0].turns;
    assert_eq!(turns.len(), 8);
    assert!(matches!(&turns[5], MockTurn::Reply { text: Some(t), .. } if t.contains("21°C")));
    assert!(matches!(&turns[6], MockTurn::Reply { tool_calls, .. } if tool_calls.len() == 5));
    let server = MockLlmServer::start(s).await.expect("server");
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.openai_base_url()))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "system", "content": "You are helpful."}]}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
}

#[test]
fn the_chat_script_starts_research_then_chats() {
    let s = script("chat_while_waiting.json");
    assert_eq!(s.agents[0].marker, "deep_research");
    assert_eq!(s.agents[0].turns.len(), 5);
}

//! `AnthropicMessages` against the real `MockLlmServer` over loopback HTTP.

use std::sync::Arc;
use std::time::Duration;

use baton_core::{AgentName, Message, ToolSpec};
use baton_llm::{
    AnthropicMessages, ApiKey, ChatModel, ChatRequest, HttpSettings, LlmError, RetryPolicy,
};
use baton_testkit::mock_llm::{Fault, MockLlmServer, MockScript, MockToolCall, MockTurn};
use serde_json::json;

const KEY: &str = "sk-ant-test-secret";

fn client(server: &MockLlmServer, stream: bool) -> AnthropicMessages {
    AnthropicMessages::builder("claude-mock")
        .base_url(server.anthropic_base_url())
        .api_key(ApiKey::new(KEY))
        .stream(stream)
        .settings(HttpSettings {
            retry: RetryPolicy {
                max_retries: 2,
                base: Duration::from_millis(1),
                max: Duration::from_millis(10),
            },
            ..HttpSettings::default()
        })
        .build()
        .expect("client")
}

fn request(history: Vec<Message>) -> ChatRequest {
    let mut messages = vec![Message::system("You are the weather bot.")];
    messages.extend(history);
    ChatRequest {
        agent: AgentName::new("weather"),
        messages: Arc::new(messages),
        tools: Arc::new(vec![ToolSpec {
            name: "weather".into(),
            description: "Weather for a city".into(),
            parameters: json!({"type": "object"}),
        }]),
    }
}

async fn round_trip(stream: bool) {
    let script = MockScript::new().agent(
        "weather bot",
        vec![
            MockTurn::Reply {
                text: Some("Checking.".into()),
                tool_calls: vec![
                    MockToolCall::new("weather", json!({"city": "Paris"})),
                    MockToolCall::new("weather", json!({"city": "Oslo"})),
                ],
            },
            MockTurn::text("Sunny and snowy."),
        ],
    );
    let server = MockLlmServer::start(script).await.expect("server");
    let model = client(&server, stream);
    let user = Message::user("weather?");
    let first = model
        .complete(request(vec![user.clone()]))
        .await
        .expect("first");
    assert_eq!(first.content.as_deref(), Some("Checking."));
    assert_eq!(first.tool_calls.len(), 2);
    let args: serde_json::Value =
        serde_json::from_str(&first.tool_calls[0].arguments).expect("json");
    assert_eq!(args, json!({"city": "Paris"}));
    assert!(first.usage.prompt_tokens > 0 && first.usage.completion_tokens > 0);

    let mut history = vec![user, first.clone().into_message()];
    for call in &first.tool_calls {
        history.push(Message::Tool {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content: "fine".into(),
            is_error: false,
        });
    }
    let second = model.complete(request(history)).await.expect("second");
    assert_eq!(second.content.as_deref(), Some("Sunny and snowy."));

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/v1/messages");
    assert_eq!(requests[0].header("x-api-key"), Some(KEY));
    assert_eq!(requests[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(requests[0].body["system"], "You are the weather bot.");
    assert_eq!(requests[0].streamed(), stream);
    let results = &requests[1].body["messages"][2];
    assert_eq!(results["role"], "user");
    assert_eq!(results["content"][0]["type"], "tool_result");
    assert_eq!(
        results["content"][1]["tool_use_id"],
        first.tool_calls[1].id.as_str()
    );
}

#[tokio::test]
async fn tool_calling_round_trip_json() {
    round_trip(false).await;
}

#[tokio::test]
async fn tool_calling_round_trip_streamed() {
    round_trip(true).await;
}

#[tokio::test]
async fn faults_are_retried_and_client_errors_are_typed() {
    for stream in [false, true] {
        for fault in [
            Fault::RateLimited {
                retry_after_secs: 0,
            },
            Fault::ServerError,
            Fault::ConnectionReset,
            Fault::MalformedBody,
            Fault::StreamCut,
        ] {
            let script = MockScript::new().agent(
                "weather bot",
                vec![MockTurn::fault(fault), MockTurn::text("ok")],
            );
            let server = MockLlmServer::start(script).await.expect("server");
            let reply = client(&server, stream)
                .complete(request(vec![Message::user("hi")]))
                .await
                .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
            assert_eq!(reply.content.as_deref(), Some("ok"));
            assert_eq!(server.requests().len(), 2);
        }
    }
    let script = MockScript::new().agent(
        "weather bot",
        vec![MockTurn::fault(Fault::Status { status: 401 })],
    );
    let server = MockLlmServer::start(script).await.expect("server");
    let err = client(&server, false)
        .complete(request(vec![Message::user("hi")]))
        .await
        .expect_err("401");
    assert!(
        matches!(&err, LlmError::Http { provider, status: 401, .. } if provider == "anthropic"),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains(KEY));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn dropping_the_future_mid_stream_aborts_the_request() {
    let script = MockScript::new()
        .agent(
            "weather bot",
            vec![MockTurn::text("a slow streamed answer")],
        )
        .chunk_delay(Duration::from_millis(300));
    let server = MockLlmServer::start(script).await.expect("server");
    let call = tokio::spawn(client(&server, true).complete(request(vec![Message::user("hi")])));
    let mut waited = 0;
    while server.in_flight() == 0 {
        waited += 1;
        assert!(waited < 500, "the request never reached the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call.abort();
    let mut waited = 0;
    while server.in_flight() != 0 {
        waited += 1;
        assert!(waited < 500, "the server still streams to a dropped client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_hang_ends_in_a_timeout_and_invalid_tool_json_passes_through() {
    let script = MockScript::new().agent("weather bot", vec![MockTurn::fault(Fault::Hang)]);
    let server = MockLlmServer::start(script).await.expect("server");
    let model = AnthropicMessages::builder("claude-mock")
        .base_url(server.anthropic_base_url())
        .settings(HttpSettings {
            request_timeout: Duration::from_millis(100),
            retry: RetryPolicy {
                max_retries: 1,
                base: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
            ..HttpSettings::default()
        })
        .build()
        .expect("client");
    let err = model
        .complete(request(vec![Message::user("hi")]))
        .await
        .expect_err("hangs");
    assert!(
        matches!(err, LlmError::Timeout { after_ms: 100, .. }),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 2);

    let script = MockScript::new().agent(
        "weather bot",
        vec![MockTurn::tool_calls(vec![MockToolCall::raw(
            "weather",
            "{\"city\": Par",
        )])],
    );
    let server = MockLlmServer::start(script).await.expect("server");
    let reply = client(&server, true)
        .complete(request(vec![Message::user("hi")]))
        .await
        .expect("reply");
    assert_eq!(reply.tool_calls[0].arguments, "{\"city\": Par");
}

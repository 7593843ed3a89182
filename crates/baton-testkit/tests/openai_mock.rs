//! `OpenAiChat` against the real `MockLlmServer` over loopback HTTP.

use std::sync::Arc;
use std::time::Duration;

use baton_core::{AgentName, Message, ToolSpec};
use baton_llm::{ApiKey, ChatModel, ChatRequest, HttpSettings, LlmError, OpenAiChat, RetryPolicy};
use baton_testkit::mock_llm::{Fault, MockLlmServer, MockScript, MockToolCall, MockTurn};
use serde_json::json;

const KEY: &str = "sk-test-very-secret-key";

fn fast_settings() -> HttpSettings {
    HttpSettings {
        max_concurrency: 8,
        request_timeout: Duration::from_secs(5),
        stream_idle_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(20),
        },
    }
}

fn client(server: &MockLlmServer, stream: bool, settings: HttpSettings) -> OpenAiChat {
    OpenAiChat::builder("gpt-mock")
        .base_url(server.openai_base_url())
        .api_key(ApiKey::new(KEY))
        .stream(stream)
        .settings(settings)
        .build()
        .expect("client builds")
}

fn request(system: &str, history: Vec<Message>) -> ChatRequest {
    let mut messages = vec![Message::system(system)];
    messages.extend(history);
    ChatRequest {
        agent: AgentName::new("agent"),
        messages: Arc::new(messages),
        tools: Arc::new(vec![ToolSpec {
            name: "weather".into(),
            description: "Weather for a city".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        }]),
    }
}

async fn round_trip(stream: bool) {
    let script = MockScript::new().agent(
        "weather bot",
        vec![
            MockTurn::tool_calls(vec![
                MockToolCall::new("weather", json!({"city": "Paris"})),
                MockToolCall::new("weather", json!({"city": "Oslo"})),
            ]),
            MockTurn::text("Sunny in Paris, snow in Oslo."),
        ],
    );
    let server = MockLlmServer::start(script).await.expect("server");
    let model = client(&server, stream, fast_settings());

    let user = Message::user("weather in Paris and Oslo?");
    let first = model
        .complete(request("You are the weather bot.", vec![user.clone()]))
        .await
        .expect("first reply");
    assert_eq!(first.content.as_deref().unwrap_or(""), "");
    assert_eq!(first.tool_calls.len(), 2);
    assert_eq!(first.tool_calls[0].name, "weather");
    let args: serde_json::Value =
        serde_json::from_str(&first.tool_calls[1].arguments).expect("valid JSON arguments");
    assert_eq!(args, json!({"city": "Oslo"}));
    assert!(first.usage.completion_tokens > 0);

    let mut history = vec![user, first.clone().into_message()];
    for call in &first.tool_calls {
        history.push(Message::Tool {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content: "sunny".into(),
            is_error: false,
        });
    }
    let second = model
        .complete(request("You are the weather bot.", history))
        .await
        .expect("second reply");
    assert_eq!(
        second.content.as_deref(),
        Some("Sunny in Paris, snow in Oslo.")
    );
    assert!(second.tool_calls.is_empty());
    assert!(second.usage.prompt_tokens > 0);

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(requests[0].streamed(), stream);
    assert_eq!(requests[0].body["tools"][0]["function"]["name"], "weather");
    let sent = &requests[1].body["messages"];
    assert_eq!(sent[2]["role"], "assistant");
    assert_eq!(
        sent[2]["tool_calls"][0]["id"],
        first.tool_calls[0].id.as_str()
    );
    assert_eq!(sent[3]["role"], "tool");
    assert_eq!(sent[3]["tool_call_id"], first.tool_calls[0].id.as_str());
    assert_eq!(sent[4]["tool_call_id"], first.tool_calls[1].id.as_str());
}

#[tokio::test]
async fn tool_calling_round_trip_json() {
    round_trip(false).await;
}

#[tokio::test]
async fn tool_calling_round_trip_streamed() {
    round_trip(true).await;
}

/// One fault then a reply: the client retries and recovers.
async fn recovers_from(fault: Fault, stream: bool) {
    let script =
        MockScript::new().agent("bot", vec![MockTurn::fault(fault), MockTurn::text("fine")]);
    let server = MockLlmServer::start(script).await.expect("server");
    let model = client(&server, stream, fast_settings());
    let reply = model
        .complete(request("bot", vec![Message::user("hi")]))
        .await
        .unwrap_or_else(|e| panic!("{fault:?} (stream {stream}) was not recovered: {e}"));
    assert_eq!(reply.content.as_deref(), Some("fine"), "{fault:?}");
    assert_eq!(
        server.requests().len(),
        2,
        "{fault:?}: one failed attempt, one retry"
    );
}

#[tokio::test]
async fn retryable_faults_are_retried_and_recovered() {
    for stream in [false, true] {
        recovers_from(
            Fault::RateLimited {
                retry_after_secs: 0,
            },
            stream,
        )
        .await;
        recovers_from(Fault::ServerError, stream).await;
        recovers_from(Fault::Status { status: 408 }, stream).await;
        recovers_from(Fault::ConnectionReset, stream).await;
        recovers_from(Fault::MalformedBody, stream).await;
        recovers_from(Fault::StreamCut, stream).await;
    }
}

#[tokio::test]
async fn a_persistent_fault_ends_in_a_typed_error_after_the_retry_budget() {
    let script = MockScript::new().agent("bot", vec![MockTurn::fault(Fault::ServerError)]);
    let server = MockLlmServer::start(script).await.expect("server");
    let model = client(&server, false, fast_settings());
    let err = model
        .complete(request("bot", vec![Message::user("hi")]))
        .await
        .expect_err("always 500");
    assert!(
        matches!(&err, LlmError::Http { provider, status: 500, message } if provider == "openai" && message.contains("injected server error")),
        "{err:?}"
    );
    assert_eq!(
        server.requests().len(),
        4,
        "the first attempt and 3 retries"
    );
}

#[tokio::test]
async fn client_errors_are_not_retried_and_name_provider_status_and_message() {
    for status in [400u16, 401, 403, 404] {
        let script =
            MockScript::new().agent("bot", vec![MockTurn::fault(Fault::Status { status })]);
        let server = MockLlmServer::start(script).await.expect("server");
        let model = client(&server, false, fast_settings());
        let err = model
            .complete(request("bot", vec![Message::user("hi")]))
            .await
            .expect_err("client error");
        let text = err.to_string();
        assert!(
            text.contains("openai")
                && text.contains(&status.to_string())
                && text.contains("injected status"),
            "{text}"
        );
        assert!(!text.contains(KEY) && !format!("{err:?}").contains(KEY));
        assert_eq!(server.requests().len(), 1, "{status} is not retried");
    }
}

#[tokio::test]
async fn a_hang_times_out_with_a_clear_error_never_hangs() {
    let script = MockScript::new().agent("bot", vec![MockTurn::fault(Fault::Hang)]);
    let server = MockLlmServer::start(script).await.expect("server");
    let mut settings = fast_settings();
    settings.request_timeout = Duration::from_millis(100);
    settings.retry.max_retries = 1;
    for stream in [false, true] {
        let model = client(&server, stream, settings);
        let err = model
            .complete(request("bot", vec![Message::user("hi")]))
            .await
            .expect_err("hangs");
        assert!(
            matches!(err, LlmError::Timeout { after_ms: 100, .. }),
            "{err:?}"
        );
    }
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn invalid_json_in_tool_arguments_is_passed_through_verbatim() {
    for stream in [false, true] {
        let script = MockScript::new().agent(
            "bot",
            vec![MockTurn::tool_calls(vec![MockToolCall::raw(
                "weather",
                "{\"city\": Par",
            )])],
        );
        let server = MockLlmServer::start(script).await.expect("server");
        let reply = client(&server, stream, fast_settings())
            .complete(request("bot", vec![Message::user("hi")]))
            .await
            .expect("a reply; the runtime reports the bad arguments to the model");
        assert_eq!(reply.tool_calls[0].arguments, "{\"city\": Par");
    }
}

#[tokio::test]
async fn dropping_the_future_mid_stream_aborts_the_request() {
    let script = MockScript::new()
        .agent(
            "bot",
            vec![MockTurn::text("a long answer that streams slowly")],
        )
        .chunk_delay(Duration::from_millis(300));
    let server = MockLlmServer::start(script).await.expect("server");
    let model = client(&server, true, fast_settings());
    let call = tokio::spawn(model.complete(request("bot", vec![Message::user("hi")])));
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
async fn the_concurrency_limit_holds() {
    let script = MockScript::new()
        .agent("bot", vec![MockTurn::text("ok")])
        .latency(Duration::from_millis(20), Duration::ZERO);
    let server = MockLlmServer::start(script).await.expect("server");
    let mut settings = fast_settings();
    settings.max_concurrency = 3;
    let model = client(&server, false, settings);
    let calls: Vec<_> = (0..30)
        .map(|_| tokio::spawn(model.complete(request("bot", vec![Message::user("hi")]))))
        .collect();
    for call in calls {
        assert_eq!(
            call.await
                .expect("joined")
                .expect("reply")
                .content
                .as_deref(),
            Some("ok")
        );
    }
    assert_eq!(server.requests().len(), 30);
    assert!(
        server.max_in_flight() <= 3,
        "saw {} at once",
        server.max_in_flight()
    );
}

#[tokio::test]
async fn the_key_never_shows_in_debug_or_errors() {
    let script = MockScript::new().agent("bot", vec![MockTurn::fault(Fault::Hang)]);
    let server = MockLlmServer::start(script).await.expect("server");
    let mut settings = fast_settings();
    settings.request_timeout = Duration::from_millis(50);
    settings.retry.max_retries = 0;
    let model = client(&server, false, settings);
    assert!(!format!("{model:?}").contains(KEY));
    let err = model
        .complete(request("bot", vec![Message::user("hi")]))
        .await
        .expect_err("times out");
    assert!(!format!("{err:?} {err}").contains(KEY));
}

#[tokio::test]
async fn a_model_string_with_a_base_url_reaches_the_server() {
    let script = MockScript::new().agent("bot", vec![MockTurn::text("hello")]);
    let server = MockLlmServer::start(script).await.expect("server");
    let model =
        baton_llm::model_from_str(&format!("openai:mock-model@{}", server.openai_base_url()))
            .expect("builds");
    assert_eq!(model.name(), "openai:mock-model");
    let reply = model
        .complete(request("bot", vec![Message::user("hi")]))
        .await
        .expect("reply");
    assert_eq!(reply.content.as_deref(), Some("hello"));
    assert_eq!(server.requests()[0].body["model"], "mock-model");
}

#[tokio::test]
async fn a_stalled_stream_hits_the_idle_timeout() {
    let script = MockScript::new()
        .agent("bot", vec![MockTurn::text("slow chunks")])
        .chunk_delay(Duration::from_secs(30));
    let server = MockLlmServer::start(script).await.expect("server");
    let mut settings = fast_settings();
    settings.stream_idle_timeout = Duration::from_millis(100);
    settings.retry.max_retries = 1;
    let err = client(&server, true, settings)
        .complete(request("bot", vec![Message::user("hi")]))
        .await
        .expect_err("stalls");
    assert!(
        matches!(err, LlmError::Timeout { after_ms: 100, .. }),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 2, "retried once");
}

//! The API key never reaches logs, `Debug` or errors, even on retries and
//! failures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{AgentName, Message};
use baton_llm::{
    AnthropicMessages, ApiKey, ChatModel, ChatRequest, HttpSettings, OpenAiChat, RetryPolicy,
};
use baton_testkit::mock_llm::{Fault, MockLlmServer, MockScript, MockTurn};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const KEY: &str = "sk-log-test-secret-0123456789";

/// Records every event's fields as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Writer<'a>(&'a mut String);

impl Visit for Writer<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut text = String::new();
        event.record(&mut Writer(&mut text));
        if let Ok(mut all) = self.0.lock() {
            all.push_str(&text);
            all.push('\n');
        }
    }
}

fn settings() -> HttpSettings {
    HttpSettings {
        retry: RetryPolicy {
            max_retries: 1,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
        ..HttpSettings::default()
    }
}

#[tokio::test]
async fn the_key_is_absent_from_logs_debug_and_errors() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let script = MockScript::new().agent(
        "bot",
        vec![
            MockTurn::fault(Fault::ServerError),
            MockTurn::text("ok"),
            MockTurn::fault(Fault::Status { status: 401 }),
        ],
    );
    let server = MockLlmServer::start(script).await.expect("server");
    let request = ChatRequest {
        agent: AgentName::new("bot"),
        messages: Arc::new(vec![Message::system("bot"), Message::user("hi")]),
        tools: Arc::new(Vec::new()),
    };
    let openai = OpenAiChat::builder("m")
        .base_url(server.openai_base_url())
        .api_key(ApiKey::new(KEY))
        .settings(settings())
        .build()
        .expect("client");
    let anthropic = AnthropicMessages::builder("m")
        .base_url(server.anthropic_base_url())
        .api_key(ApiKey::new(KEY))
        .settings(settings())
        .build()
        .expect("client");

    let ok = openai.complete(request.clone()).await.expect("recovers");
    let err = anthropic.complete(request).await.expect_err("401");

    let logs = capture.0.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(logs.contains("retrying"), "the retry was logged: {logs}");
    assert!(logs.contains("model replied"), "{logs}");
    for (what, text) in [
        ("logs", logs),
        ("openai Debug", format!("{openai:?}")),
        ("anthropic Debug", format!("{anthropic:?}")),
        ("reply", format!("{ok:?}")),
        ("error", format!("{err} {err:?}")),
    ] {
        assert!(
            !text.contains(KEY),
            "the key leaked into the {what}: {text}"
        );
    }
    // It was sent, though: the server saw it in the headers.
    let requests = server.requests();
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(requests[2].header("x-api-key"), Some(KEY));
}

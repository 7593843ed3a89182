//! HTTP provider benchmarks against the real mock server on loopback.
//!
//! * `openai_overhead`: one non-streamed request, mock at 0 ms, so the
//!   figure is the client + loopback + mock cost per request.
//! * `openai_10k_1k_in_flight`: 10,000 requests, at most 1,000 in flight,
//!   mock at 100 ms; ideal 10 waves × 100 ms = 1.0 s.
//!
//! `cargo bench -p baton-testkit --bench http_providers`

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{AgentName, Message};
use baton_llm::{ChatModel, ChatRequest, HttpSettings, OpenAiChat, RetryPolicy};
use baton_testkit::mock_llm::{MockLlmServer, MockScript, MockTurn};
use criterion::{criterion_group, criterion_main, Criterion};

fn request() -> ChatRequest {
    ChatRequest {
        agent: AgentName::new("bench"),
        messages: Arc::new(vec![Message::system("bench bot"), Message::user("hi")]),
        tools: Arc::new(Vec::new()),
    }
}

fn client(server: &MockLlmServer, max_concurrency: usize) -> OpenAiChat {
    OpenAiChat::builder("bench")
        .base_url(server.openai_base_url())
        .settings(HttpSettings {
            max_concurrency,
            retry: RetryPolicy {
                max_retries: 0,
                ..RetryPolicy::default()
            },
            ..HttpSettings::default()
        })
        .build()
        .expect("client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let script = MockScript::new().agent("bench bot", vec![MockTurn::text("ok")]);
    let server = rt.block_on(MockLlmServer::start(script)).expect("server");
    let model = client(&server, 16);
    c.bench_function("openai_overhead", |b| {
        b.to_async(&rt).iter(|| async {
            let reply = model.complete(request()).await.expect("reply");
            assert_eq!(reply.content.as_deref(), Some("ok"));
        })
    });
}

fn many_in_flight(c: &mut Criterion) {
    let rt = runtime();
    let script = MockScript::new()
        .agent("bench bot", vec![MockTurn::text("ok")])
        .latency(Duration::from_millis(100), Duration::ZERO);
    let server = rt.block_on(MockLlmServer::start(script)).expect("server");
    let model = client(&server, 1_000);
    let mut group = c.benchmark_group("openai_10k_1k_in_flight");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("10000_requests", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let model = model.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let calls: Vec<_> = (0..10_000)
                        .map(|_| tokio::spawn(model.complete(request())))
                        .collect();
                    for call in calls {
                        call.await.expect("joined").expect("reply");
                    }
                    total += start.elapsed();
                }
                total
            }
        })
    });
    group.finish();
    eprintln!(
        "max in flight seen by the server: {}",
        server.max_in_flight()
    );
}

criterion_group!(benches, overhead, many_in_flight);
criterion_main!(benches);

//! Core runtime benchmarks (issue 2), on a real clock:
//!
//! * `input_to_turn_started/{1000,10000}`: from `send_user` to the
//!   `TurnStarted` of the turn that reads it, while that many background
//!   tasks are in flight and their results keep arriving;
//! * `delegated_round_trip`: `create_task` → worker → `TaskFinished` folded
//!   into the parent's history, zero-latency scripted model, per task;
//! * `check_task` and `check_all_tasks` over 10,000 tasks.
//!
//! ```text
//! cargo bench --bench orchestrator
//! ```
//!
//! The input-latency benchmark also prints p50 and p99 of its samples.

use std::time::{Duration, Instant};

use baton::core::{TaskKind, TaskRegistry};
use baton::runtime::task_tools;
use baton::{
    Agent, ChatRequest, Event, Message, Orchestrator, ScriptedModel, ScriptedTurn, TaskId, Tool,
    ToolError, ToolOutput,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct SleepArgs {
    ms: u64,
}

/// A background job that sleeps for its argument.
struct Sleep;

impl Tool for Sleep {
    type Args = SleepArgs;
    fn name(&self) -> &str {
        "sleep"
    }
    fn description(&self) -> &str {
        "Sleeps."
    }
    async fn call(&self, args: SleepArgs) -> Result<ToolOutput, ToolError> {
        tokio::time::sleep(Duration::from_millis(args.ms)).await;
        Ok("slept".into())
    }
}

/// The conversation's model: "spawn N" starts N background sleeps spread
/// over 1..=20 s; anything else gets a short answer.
fn busy_model() -> ScriptedModel {
    ScriptedModel::from_fn(|req: &ChatRequest| match req.messages.last() {
        Some(Message::User { content }) if content.starts_with("spawn ") => {
            let n: u64 = content[6..].parse().unwrap_or(0);
            ScriptedTurn::calls(
                "sleep",
                (0..n).map(|i| json!({"ms": 1000 + (i * 7919) % 19_000})),
            )
        }
        _ => ScriptedTurn::text("ok"),
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn input_to_turn_started(c: &mut Criterion) {
    let mut group = c.benchmark_group("input_to_turn_started");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    for tasks in [1_000u64, 10_000] {
        let system = actix_rt::System::new();
        let convo = system.block_on(async {
            let agent = Agent::builder("assistant")
                .model(busy_model())
                .background_tool(Sleep)
                .build();
            let convo = Orchestrator::start(agent);
            convo
                .send_user(format!("spawn {tasks}"))
                .await
                .expect("send");
            // Let the tasks start; their results arrive over the next 20 s.
            tokio::time::sleep(Duration::from_millis(500)).await;
            convo
        });
        let mut samples: Vec<Duration> = Vec::new();
        let mut n = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(tasks), &tasks, |b, _| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        let text = format!("ping {n}");
                        let mut events = convo.subscribe();
                        let start = Instant::now();
                        convo.send_user(text.clone()).await.expect("send");
                        let mut seen_input = false;
                        loop {
                            match events.recv().await {
                                Ok(e) => match e.event {
                                    Event::UserMessage { text: t } if t == text => {
                                        seen_input = true
                                    }
                                    Event::TurnStarted { task: None, .. } if seen_input => break,
                                    _ => {}
                                },
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                Err(e) => panic!("event stream ended: {e}"),
                            }
                        }
                        let took = start.elapsed();
                        samples.push(took);
                        total += took;
                    }
                    total
                })
            })
        });
        samples.sort();
        if !samples.is_empty() {
            println!(
                "input_to_turn_started/{tasks}: {} samples, p50 {:?}, p99 {:?}, running tasks at end {}",
                samples.len(),
                percentile(&samples, 0.5),
                percentile(&samples, 0.99),
                convo.registry().running_count(),
            );
        }
        system.block_on(async { convo.shutdown().await.expect("shutdown") });
    }
    group.finish();
}

fn delegated_round_trip(c: &mut Criterion) {
    const N: usize = 1_000;
    let mut group = c.benchmark_group("delegated_round_trip");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(criterion::Throughput::Elements(N as u64));
    let model = ScriptedModel::from_fn(|req: &ChatRequest| {
        match (req.agent.as_str(), req.messages.last()) {
            ("lead", Some(Message::User { .. })) => ScriptedTurn::calls(
                "create_task",
                (0..N).map(|i| json!({"agent": "w", "prompt": i.to_string()})),
            ),
            _ => ScriptedTurn::text("done"),
        }
    });
    let system = actix_rt::System::new();
    group.bench_function(BenchmarkId::new("tasks_per_iteration", N), |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let worker = Agent::builder("w").model(model.clone()).build();
                    let lead = Agent::builder("lead")
                        .model(model.clone())
                        .delegates_to([worker])
                        .build();
                    let convo = Orchestrator::builder(lead).worker_threads(0).spawn();
                    let start = Instant::now();
                    convo.send_user("go").await.expect("send");
                    convo.settled().await.expect("settled");
                    total += start.elapsed();
                    convo.shutdown().await.expect("shutdown");
                }
                total
            })
        })
    });
    group.finish();
}

fn checks(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let registry = TaskRegistry::new();
    for i in 0..10_000u64 {
        registry.create(
            None,
            "assistant".into(),
            TaskKind::Tool {
                tool: format!("t{}", i % 7),
            },
        );
    }
    let mut group = c.benchmark_group("checks_over_10000_tasks");
    group.bench_function("check_task", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = i % 10_000 + 1;
            task_tools::check_task(&registry, TaskId::new(i)).expect("task exists")
        })
    });
    group.bench_function("registry_get", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = i % 10_000 + 1;
            registry.get(TaskId::new(i)).expect("task exists")
        })
    });
    group.sample_size(20);
    group.bench_function("check_all_tasks", |b| {
        b.iter(|| task_tools::check_all_tasks(&registry, None))
    });
    group.finish();
}

criterion_group!(benches, input_to_turn_started, delegated_round_trip, checks);
criterion_main!(benches);

//! A NATS worker serving one scripted agent: it answers each task with
//! `<agent>: <prompt>` after a fixed latency. For trying out remote workers
//! without an API key, and for the tests that kill a worker mid-run.
//!
//! ```text
//! baton-nats-worker --nats nats://127.0.0.1:4222 --agent echo --latency-ms 200
//! ```
//!
//! Built with the `otel` feature, `--otlp http://localhost:4318` sends its
//! spans to an OpenTelemetry collector (service `baton-nats-worker`); they
//! join the traces of the conversations that delegated the tasks.

use std::time::Duration;

use baton_llm::{ScriptedModel, ScriptedTurn};
use baton_nats::{NatsConfig, NatsWorker};
use baton_runtime::Agent;
use clap::Parser;

/// Serve a scripted agent's tasks from NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "baton-nats-worker")]
struct Args {
    /// The NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The agent kind to serve.
    #[arg(long, default_value = "echo")]
    agent: String,
    /// How long each answer takes.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// JetStream ack wait (redelivery after this long without an ack).
    #[arg(long, default_value_t = 30_000)]
    ack_wait_ms: u64,
    /// Deliveries a task gets before it ends as Failed.
    #[arg(long, default_value_t = 5)]
    max_deliver: i64,
    /// How often the worker refreshes its entry in the worker bucket.
    #[arg(long, default_value_t = 5_000)]
    heartbeat_ms: u64,
    /// Tasks run at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The id to register under (default: `<host>-<pid>-<n>`).
    #[arg(long)]
    id: Option<String>,
    /// Send spans to this OpenTelemetry collector's OTLP/HTTP base URL
    /// (e.g. `http://localhost:4318`), in batches (`OTEL_BSP_*` variables).
    #[cfg(feature = "otel")]
    #[arg(long)]
    otlp: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    #[cfg(feature = "otel")]
    let _otlp = args
        .otlp
        .as_deref()
        .map(|url| {
            use baton_runtime::telemetry::{init_otlp, OtlpConfig};
            init_otlp(&OtlpConfig::new(url).service_name("baton-nats-worker"))
        })
        .transpose()?;
    let latency = Duration::from_millis(args.latency_ms);
    let name = args.agent.clone();
    let model = ScriptedModel::from_fn(move |req| {
        let prompt = req
            .messages
            .iter()
            .find_map(|m| match m {
                baton_core::Message::User { content } => Some(content.clone()),
                _ => None,
            })
            .unwrap_or_default();
        ScriptedTurn::text(format!("{name}: {prompt}")).after(latency)
    });
    let agent = Agent::builder(args.agent.as_str()).model(model).build();
    let mut config = NatsConfig::new(args.nats);
    config.ack_wait = Duration::from_millis(args.ack_wait_ms);
    config.max_deliver = args.max_deliver;
    config.heartbeat = Duration::from_millis(args.heartbeat_ms.max(1));
    let mut worker = NatsWorker::builder(config)
        .agent(agent)
        .concurrency(args.concurrency);
    if let Some(id) = args.id {
        worker = worker.id(id);
    }
    let worker = worker.build()?;
    actix_rt::System::new().block_on(worker.run())?;
    Ok(())
}

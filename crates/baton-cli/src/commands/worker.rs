//! `baton worker --nats URL --agents FILE`: serve agents' delegated tasks
//! from NATS JetStream, for conversations started with `baton run --nats`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use baton_nats::{NatsConfig, NatsWorker};
use baton_scenario::LoadedScenario;

use super::scenario_files;

/// Arguments of `baton worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The NATS server (with JetStream).
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// The agent file (a scenario file's `[agents]` and `[tools]`).
    #[arg(long, value_name = "FILE")]
    pub agents: PathBuf,
    /// An agent to serve (repeatable; default: every agent that another
    /// agent delegates to).
    #[arg(long = "agent", value_name = "NAME")]
    pub serve: Vec<String>,
    /// Use this model for every agent (`openai:gpt-4o-mini`, ...).
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The id to register under (default: `<host>-<pid>-<n>`).
    #[arg(long)]
    pub id: Option<String>,
    /// JetStream ack wait in milliseconds: a task is redelivered after this
    /// long without an ack (running tasks send progress acks).
    #[arg(long, default_value_t = 30_000)]
    pub ack_wait_ms: u64,
    /// Deliveries a task gets before it ends as Failed.
    #[arg(long, default_value_t = 5)]
    pub max_deliver: i64,
    /// How often the worker refreshes its entry (load, completed tasks) in
    /// the worker bucket, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub heartbeat_ms: u64,
}

/// The agents a worker serves: those named, or every delegated agent.
pub fn served_agents(scenario: &LoadedScenario, named: &[String]) -> anyhow::Result<Vec<String>> {
    if !named.is_empty() {
        for name in named {
            scenario_files::require_agent(scenario, name)?;
        }
        return Ok(named.to_vec());
    }
    let delegated = scenario.spec.delegated_agents();
    if delegated.is_empty() {
        anyhow::bail!(
            "no agent in {} delegates to another, so there is nothing to serve; name one with --agent",
            scenario.origin
        );
    }
    Ok(delegated.into_iter().map(str::to_owned).collect())
}

/// Serves until interrupted.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scenario = scenario_files::load(&args.agents)?;
    let names = served_agents(&scenario, &args.serve)?;
    let models = scenario_files::models(args.model.as_deref())?;
    let agents = names
        .iter()
        .map(|name| baton_scenario::agent(&scenario, name, &models))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = NatsConfig::new(args.nats.clone());
    config.ack_wait = Duration::from_millis(args.ack_wait_ms);
    config.max_deliver = args.max_deliver;
    config.heartbeat = Duration::from_millis(args.heartbeat_ms.max(1));
    let mut builder = NatsWorker::builder(config)
        .agents(agents)
        .concurrency(args.concurrency);
    if let Some(id) = &args.id {
        builder = builder.id(id.clone());
    }
    let worker = builder.build()?;
    println!(
        "worker {} serving {} from {} (Ctrl-C to stop)",
        worker.id(),
        names.join(", "),
        args.nats
    );
    actix_rt::System::new().block_on(async move {
        worker
            .run_until(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })?;
    Ok(ExitCode::SUCCESS)
}

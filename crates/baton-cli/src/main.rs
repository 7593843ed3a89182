//! `baton`: the command line.
//!
//! Each subcommand lives in its own module under [`commands`]; add a
//! variant to [`Command`] and a module to add one.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: a wide tree allocates on one
/// thread and frees on another all the time, which glibc's arenas handle
/// poorly (the fan-out benchmark runs about 1.3–1.5× faster on it; see
/// `docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// baton: an actor-based multi-agent orchestrator for LLM agents.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about)]
struct Cli {
    /// Send the conversation's and the agents' spans to this OpenTelemetry
    /// collector's OTLP/HTTP base URL (e.g. `http://localhost:4318`); a
    /// worker's spans join the trace of the conversation that delegated
    /// the task. Built with the `otel` feature only.
    #[cfg(feature = "otel")]
    #[arg(long, global = true, value_name = "URL")]
    otlp: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Play a scenario file: a live task tree, then the timeline and answer.
    Run(commands::run::Args),
    /// Play scenario files and check their expectations, like a test runner.
    Test(commands::test_scenarios::Args),
    /// Check scenario files without running them (or print their JSON Schema).
    Validate(commands::validate::Args),
    /// Talk to an agent from an agent file while its tasks run.
    Chat(commands::chat::Args),
    /// Run a mock LLM server speaking the OpenAI and Anthropic APIs.
    MockLlm(commands::mock_llm::Args),
    /// Print a stored conversation and its task tree.
    Log(commands::log::Args),
    /// Serve the HTTP API and the live web page for an agent file.
    Serve(commands::serve::Args),
    /// Serve agents' delegated tasks from NATS JetStream.
    Worker(commands::worker::Args),
    /// List the remote workers registered on a NATS server, with their load.
    Workers(commands::workers::Args),
}

impl Command {
    /// The subcommand's name, as typed.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Test(_) => "test",
            Command::Validate(_) => "validate",
            Command::Chat(_) => "chat",
            Command::MockLlm(_) => "mock-llm",
            Command::Log(_) => "log",
            Command::Serve(_) => "serve",
            Command::Worker(_) => "worker",
            Command::Workers(_) => "workers",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Exports until dropped, at the end of `main` (which sends what is left).
    #[cfg(feature = "otel")]
    let _otlp = match cli
        .otlp
        .as_deref()
        .map(|url| {
            use baton_runtime::telemetry::{init_otlp, OtlpConfig};
            let service = format!("baton {}", cli.command.name());
            init_otlp(&OtlpConfig::new(url).service_name(service))
        })
        .transpose()
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        // These run their own actor systems (on a paused clock or the real one).
        Command::Run(args) => commands::run::run_scenario(args),
        Command::Test(args) => commands::test_scenarios::run_all(args),
        Command::Validate(args) => commands::validate::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Worker(args) => commands::worker::run(args),
        Command::Serve(args) => commands::serve::run(args),
        // These run on a tokio runtime.
        Command::MockLlm(args) => on_tokio(commands::mock_llm::run(args)),
        Command::Log(args) => on_tokio(commands::log::run(args)),
        Command::Workers(args) => on_tokio(commands::workers::run(args)),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn on_tokio(
    job: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(job)?;
    Ok(ExitCode::SUCCESS)
}

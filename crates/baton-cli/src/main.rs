//! `baton`: the command line.
//!
//! Each subcommand lives in its own module under [`commands`]; add a
//! variant to [`Command`] and a module to add one.

mod commands;

use clap::{Parser, Subcommand};

/// baton: an actor-based multi-agent orchestrator for LLM agents.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a mock LLM server speaking the OpenAI and Anthropic APIs.
    MockLlm(commands::mock_llm::Args),
    /// Print a stored conversation and its task tree.
    Log(commands::log::Args),
    /// List the remote workers registered on a NATS server, with their load.
    Workers(commands::workers::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::MockLlm(args) => commands::mock_llm::run(args).await,
            Command::Log(args) => commands::log::run(args).await,
            Command::Workers(args) => commands::workers::run(args).await,
        }
    })
}

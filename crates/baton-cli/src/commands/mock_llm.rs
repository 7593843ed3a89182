//! `baton mock-llm --script FILE --port N`: serve a [`MockScript`] over
//! HTTP until interrupted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use baton_testkit::mock_llm::{MockLlmServer, MockScript};

/// Arguments of `baton mock-llm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The script: a JSON file of agents (matched on the system prompt or a
    /// marker) and their turns; see docs/providers.md.
    #[arg(long, value_name = "FILE")]
    pub script: PathBuf,
    /// The port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// The address to bind.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
}

/// Runs the server until Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.script)
        .with_context(|| format!("cannot read the script {}", args.script.display()))?;
    let script = MockScript::from_json(&text)
        .with_context(|| format!("in the script {}", args.script.display()))?;
    let agents = script.agents.len();
    let server = MockLlmServer::start_on(SocketAddr::new(args.host, args.port), script).await?;
    println!("mock-llm listening on {}", server.url());
    println!("  OpenAI:    OPENAI_BASE_URL={}", server.openai_base_url());
    println!(
        "  Anthropic: ANTHROPIC_BASE_URL={}",
        server.anthropic_base_url()
    );
    println!("  {agents} scripted agent(s); Ctrl-C to stop");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    println!("mock-llm: served {} request(s)", server.requests().len());
    Ok(())
}

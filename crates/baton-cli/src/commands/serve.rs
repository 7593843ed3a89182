//! `baton serve --agents FILE`: the HTTP API and the live web page, with
//! conversations started from an agent file.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use baton_server::{ApiToken, ConversationFactory, ServerConfig};

use super::scenario_files;

/// The environment variable that may hold the bearer token (safer than
/// `--token`, which other users can see in the process list).
pub const TOKEN_ENV: &str = "BATON_SERVER_TOKEN";

/// Arguments of `baton serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent file (a scenario file's `[agents]` and `[tools]`); its root
    /// agent is the default for new conversations.
    #[arg(long, value_name = "FILE")]
    pub agents: PathBuf,
    /// The port (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The address to listen on. Anything but loopback exposes the API to
    /// the network (the token still guards it).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// The bearer token (default: $BATON_SERVER_TOKEN, else a generated one,
    /// printed at start).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Use this model for every agent (`openai:gpt-4o-mini`, ...).
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
}

/// Serves until interrupted.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scenario = scenario_files::load(&args.agents)?;
    let models = scenario_files::models(args.model.as_deref())?;
    // The root agent first (the default), then every other agent.
    let mut names = vec![scenario.root.clone()];
    names.extend(
        scenario
            .spec
            .agents
            .keys()
            .filter(|n| **n != scenario.root)
            .cloned(),
    );
    let agents = names
        .iter()
        .map(|name| baton_scenario::agent(&scenario, name, &models))
        .collect::<Result<Vec<_>, _>>()?;
    let token = match args.token.clone().or_else(|| std::env::var(TOKEN_ENV).ok()) {
        Some(token) => Some(ApiToken::new(token).context("the token")?),
        None => None,
    };
    let config = ServerConfig {
        bind: SocketAddr::new(args.bind, args.port),
        token,
        ..ServerConfig::default()
    };
    actix_rt::System::new().block_on(async move {
        let server = baton_server::serve(config, ConversationFactory::from_agents(agents)).await?;
        // Written once, and never a panic if stdout has gone away.
        let banner = format!(
            "baton serve: {} agent(s) from {} (Ctrl-C to stop)\n  page:  {}\n  API:   {} (Authorization: Bearer <token>; /openapi.json)\n  token: {}\n",
            names.len(),
            args.agents.display(),
            server.page_url(),
            server.base_url(),
            server.token().expose()
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
        drop(out);
        let _ = tokio::signal::ctrl_c().await;
        server.stop().await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

//! `baton workers` (being built).

/// Arguments of `baton workers`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`baton workers` is not built yet")
}

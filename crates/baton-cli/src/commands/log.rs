//! `baton log` (being built).

/// Arguments of `baton log`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`baton log` is not built yet")
}

//! `baton validate FILE…`: check scenario files without running them.

use std::path::PathBuf;
use std::process::ExitCode;

use super::scenario_files;

/// Arguments of `baton validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario files or directories of them.
    #[arg(required_unless_present = "schema")]
    pub files: Vec<PathBuf>,
    /// Print the JSON Schema of the scenario format instead.
    #[arg(long)]
    pub schema: bool,
}

/// Checks each file; prints `ok` or the error with its line and column.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.schema {
        print!("{}", baton_scenario::schema::scenario_schema());
        return Ok(ExitCode::SUCCESS);
    }
    let mut invalid = 0;
    for file in scenario_files::collect(&args.files)? {
        match scenario_files::load(&file) {
            Ok(scenario) => println!(
                "ok {}: {} agent(s), {} tool(s), {} script step(s), root `{}`",
                file.display(),
                scenario.spec.agents.len(),
                scenario.spec.tools.len(),
                scenario.spec.script.len(),
                scenario.root
            ),
            Err(e) => {
                invalid += 1;
                eprintln!("error: {e}");
            }
        }
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

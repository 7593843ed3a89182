//! `baton test DIR|FILE…`: play every scenario and check its expectations,
//! like a test runner.

use std::path::PathBuf;
use std::process::ExitCode;

use baton_scenario::{expect, run, RunOptions};

use super::scenario_files;

/// Arguments of `baton test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario files or directories of them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Runs each scenario on the paused clock; exits non-zero if any fails.
pub fn run_all(args: Args) -> anyhow::Result<ExitCode> {
    let files = scenario_files::collect(&args.paths)?;
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        let scenario = match scenario_files::load(&file) {
            Ok(s) => s,
            Err(e) => {
                failed += 1;
                println!("FAIL {}\n  {}", file.display(), indent(&e.to_string()));
                continue;
            }
        };
        let Some(expectations) = scenario.spec.expect.clone() else {
            failed += 1;
            println!(
                "FAIL {} ({}): it has no [expect] table, so there is nothing to check",
                scenario.name,
                file.display()
            );
            continue;
        };
        match run(&scenario, RunOptions::default()) {
            Ok(report) => {
                let failures = expect::check(&report, &expectations);
                if failures.is_empty() {
                    passed += 1;
                    println!(
                        "PASS {} ({} tasks, {} virtual)",
                        scenario.name,
                        report.tasks.len(),
                        baton_scenario::timeline::seconds(report.elapsed.as_millis() as u64)
                    );
                } else {
                    failed += 1;
                    println!("FAIL {} ({})", scenario.name, file.display());
                    for failure in failures {
                        print!("  {}", indent(&failure.to_string()));
                        println!();
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!(
                    "FAIL {} ({})\n  {}",
                    scenario.name,
                    file.display(),
                    indent(&e.to_string())
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn indent(text: &str) -> String {
    text.trim_end().replace('\n', "\n  ")
}

//! `baton run FILE`: play a scenario, with a live tree on a terminal, then
//! print the tree, the timeline and the answer (or, with `--json`, the
//! event stream as JSON lines).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use baton_scenario::{run, RunOptions, RunReport, Timeline};

use super::conversation_store;
use super::live_tree::LiveTree;
use super::scenario_files;

/// Arguments of `baton run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file.
    pub file: PathBuf,
    /// Use this model for every agent (`openai:gpt-4o-mini`, `ollama:llama3`, ...).
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// Print every event as a JSON line instead of the tree and timeline.
    #[arg(long)]
    pub json: bool,
    /// Run on the real clock (scripted scenarios otherwise run on a paused
    /// clock: they finish at once and report virtual time).
    #[arg(long)]
    pub real_time: bool,
    /// Keep the conversation in this store (a SQLite file, or a
    /// `postgres://` URL), and resume it from there if it is already in it.
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<String>,
    /// The conversation's id in the store and on NATS (default: the
    /// scenario's name).
    #[arg(long, value_name = "ID")]
    pub conversation: Option<String>,
    /// Send delegated tasks to `baton worker`s on this NATS server.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// With --nats: only this agent's tasks go to workers (repeatable;
    /// default: every agent that is delegated to).
    #[arg(long = "remote", value_name = "AGENT", requires = "nats")]
    pub remote: Vec<String>,
}

/// Plays the scenario.
pub fn run_scenario(args: Args) -> anyhow::Result<ExitCode> {
    let scenario = scenario_files::load(&args.file)?;
    let mut options = RunOptions {
        models: scenario_files::models(args.model.as_deref())?,
        real_time: args.real_time || args.model.is_some(),
        ..RunOptions::default()
    };
    let conversation = args
        .conversation
        .clone()
        .unwrap_or_else(|| scenario.name.clone());
    // The store must outlive the run: it joins its writer when dropped.
    let _store = match &args.store {
        Some(spec) => {
            let stored = conversation_store::open(spec, &conversation)?;
            options.journal = Some(stored.journal);
            options.resume = stored.resume;
            Some(stored.store)
        }
        None => None,
    };

    if let Some(url) = &args.nats {
        options.real_time = true; // remote workers run on the wall clock
        let config = baton_nats::NatsConfig::new(url.clone());
        let conversation = conversation.clone();
        let agents = (!args.remote.is_empty()).then(|| args.remote.iter().cloned().collect());
        options.remote = Some(Box::new(move || {
            Box::pin(async move {
                let executor = baton_nats::NatsExecutor::connect(config, conversation)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(baton_scenario::Remote {
                    executor: std::sync::Arc::new(executor),
                    agents,
                })
            })
        }));
    }

    let live = (!args.json && std::io::stdout().is_terminal())
        .then(|| Arc::new(Mutex::new(LiveTree::new(&scenario.root))));
    if args.json {
        options.on_event = Some(Box::new(|event| {
            if let Ok(line) = serde_json::to_string(event) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }));
    } else if let Some(live) = &live {
        let live = live.clone();
        options.on_event = Some(Box::new(move |event| {
            if let Ok(mut tree) = live.lock() {
                tree.on_event(event);
            }
        }));
    }

    let real_time = options.real_time;
    let report = run(&scenario, options)?;
    if let Some(live) = &live {
        if let Ok(tree) = live.lock() {
            tree.finish();
        }
    }
    if !args.json {
        print_summary(&report, real_time);
    }
    for problem in &report.problems {
        eprintln!("warning: {problem}");
    }
    Ok(if report.settled {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_summary(report: &RunReport, real_time: bool) {
    let clock = if real_time { "" } else { " (virtual time)" };
    println!(
        "\n{}: {} in {}{clock}",
        report.name,
        if report.settled { "settled" } else { "stopped" },
        baton_scenario::timeline::seconds(report.elapsed.as_millis() as u64)
    );
    println!("\ntree:\n{}", indent(&report.tree.render()));
    println!(
        "\ntimeline:\n{}",
        indent(&Timeline::from_events(&report.events).render(32))
    );
    match report.answer() {
        Some(answer) => println!("\nanswer:\n{}", indent(answer)),
        None => println!("\n(no answer)"),
    }
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

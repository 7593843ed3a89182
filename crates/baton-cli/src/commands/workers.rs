//! `baton workers --nats URL`: the remote workers registered on a NATS
//! server (`baton worker`, `baton-nats-worker`, or any `NatsWorker`), with
//! their load. Reads the worker bucket only; creates nothing on the server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use baton_nats::{NatsConfig, NatsWorker, WorkerInfo};

/// Arguments of `baton workers`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The KV bucket workers register in (as in the workers' `NatsConfig`).
    #[arg(long, default_value = "baton_workers")]
    bucket: String,
    /// Print a JSON array of workers instead of a table.
    #[arg(long)]
    json: bool,
}

/// How long to wait for the server before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = NatsConfig::new(args.nats.clone());
    config.worker_bucket = args.bucket;
    let workers = tokio::time::timeout(CONNECT_TIMEOUT, NatsWorker::list(&config))
        .await
        .with_context(|| {
            format!(
                "no answer from NATS at {} within {CONNECT_TIMEOUT:?}",
                args.nats
            )
        })?
        .with_context(|| format!("listing the workers registered at {}", args.nats))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&workers)?);
    } else if workers.is_empty() {
        println!("no workers registered at {}", args.nats);
    } else {
        print!("{}", table(&workers, now_ms()));
    }
    Ok(())
}

/// One line per worker: id, agents, load (running / capacity), completed
/// tasks, and how long ago it last checked in.
fn table(workers: &[WorkerInfo], now_ms: u64) -> String {
    let rows: Vec<[String; 5]> = workers
        .iter()
        .map(|w| {
            let seen = Duration::from_millis(now_ms.saturating_sub(w.updated_ms));
            [
                w.id.clone(),
                w.agents.join(","),
                format!("{}/{}", w.running, w.capacity),
                w.completed.to_string(),
                format!("{:.1}s ago", seen.as_secs_f64()),
            ]
        })
        .collect();
    let header = ["WORKER", "AGENTS", "LOAD", "COMPLETED", "SEEN"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    let running: usize = workers.iter().map(|w| w.running).sum();
    let capacity: usize = workers.iter().map(|w| w.capacity).sum();
    out.push_str(&format!(
        "{} worker(s), {running}/{capacity} task slots busy\n",
        workers.len()
    ));
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_workers_load_and_the_total() {
        let workers = [
            WorkerInfo {
                id: "gpu-1".into(),
                agents: vec!["researcher".into(), "writer".into()],
                running: 3,
                capacity: 8,
                completed: 120,
                updated_ms: 10_000,
            },
            WorkerInfo {
                id: "cpu-2".into(),
                agents: vec!["echo".into()],
                running: 0,
                capacity: 2,
                completed: 0,
                updated_ms: 11_500,
            },
        ];
        assert_eq!(
            table(&workers, 12_000),
            "WORKER  AGENTS             LOAD  COMPLETED  SEEN\n\
             gpu-1   researcher,writer  3/8   120        2.0s ago\n\
             cpu-2   echo               0/2   0          0.5s ago\n\
             2 worker(s), 3/10 task slots busy\n"
        );
    }
}

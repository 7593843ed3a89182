//! `--otlp URL` (the `otel` feature): `baton run --nats` and `baton
//! worker`, two processes exporting to one real OTLP receiver, make one
//! trace: the researchers that ran on the worker, and their fetchers, sit
//! under the lead that delegated them.
//!
//! Run with `cargo test -p baton-cli --features otel --test otel_cli`.
#![cfg(feature = "otel")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use baton_testkit::NatsServer;

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn from<'a>(spans: &'a [ReceivedSpan], service: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service() == Some(service))
        .collect()
}

#[test]
fn a_worker_process_exports_its_spans_into_the_runs_trace() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    let receiver = OtlpReceiver::start().expect("OTLP receiver");
    let research =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/research.toml");
    let _worker = Killed(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["worker", "--nats", server.url(), "--id", "w1"])
            .args(["--otlp", receiver.url(), "--agents"])
            .arg(&research)
            // Export every 50 ms: the worker runs until it is killed.
            .env("OTEL_BSP_SCHEDULE_DELAY", "50")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the worker: {e}")),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["run", "--json", "--nats", server.url()])
        .args(["--remote", "researcher", "--otlp", receiver.url()])
        .arg(&research)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `baton run` sent its spans on exit; the worker's come in batches.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut spans = Vec::new();
    loop {
        spans.extend(receiver.spans());
        let worker = from(&spans, "baton worker");
        let tasks = worker
            .iter()
            .filter(|s| s.attribute("worker") == Some("w1"))
            .count();
        let fetchers = worker
            .iter()
            .filter(|s| s.attribute("agent") == Some("fetcher") && s.attribute("depth").is_some())
            .count();
        if tasks == 3 && fetchers == 6 && !from(&spans, "baton run").is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{tasks} worker task spans and {fetchers} fetcher spans in 20 s: {:#?}",
            spans
                .iter()
                .map(|s| (s.service(), s.span.name.as_str()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let run = from(&spans, "baton run");
    let leads: Vec<_> = run
        .iter()
        .filter(|s| s.attribute("agent") == Some("lead") && s.attribute("depth") == Some("0"))
        .collect();
    assert_eq!(leads.len(), 1, "one conversation");
    let lead = &leads[0].span;
    let worker = from(&spans, "baton worker");
    assert!(
        worker.iter().all(|s| s.span.trace_id == lead.trace_id),
        "every worker span is in the run's trace"
    );
    let tasks: Vec<_> = worker
        .iter()
        .filter(|s| s.attribute("worker") == Some("w1"))
        .collect();
    let mut task_ids: Vec<&str> = tasks
        .iter()
        .filter_map(|s| s.attribute("task_id"))
        .collect();
    task_ids.sort_unstable();
    assert_eq!(task_ids, ["task-1", "task-2", "task-3"]);
    for task in &tasks {
        assert_eq!(
            task.span.parent_span_id, lead.span_id,
            "{} nests under the lead",
            task.span.name
        );
        // The researcher's conversation on the worker, and its fetchers.
        let researcher = worker
            .iter()
            .find(|s| s.span.parent_span_id == task.span.span_id)
            .unwrap_or_else(|| panic!("nothing under {}", task.span.name));
        assert_eq!(researcher.attribute("agent"), Some("researcher"));
        let fetchers = worker
            .iter()
            .filter(|s| {
                s.span.parent_span_id == researcher.span.span_id
                    && s.attribute("agent") == Some("fetcher")
            })
            .count();
        assert_eq!(fetchers, 2, "{}'s fetchers", task.span.name);
    }
}

//! Store benchmarks (issue 6):
//!
//! * appended events per second, one appender and 100 concurrent ones, for
//!   SQLite and PostgreSQL;
//! * the 10,000-task delegation fan-out with the SQLite journal on and off,
//!   with a zero-latency model (the journal's whole cost) and with sub-agents
//!   answering after 100 ms (the fan-out of issue 4's benchmark), with the
//!   process's CPU per run and, on Linux, the store threads' own (until
//!   the run settles: SQLite's task table, written when its writer is
//!   idle, counts in the process's CPU only);
//! * resume time (read + replay + restart) for a 100,000-event log, for
//!   SQLite and PostgreSQL.
//!
//! ```text
//! cargo bench -p baton-store --bench store
//! BATON_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test cargo bench -p baton-store --bench store
//! cargo bench -p baton-store --bench store -- fanout   # only some: appends, fanout, resume
//! ```
//!
//! PostgreSQL runs in a schema of its own, dropped at the end; without a
//! reachable server its lines say it was skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{JournalRecord, Message, Replay};
use baton_llm::{ChatRequest, ScriptedModel, ScriptedTurn};
use baton_runtime::{Agent, Orchestrator};
use baton_store::{PgOptions, PgStore, SqliteStore, Store};
use cpu_time::ProcessTime;

fn input(i: usize) -> JournalRecord {
    JournalRecord::UserInput {
        text: format!("message number {i}"),
    }
}

/// A lead delegating `n` tasks in one turn to sub-agents that answer after
/// `latency`.
fn fanout_lead(n: usize, latency: Duration) -> Agent {
    let model = ScriptedModel::from_fn(move |req: &ChatRequest| {
        match (req.agent.as_str(), req.messages.last()) {
            ("lead", Some(Message::User { .. })) => ScriptedTurn::calls(
                "create_task",
                (0..n).map(|i| serde_json::json!({"agent": "w", "prompt": i.to_string()})),
            ),
            ("lead", _) => ScriptedTurn::text("done"),
            _ => ScriptedTurn::text("done").after(latency),
        }
    });
    let worker = Agent::builder("w").model(model.clone()).build();
    Agent::builder("lead")
        .model(model)
        .delegates_to([worker])
        .build()
}

/// The CPU time, in seconds, the store threads (named `baton-store-…`)
/// of this process have run so far, from Linux's per-thread `schedstat`
/// (nanoseconds); `None` elsewhere.
fn store_threads_cpu() -> Option<f64> {
    let mut ns = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("baton-store") {
            continue;
        }
        let schedstat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        ns += schedstat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(ns as f64 / 1e9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Sections named on the command line, or all of them.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |section: &str| named.is_empty() || named.iter().any(|n| n == section);
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let pg = postgres("appends");
    if run("appends") {
        let sqlite: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("appends.db")).expect("open"));
        runtime.block_on(appends("SQLite", &sqlite));
        drop(sqlite);
        if let Some(pg) = &pg {
            let store: Arc<dyn Store> = Arc::new(PgStore::clone(pg));
            runtime.block_on(appends("PostgreSQL", &store));
        }
    }
    if run("fanout") {
        fanout(&dir, pg.as_deref(), Duration::ZERO);
        fanout(&dir, pg.as_deref(), Duration::from_millis(100));
    }
    drop(pg);
    if run("resume") {
        let path = dir.path().join("resume.db");
        let spec = path.display().to_string();
        resume("SQLite", &runtime, &|| {
            baton_store::open(&spec).expect("open")
        });
        if let Some(_pg) = postgres("resume") {
            let spec = format!("{}?schema={}", pg_url(), schema_name("resume"));
            resume("PostgreSQL", &runtime, &|| {
                baton_store::open(&spec).expect("open")
            });
        }
    }
}

/// The 10,000-task delegation fan-out, journal off, on SQLite and on
/// PostgreSQL, five rounds each, interleaved; sub-agents answer after
/// `latency`.
fn fanout(dir: &tempfile::TempDir, pg: Option<&PgStore>, latency: Duration) {
    const N: usize = 10_000;
    let mut off = Vec::new();
    let mut on = Vec::new();
    let mut on_pg = Vec::new();
    // Process CPU time of each run (every thread's, the store's included):
    // less sensitive to a busy machine than wall time.
    let mut cpu_off = Vec::new();
    let mut cpu_on = Vec::new();
    // The CPU time of the store's own threads (encoder, writer) in each
    // SQLite run: the store's share of the journal's cost.
    let mut cpu_store = Vec::new();
    for round in 0..5 {
        for durable in [None, Some("sqlite"), Some("postgres")] {
            let path = dir
                .path()
                .join(format!("fanout-{round}-{}ms.db", latency.as_millis()));
            let store: Option<Arc<dyn Store>> = match durable {
                None => None,
                Some("sqlite") => Some(Arc::new(SqliteStore::open(&path).expect("open"))),
                Some(_) => match pg {
                    Some(pg) => Some(Arc::new(pg.clone())),
                    None => continue,
                },
            };
            let cpu = ProcessTime::now();
            let took = actix_rt::System::new().block_on(async move {
                let mut builder = Orchestrator::builder(fanout_lead(N, latency));
                if let Some(store) = &store {
                    let id = format!("fanout-{round}-{}ms", latency.as_millis());
                    builder = builder.journal(store.journal(&id).expect("journal"));
                }
                let convo = builder.spawn();
                let start = Instant::now();
                // Other stores' threads (PostgreSQL's, shared by the rounds)
                // idle meanwhile: the difference is this store's.
                let store_cpu_before = store_threads_cpu();
                convo.send_user("go").await.expect("send");
                convo.settled().await.expect("settled");
                let took = start.elapsed();
                let store_cpu = store_threads_cpu()
                    .zip(store_cpu_before)
                    .map(|(after, before)| after - before);
                convo.shutdown().await.expect("shutdown");
                (took.as_secs_f64(), store_cpu)
            });
            let (took, store_cpu) = took;
            let cpu = cpu.elapsed().as_secs_f64();
            match durable {
                None => {
                    off.push(took);
                    cpu_off.push(cpu);
                }
                Some("sqlite") => {
                    on.push(took);
                    cpu_on.push(cpu);
                    cpu_store.extend(store_cpu);
                }
                Some(_) => on_pg.push(took),
            }
        }
    }
    let (off, on) = (median(off), median(on));
    let (cpu_off, cpu_on) = (median(cpu_off), median(cpu_on));
    let ms = latency.as_millis();
    println!(
        "fan-out of {N} delegated tasks, sub-agents at {ms} ms: store off {off:.3} s, SQLite on {on:.3} s: {:.2}x (goal ≤ 1.2x); CPU off {:.1} ms, on {:.1} ms: the journal's {:.2} µs per task",
        on / off,
        cpu_off * 1e3,
        cpu_on * 1e3,
        (cpu_on - cpu_off) * 1e6 / N as f64
    );
    if !cpu_store.is_empty() {
        println!(
            "  of which the store's threads (encoder, writer): {:.2} µs per task",
            median(cpu_store) * 1e6 / N as f64
        );
    }
    if !on_pg.is_empty() {
        let on_pg = median(on_pg);
        println!(
            "fan-out of {N} delegated tasks, sub-agents at {ms} ms: PostgreSQL on {on_pg:.3} s: {:.2}x",
            on_pg / off
        );
    }
}

fn pg_url() -> String {
    std::env::var("BATON_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn schema_name(what: &str) -> String {
    format!("baton_bench_{what}_{}", std::process::id())
}

/// A PostgreSQL store in a schema of its own, dropped with it (also when
/// the benchmark panics).
struct BenchSchema(PgStore);

impl Drop for BenchSchema {
    fn drop(&mut self) {
        if let Err(e) = self.0.clone().destroy() {
            eprintln!("could not drop a benchmark schema: {e}");
        }
    }
}

impl std::ops::Deref for BenchSchema {
    type Target = PgStore;
    fn deref(&self) -> &PgStore {
        &self.0
    }
}

/// A PostgreSQL store in a fresh schema, or `None` (said) without a server.
fn postgres(what: &str) -> Option<BenchSchema> {
    let schema = schema_name(what);
    match PgStore::open(&pg_url(), PgOptions { schema }) {
        Ok(store) => Some(BenchSchema(store)),
        Err(e) => {
            println!("PostgreSQL {what}: skipped ({e})");
            None
        }
    }
}

async fn appends(name: &str, store: &Arc<dyn Store>) {
    let journal = store.journal("one").expect("journal");
    let n = 2_000;
    let start = Instant::now();
    for i in 0..n {
        journal.append(vec![input(i)]).await.expect("append");
    }
    let one = n as f64 / start.elapsed().as_secs_f64();
    let journal = store.journal("many").expect("journal");
    let n = 20_000;
    let (tx0, ap0) = (store.stats().transactions(), store.stats().appends());
    let start = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        pending.push(journal.append(vec![input(i)]));
        if pending.len() == 100 {
            for p in pending.drain(..) {
                p.await.expect("append");
            }
        }
    }
    for p in pending {
        p.await.expect("append");
    }
    let many = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "{name} appends: one appender waiting for each: {one:.0} events/s; 100 in flight: {many:.0} events/s ({} transactions for {} appends)",
        store.stats().transactions() - tx0,
        store.stats().appends() - ap0
    );
}

/// Writes a 100,000-event log (50,000 inputs, each with its message), then
/// times a fresh open, the read, the replay and the actor's restart.
fn resume(name: &str, runtime: &tokio::runtime::Runtime, open: &dyn Fn() -> Arc<dyn Store>) {
    runtime.block_on(async {
        let store = open();
        let journal = store.journal("long").expect("journal");
        let mut pending = Vec::new();
        for i in 0..50_000 {
            pending.push(journal.append(vec![
                input(i),
                JournalRecord::Appended {
                    message: Message::user(format!("message number {i}")),
                },
            ]));
        }
        for p in pending {
            p.await.expect("append");
        }
    });
    let full = resume_rounds(open, false);
    println!(
        "{name} resume of a 100,000-event log, no snapshot (median of 3): {:.0} ms (open {:.0} ms, read to {:.0} ms, replay to {:.0} ms, restart to {:.0} ms)",
        full[3], full[0], full[1], full[2], full[3]
    );
    let store = open();
    store.snapshot("long").expect("snapshot");
    // 1,000 records after the snapshot, as a journal would have written.
    runtime.block_on(async {
        let journal = store.journal("long").expect("journal");
        let pending: Vec<_> = (0..1_000)
            .map(|i| journal.append(vec![input(50_000 + i)]))
            .collect();
        for p in pending {
            p.await.expect("append");
        }
    });
    drop(store);
    let snap = resume_rounds(open, true);
    println!(
        "{name} resume of the same log from a snapshot + 1,000 records (median of 3): {:.0} ms (open {:.0} ms, read + replay to {:.0} ms, restart to {:.0} ms)",
        snap[3], snap[0], snap[2], snap[3]
    );
}

/// Opens, reads, replays and restarts the long conversation three times:
/// the median's [open, read, replay, restart] in ms, from the start.
fn resume_rounds(open: &dyn Fn() -> Arc<dyn Store>, snapshot: bool) -> [f64; 4] {
    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push(actix_rt::System::new().block_on(async {
            let start = Instant::now();
            let store = open();
            let opened = start.elapsed();
            let (replay, read) = if snapshot {
                (store.replay("long").expect("replay"), start.elapsed())
            } else {
                let records = store.read("long").expect("read");
                let read = start.elapsed();
                assert_eq!(records.len(), 100_000);
                (Replay::from_records(records), read)
            };
            let replayed = start.elapsed();
            let agent = Agent::builder("a")
                .model(ScriptedModel::from_fn(|_| ScriptedTurn::text("ok")))
                .build();
            let convo = Orchestrator::builder(agent).resume(replay).spawn();
            let history = convo.history().await.expect("history");
            let took = start.elapsed();
            assert!(history.len() >= 50_000);
            [opened, read, replayed, took].map(|d| d.as_secs_f64() * 1000.0)
        }));
    }
    rounds.sort_by(|a, b| a[3].total_cmp(&b[3]));
    rounds[rounds.len() / 2]
}

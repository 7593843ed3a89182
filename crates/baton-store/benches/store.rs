//! Store benchmarks (issue 6):
//!
//! * appended events per second, one appender and 100 concurrent ones;
//! * the 10,000-task delegation fan-out with the SQLite journal on and off;
//! * resume time (read + replay + restart) for a 100,000-event log.
//!
//! ```text
//! cargo bench -p baton-store --bench store
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{Journal, JournalRecord, Message, Replay};
use baton_llm::{ChatRequest, ScriptedModel, ScriptedTurn};
use baton_runtime::{Agent, Orchestrator};
use baton_store::SqliteStore;

fn input(i: usize) -> JournalRecord {
    JournalRecord::UserInput {
        text: format!("message number {i}"),
    }
}

fn fanout_lead(n: usize) -> Agent {
    let model = ScriptedModel::from_fn(move |req: &ChatRequest| {
        match (req.agent.as_str(), req.messages.last()) {
            ("lead", Some(Message::User { .. })) => {
                let mut turn = ScriptedTurn::call(
                    "create_task",
                    serde_json::json!({"agent": "w", "prompt": "0"}),
                );
                for i in 1..n {
                    turn = turn.and_call(
                        "create_task",
                        serde_json::json!({"agent": "w", "prompt": i.to_string()}),
                    );
                }
                turn
            }
            _ => ScriptedTurn::text("done"),
        }
    });
    let worker = Agent::builder("w").model(model.clone()).build();
    Agent::builder("lead")
        .model(model)
        .delegates_to([worker])
        .build()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // Appends per second.
    runtime.block_on(async {
        let store = SqliteStore::open(dir.path().join("appends.db")).expect("open");
        let journal = store.journal("one").expect("journal");
        let n = 2_000;
        let start = Instant::now();
        for i in 0..n {
            journal.append(vec![input(i)]).await.expect("append");
        }
        let one = n as f64 / start.elapsed().as_secs_f64();
        let journal = store.journal("many").expect("journal");
        let n = 20_000;
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
            "appends: one appender waiting for each: {one:.0} events/s; 100 in flight: {many:.0} events/s ({} transactions for {} appends)",
            store.stats().transactions(),
            store.stats().appends()
        );
    });

    // Fan-out, journal on vs off.
    const N: usize = 10_000;
    let mut off = Vec::new();
    let mut on = Vec::new();
    for round in 0..3 {
        for durable in [false, true] {
            let path = dir.path().join(format!("fanout-{round}.db"));
            let took = actix_rt::System::new().block_on(async move {
                let mut builder = Orchestrator::builder(fanout_lead(N));
                if durable {
                    let store = SqliteStore::open(&path).expect("open");
                    builder = builder.journal(Arc::new(store.journal("fanout").expect("journal")));
                }
                let convo = builder.spawn();
                let start = Instant::now();
                convo.send_user("go").await.expect("send");
                convo.settled().await.expect("settled");
                let took = start.elapsed();
                convo.shutdown().await.expect("shutdown");
                took.as_secs_f64()
            });
            if durable {
                on.push(took)
            } else {
                off.push(took)
            }
        }
    }
    let (off, on) = (median(off), median(on));
    println!(
        "fan-out of {N} delegated tasks: store off {off:.3} s, SQLite on {on:.3} s: {:.2}x (goal ≤ 1.2x)",
        on / off
    );

    // Resume time for a 100,000-event log.
    let path = dir.path().join("resume.db");
    runtime.block_on(async {
        let store = SqliteStore::open(&path).expect("open");
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
    let took = actix_rt::System::new().block_on(async {
        let start = Instant::now();
        let store = SqliteStore::open(&path).expect("open");
        let records = store.read("long").expect("read");
        let count = records.len();
        let replay = Replay::from_records(records);
        let agent = Agent::builder("a")
            .model(ScriptedModel::from_fn(|_| ScriptedTurn::text("ok")))
            .build();
        let convo = Orchestrator::builder(agent).resume(replay).spawn();
        let history = convo.history().await.expect("history");
        let took = start.elapsed();
        assert_eq!(count, 100_000);
        assert_eq!(history.len(), 50_000);
        took
    });
    println!(
        "resume of a 100,000-event log (open, read, replay, restart): {:?}",
        took
    );
    let _ = Duration::ZERO;
}

//! Remote-worker benchmark (issue 7): round trip of one delegated task
//! through NATS JetStream, and throughput with 1, 2 and 4 workers, beside
//! the same work in-process. Needs a `nats-server` 2.10+ (see the tests).
//!
//! ```text
//! cargo bench -p baton-nats --bench remote
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_nats::{NatsExecutor, NatsWorker};
use baton_runtime::{Agent, Orchestrator};
use common::{echo_agent, lead, NatsServer, NatsServerExt};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(server) = NatsServer::start_or_skip() else {
        eprintln!("no nats-server: nothing measured");
        return;
    };
    let config = server.config();

    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    // Round trip: one task at a time, one worker.
    actix_rt::System::new().block_on(async {
        let worker = NatsWorker::new(config.clone(), [echo_agent()]);
        actix::spawn(worker.run());
        let mut remote = Vec::new();
        let mut local = Vec::new();
        for i in 0..rounds {
            let executor = NatsExecutor::connect(config.clone(), format!("rt{i}")).await.expect("connect");
            let agent = Agent::builder("echo").remote(Arc::new(executor)).build();
            let convo = Orchestrator::builder(lead(1, agent)).worker_threads(0).spawn();
            let start = Instant::now();
            convo.send_user("go").await.expect("send");
            convo.settled().await.expect("settled");
            remote.push(start.elapsed());
            convo.shutdown().await.expect("shutdown");

            let convo = Orchestrator::builder(lead(1, echo_agent())).worker_threads(0).spawn();
            let start = Instant::now();
            convo.send_user("go").await.expect("send");
            convo.settled().await.expect("settled");
            local.push(start.elapsed());
            convo.shutdown().await.expect("shutdown");
        }
        remote.sort();
        local.sort();
        println!(
            "round trip, one task (lead turn + delegation + result + lead turn), {} runs:\n  remote: median {:?}, p99 {:?}\n  in-process: median {:?}, p99 {:?}",
            remote.len(),
            percentile(&remote, 0.5),
            percentile(&remote, 0.99),
            percentile(&local, 0.5),
            percentile(&local, 0.99)
        );
    });

    // Throughput: 2,000 tasks fanned out.
    const N: usize = 2_000;
    for workers in [1usize, 2, 4] {
        actix_rt::System::new().block_on(async {
            let pool: Vec<NatsWorker> = (0..workers)
                .map(|_| NatsWorker::new(config.clone(), [echo_agent()]))
                .collect();
            for w in &pool {
                actix::spawn(w.clone().run());
            }
            let executor = NatsExecutor::connect(config.clone(), format!("tp{workers}"))
                .await
                .expect("connect");
            let agent = Agent::builder("echo").remote(Arc::new(executor)).build();
            let convo = Orchestrator::start(lead(N, agent));
            let start = Instant::now();
            convo.send_user("go").await.expect("send");
            convo.settled().await.expect("settled");
            let took = start.elapsed();
            println!(
                "throughput, {N} tasks, {workers} worker(s): {:.0} tasks/s ({took:?})",
                N as f64 / took.as_secs_f64()
            );
            convo.shutdown().await.expect("shutdown");
        });
    }
    actix_rt::System::new().block_on(async {
        let convo = Orchestrator::start(lead(N, echo_agent()));
        let start = Instant::now();
        convo.send_user("go").await.expect("send");
        convo.settled().await.expect("settled");
        let took = start.elapsed();
        println!(
            "throughput, {N} tasks, in-process: {:.0} tasks/s ({took:?})",
            N as f64 / took.as_secs_f64()
        );
    });
}

//! `baton workers --nats URL` against a real `nats-server` with real
//! workers. Skips without a `nats-server` 2.10+ unless
//! `BATON_REQUIRE_NATS=1` (see docs/nats.md).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use assert_cmd::Command as Baton;
use baton_core::TaskId;
use baton_llm::{ScriptedModel, ScriptedTurn};
use baton_nats::{NatsConfig, NatsWorker, TaskMessage, WorkerInfo};
use baton_runtime::Agent;
use baton_testkit::NatsServer;

fn agent(name: &str, turn: fn() -> ScriptedTurn) -> Agent {
    Agent::builder(name)
        .model(ScriptedModel::from_fn(move |_| turn()))
        .build()
}

/// `baton workers --nats URL --json`, parsed.
fn listed(url: &str) -> Vec<WorkerInfo> {
    let out = Baton::cargo_bin("baton")
        .expect("the baton binary")
        .args(["workers", "--nats", url, "--json"])
        .output()
        .expect("baton runs");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("a JSON array of workers")
}

/// Polls `f` for at most `limit` (real time: a network test).
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn workers_lists_the_registered_workers_with_their_load() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    // A fresh server: nothing registered, nothing created by looking.
    Baton::cargo_bin("baton")
        .expect("the baton binary")
        .args(["workers", "--nats", server.url()])
        .assert()
        .success()
        .stdout(format!("no workers registered at {}\n", server.url()));
    assert!(listed(server.url()).is_empty());

    let mut config = NatsConfig::new(server.url().to_owned());
    config.heartbeat = Duration::from_millis(200);
    let busy = NatsWorker::builder(config.clone())
        .agent(agent("slow", ScriptedTurn::hang))
        .id("alpha")
        .concurrency(4)
        .build()
        .expect("a worker")
        .spawn()
        .expect("a worker thread");
    let idle = NatsWorker::builder(config.clone())
        .agents([agent("echo", || ScriptedTurn::text("hi"))])
        .id("beta")
        .concurrency(2)
        .build()
        .expect("a worker")
        .spawn()
        .expect("a worker thread");

    // Three tasks for `slow`, published as an orchestrator would.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let handles = baton_nats::setup::connect(&config).await.expect("connect");
        for n in 1..=3 {
            let task = TaskMessage {
                conversation: "cli".into(),
                task_id: TaskId::new(n),
                attempt: 1,
                agent: "slow".into(),
                prompt: format!("p{n}"),
            };
            handles
                .js
                .publish(
                    config.task_subject(&task.agent).expect("a subject"),
                    serde_json::to_vec(&task).expect("json").into(),
                )
                .await
                .expect("published")
                .await
                .expect("stored");
        }
    });

    eventually(Duration::from_secs(20), || {
        listed(server.url())
            .iter()
            .any(|w| w.id == "alpha" && w.running == 3)
    });
    let workers = listed(server.url());
    let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["alpha", "beta"]);
    assert_eq!(
        (workers[0].agents.clone(), workers[0].capacity),
        (vec!["slow".to_owned()], 4)
    );
    assert_eq!(
        (
            workers[1].agents.clone(),
            workers[1].running,
            workers[1].capacity
        ),
        (vec!["echo".to_owned()], 0, 2)
    );

    let table = Baton::cargo_bin("baton")
        .expect("the baton binary")
        .args(["workers", "--nats", server.url()])
        .output()
        .expect("baton runs");
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["WORKER", "AGENTS", "LOAD", "COMPLETED", "SEEN"]
    );
    assert!(
        lines[1].starts_with("alpha") && lines[1].contains(" 3/4 "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("beta") && lines[2].contains(" 0/2 "),
        "{text}"
    );
    assert_eq!(lines[3], "2 worker(s), 3/6 task slots busy", "{text}");

    // A worker that stops leaves the list at once.
    runtime.block_on(busy.stop()).expect("alpha stops");
    let ids: Vec<String> = listed(server.url()).into_iter().map(|w| w.id).collect();
    assert_eq!(ids, ["beta"]);
    runtime.block_on(idle.stop()).expect("beta stops");
}

#[test]
fn workers_reports_an_unreachable_server() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let out = Baton::cargo_bin("baton")
        .expect("the baton binary")
        .args(["workers", "--nats", &url])
        .output()
        .expect("baton runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&url), "{stderr}");
}

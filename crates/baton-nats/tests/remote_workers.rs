//! Remote workers over a real NATS JetStream server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use baton_core::{MemoryJournal, Message, Replay, TaskId, TaskOutcome, TaskStatus};
use baton_llm::{ScriptedModel, ScriptedTurn};
use baton_nats::{NatsExecutor, NatsWorker, RemoteStatus, TaskBoard};
use baton_runtime::{Agent, Orchestrator};
use common::*;

fn results(history: &baton_core::History) -> Vec<(TaskId, TaskOutcome)> {
    history
        .messages()
        .iter()
        .filter_map(|m| match m {
            Message::TaskResult {
                task_id, outcome, ..
            } => Some((*task_id, outcome.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn three_workers_finish_a_thousand_tasks_exactly_once() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    actix_rt::System::new().block_on(async {
        let config = server.config();
        let workers: Vec<NatsWorker> = (0..3)
            .map(|_| NatsWorker::new(config.clone(), [echo_agent()]))
            .collect();
        for w in &workers {
            actix::spawn(w.clone().run());
        }
        let executor = NatsExecutor::connect(config.clone(), "thousand")
            .await
            .unwrap();
        let convo = Orchestrator::start(lead(1000, remote("echo", &executor)));
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        let results = results(&history);
        let failed: Vec<_> = results.iter().filter(|(_, o)| !o.is_success()).collect();
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(
            results.len(),
            1000,
            "{:?}",
            convo
                .tasks()
                .iter()
                .filter(|r| !results.iter().any(|(id, _)| *id == r.id))
                .collect::<Vec<_>>()
        );
        let mut ids: Vec<u64> = results.iter().map(|(id, _)| id.get()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 1000, "each task once");
        for (id, outcome) in &results {
            let expected = format!("echo: p{}", id.get() - 1);
            assert_eq!(outcome, &TaskOutcome::Succeeded { output: expected });
        }
        let completed: u64 = workers.iter().map(NatsWorker::completed).sum();
        assert_eq!(completed, 1000);
        assert!(
            workers.iter().filter(|w| w.completed() > 0).count() >= 2,
            "the work was shared"
        );
        let listed = NatsWorker::list(&config).await.unwrap();
        assert_eq!(listed.len(), 3);
    });
}

#[test]
fn a_worker_started_after_tasks_were_queued_drains_them() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    actix_rt::System::new().block_on(async {
        let config = server.config();
        let executor = NatsExecutor::connect(config.clone(), "late").await.unwrap();
        let convo = Orchestrator::start(lead(20, remote("echo", &executor)));
        convo.send_user("go").await.unwrap();
        eventually(Duration::from_secs(10), async || {
            entry(&executor, 20)
                .await
                .is_some_and(|e| e.status == RemoteStatus::Pending)
        })
        .await;
        let ended: Vec<_> = convo
            .tasks()
            .into_iter()
            .filter(|r| r.status.is_terminal())
            .map(|r| (r.id, r.outcome))
            .collect();
        assert!(ended.is_empty(), "nothing runs without a worker: {ended:?}");
        // Another machine sees the same tasks, queued.
        let board = TaskBoard::connect(&config).await.unwrap();
        let queued = board.entries("late").await.unwrap();
        assert_eq!(queued.len(), 20);
        assert!(queued
            .iter()
            .all(|(_, e)| e.status == RemoteStatus::Pending));
        let worker = NatsWorker::new(config, [echo_agent()]);
        actix::spawn(worker.clone().run());
        convo.settled().await.unwrap();
        assert_eq!(results(&convo.history().await.unwrap()).len(), 20);
        assert_eq!(worker.completed(), 20);
        let done = board.entries("late").await.unwrap();
        let ids: Vec<u64> = done.iter().map(|(id, _)| id.get()).collect();
        assert_eq!(ids, (1..=20).collect::<Vec<_>>());
        for (id, e) in &done {
            assert_eq!(e.status, RemoteStatus::Done);
            assert_eq!(
                e.outcome,
                Some(TaskOutcome::Succeeded {
                    output: format!("echo: p{}", id.get() - 1)
                })
            );
            assert_eq!(e.worker.as_deref(), Some(worker.id()));
        }
        assert!(board.entries("nobody").await.unwrap().is_empty());
    });
}

/// A worker-side agent that delegates, locally, to a sub-agent that never
/// answers: a remote subtree.
fn boss() -> Agent {
    let sleeper = Agent::builder("sleeper")
        .model(ScriptedModel::from_fn(|_| ScriptedTurn::hang()))
        .build();
    let model = ScriptedModel::from_fn(|req| match req.messages.last() {
        Some(Message::User { .. }) => ScriptedTurn::call(
            "create_task",
            serde_json::json!({"agent": "sleeper", "prompt": "zzz"}),
        ),
        _ => ScriptedTurn::text("waiting"),
    });
    Agent::builder("boss")
        .model(model)
        .delegates_to([sleeper])
        .build()
}

#[test]
fn cancelling_a_remote_task_stops_its_subtree_on_the_worker() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    actix_rt::System::new().block_on(async {
        let config = server.config();
        let worker = NatsWorker::new(config.clone(), [boss()]);
        actix::spawn(worker.clone().run());
        let executor = NatsExecutor::connect(config, "cancel").await.unwrap();
        let convo = Orchestrator::start(lead(1, remote("boss", &executor)));
        convo.send_user("go").await.unwrap();
        eventually(Duration::from_secs(10), async || worker.running() == 1).await;
        assert_eq!(
            convo.cancel_task(TaskId::new(1)).await,
            Ok(TaskStatus::Cancelled)
        );
        eventually(Duration::from_secs(10), async || worker.running() == 0).await;
        let e = entry(&executor, 1).await.unwrap();
        assert_eq!(e.status, RemoteStatus::CancelRequested);
        assert_eq!(worker.completed(), 0);
        convo.settled().await.unwrap();
        assert_eq!(
            convo.check_task(TaskId::new(1)).unwrap().status,
            TaskStatus::Cancelled
        );
    });
}

#[test]
fn a_killed_worker_process_loses_no_task_and_none_completes_twice() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_baton-nats-worker"))
        .args([
            "--nats",
            server.url(),
            "--agent",
            "echo",
            "--latency-ms",
            "300",
        ])
        .args(["--ack-wait-ms", "1500", "--concurrency", "4"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(ChildProcess)
        .expect("worker starts");
    actix_rt::System::new().block_on(async {
        let config = server.config();
        let executor = NatsExecutor::connect(config.clone(), "killed")
            .await
            .unwrap();
        let convo = Orchestrator::start(lead(30, remote("echo", &executor)));
        convo.send_user("go").await.unwrap();
        // Let the child finish a few, then kill it with tasks in flight.
        eventually(Duration::from_secs(20), async || {
            let mut done = 0;
            for n in 1..=30 {
                if entry(&executor, n)
                    .await
                    .is_some_and(|e| e.status == RemoteStatus::Done)
                {
                    done += 1;
                }
            }
            done >= 4
        })
        .await;
        child.kill().expect("SIGKILL");
        let worker = NatsWorker::new(config, [echo_agent()]);
        actix::spawn(worker.clone().run());
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        let results = results(&history);
        assert_eq!(results.len(), 30, "every task finished exactly once");
        assert!(results.iter().all(|(_, o)| o.is_success()));
        assert!(
            worker.completed() > 0 && worker.completed() < 30,
            "the survivor took over the rest"
        );
        let mut redelivered = 0;
        for n in 1..=30 {
            let e = entry(&executor, n).await.unwrap();
            assert_eq!(e.status, RemoteStatus::Done);
            if e.delivery > 1 {
                redelivered += 1;
            }
        }
        assert!(
            redelivered > 0,
            "tasks held by the killed worker were delivered again"
        );
    });
}

#[test]
fn a_restarted_orchestrator_drains_the_results_it_missed() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    let config = server.config();
    let worker_config = config.clone();
    // The worker runs in its own thread (its own actix system), and lives on
    // across the orchestrator's "crash".
    let slow = Agent::builder("echo")
        .model(ScriptedModel::from_fn(|req| {
            ScriptedTurn::text(format!("echo: {}", prompt_of(&req.messages)))
                .after(Duration::from_millis(800))
        }))
        .build();
    let worker = NatsWorker::new(worker_config, [slow]).spawn().unwrap();
    let journal = MemoryJournal::new();
    // First life: delegate, then die before the result comes back.
    let records = actix_rt::System::new().block_on({
        let config = config.clone();
        let journal = journal.clone();
        async move {
            let executor = NatsExecutor::connect(config, "restarted").await.unwrap();
            let convo = Orchestrator::builder(lead(1, remote("echo", &executor)))
                .journal(Arc::new(journal.clone()))
                .spawn();
            convo.send_user("go").await.unwrap();
            eventually(Duration::from_secs(10), async || {
                entry(&executor, 1)
                    .await
                    .is_some_and(|e| e.status == RemoteStatus::Running)
            })
            .await;
            journal.records()
        }
    });
    // Second life: same conversation id, resumed from the journal.
    actix_rt::System::new().block_on(async move {
        let executor = NatsExecutor::connect(config, "restarted").await.unwrap();
        let convo = Orchestrator::builder(lead(1, remote("echo", &executor)))
            .resume(Replay::from_records(records))
            .spawn();
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        assert_eq!(
            results(&history),
            vec![(
                TaskId::new(1),
                TaskOutcome::Succeeded {
                    output: "echo: p0".into()
                }
            )]
        );
        let e = entry(&executor, 1).await.unwrap();
        assert_eq!(
            (e.status, e.attempt, e.delivery),
            (RemoteStatus::Done, 1, 1),
            "the resumed conversation adopted the attempt in flight"
        );
        assert_eq!(worker.worker().completed(), 1, "ran once, not again");
        worker.stop().await.unwrap();
    });
}

#[test]
fn a_task_that_fails_on_every_delivery_ends_failed_after_max_deliver() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    actix_rt::System::new().block_on(async {
        let mut config = server.config();
        config.max_deliver = 3;
        let broken = Agent::builder("echo")
            .model(ScriptedModel::from_fn(|_| {
                ScriptedTurn::fail("the provider is down")
            }))
            .build();
        let worker = NatsWorker::new(config.clone(), [broken]);
        actix::spawn(worker.clone().run());
        let executor = NatsExecutor::connect(config, "broken").await.unwrap();
        let convo = Orchestrator::start(lead(1, remote("echo", &executor)));
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        let record = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!(record.status, TaskStatus::Failed);
        let outcome = record.outcome.unwrap();
        assert!(
            outcome.detail().contains("the provider is down"),
            "{outcome:?}"
        );
        let e = entry(&executor, 1).await.unwrap();
        assert_eq!(
            (e.status, e.delivery),
            (RemoteStatus::Done, 3),
            "bounded deliveries"
        );
    });
}

/// A `baton-nats-worker` child process serving `echo` with tasks that take
/// a minute, so it is always killed mid-task.
fn stuck_worker_process(url: &str, max_deliver: i64) -> ChildProcess {
    std::process::Command::new(env!("CARGO_BIN_EXE_baton-nats-worker"))
        .args(["--nats", url, "--agent", "echo", "--latency-ms", "60000"])
        .args(["--ack-wait-ms", "1500", "--heartbeat-ms", "500"])
        .args(["--max-deliver", &max_deliver.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(ChildProcess)
        .expect("worker starts")
}

/// Messages a stream holds now.
async fn stream_len(url: &str, stream: &str) -> u64 {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[test]
fn a_task_whose_worker_is_killed_on_every_delivery_ends_failed_with_the_reason() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    actix_rt::System::new().block_on(async {
        let mut config = server.config();
        config.max_deliver = 3;
        let executor = NatsExecutor::connect(config.clone(), "crashing")
            .await
            .unwrap();
        let convo = Orchestrator::start(lead(1, remote("echo", &executor)));
        convo.send_user("go").await.unwrap();
        // Each delivery lands on a fresh worker process, which is SIGKILLed
        // while it runs the task: no worker ever reports.
        for delivery in 1..=3 {
            let mut child = stuck_worker_process(server.url(), config.max_deliver);
            eventually(Duration::from_secs(20), async || {
                entry(&executor, 1)
                    .await
                    .is_some_and(|e| e.status == RemoteStatus::Running && e.delivery == delivery)
            })
            .await;
            child.kill().expect("SIGKILL");
        }
        convo.settled().await.unwrap();
        let record = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!(record.status, TaskStatus::Failed);
        let outcome = record.outcome.unwrap();
        assert!(
            outcome.detail().contains("in 3 deliveries") && outcome.detail().contains("crashed"),
            "{outcome:?}"
        );
        let e = entry(&executor, 1).await.unwrap();
        assert_eq!((e.status, e.delivery), (RemoteStatus::Done, 3));
        assert_eq!(e.outcome.as_ref(), Some(&outcome));
        // JetStream announces the dead task only once a worker pulls again:
        // the task still sits in the work queue until then.
        assert_eq!(stream_len(server.url(), &config.tasks_stream).await, 1);
        let worker = NatsWorker::new(config.clone(), [echo_agent()]);
        actix::spawn(worker.clone().run());
        // The advisory removes it from the queue, and changes nothing else.
        eventually(Duration::from_secs(20), async || {
            stream_len(server.url(), &config.tasks_stream).await == 0
                && stream_len(server.url(), &config.dead_stream).await == 0
        })
        .await;
        assert_eq!(worker.completed(), 0, "never run again");
        assert_eq!(entry(&executor, 1).await.unwrap(), e);
        let results = results(&convo.history().await.unwrap());
        assert_eq!(results.len(), 1, "reported once");
    });
}

#[test]
fn a_task_that_ran_out_of_deliveries_while_its_orchestrator_was_down_is_reported_on_restart() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    let mut config = server.config();
    config.max_deliver = 2;
    let journal = MemoryJournal::new();
    let records = actix_rt::System::new().block_on({
        let config = config.clone();
        let journal = journal.clone();
        let url = server.url().to_owned();
        async move {
            let executor = NatsExecutor::connect(config.clone(), "orphan")
                .await
                .unwrap();
            let convo = Orchestrator::builder(lead(1, remote("echo", &executor)))
                .journal(Arc::new(journal.clone()))
                .spawn();
            convo.send_user("go").await.unwrap();
            let mut child = stuck_worker_process(&url, config.max_deliver);
            eventually(Duration::from_secs(20), async || {
                entry(&executor, 1)
                    .await
                    .is_some_and(|e| e.status == RemoteStatus::Running)
            })
            .await;
            child.kill().expect("SIGKILL");
            journal.records()
        }
    });
    // The orchestrator is gone; the last delivery crashes too, and JetStream
    // gives up once a live worker pulls, with no orchestrator listening: the
    // advisory waits in the dead-letter stream.
    let mut child = stuck_worker_process(server.url(), config.max_deliver);
    actix_rt::System::new().block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value(&config.task_bucket)
            .await
            .unwrap();
        eventually(Duration::from_secs(20), async || {
            let value = kv.get("orphan.task-1").await.unwrap().unwrap();
            serde_json::from_slice::<baton_nats::TaskEntry>(&value)
                .unwrap()
                .delivery
                == 2
        })
        .await;
        child.kill().expect("SIGKILL");
        let survivor = NatsWorker::new(config.clone(), [echo_agent()]);
        actix::spawn(survivor.clone().run());
        eventually(Duration::from_secs(20), async || {
            stream_len(server.url(), &config.dead_stream).await == 1
        })
        .await;
        assert_eq!(survivor.completed(), 0);
    });
    actix_rt::System::new().block_on(async {
        let executor = NatsExecutor::connect(config.clone(), "orphan")
            .await
            .unwrap();
        let convo = Orchestrator::builder(lead(1, remote("echo", &executor)))
            .resume(Replay::from_records(records))
            .spawn();
        convo.settled().await.unwrap();
        let results = results(&convo.history().await.unwrap());
        assert_eq!(results.len(), 1);
        assert!(
            results[0].1.detail().contains("in 2 deliveries"),
            "{:?}",
            results[0].1
        );
        eventually(Duration::from_secs(20), async || {
            stream_len(server.url(), &config.dead_stream).await == 0
                && stream_len(server.url(), &config.tasks_stream).await == 0
        })
        .await;
    });
}

#[test]
fn a_stopped_worker_gives_its_tasks_back_at_once_and_leaves_the_list() {
    let Some(server) = NatsServer::start_or_skip() else {
        return;
    };
    actix_rt::System::new().block_on(async {
        let mut config = server.config();
        // Long enough that only the stopped worker's give-back explains a
        // quick redelivery.
        config.ack_wait = Duration::from_secs(60);
        assert!(NatsWorker::list(&config).await.unwrap().is_empty());
        let stuck = Agent::builder("echo")
            .model(ScriptedModel::from_fn(|_| ScriptedTurn::hang()))
            .build();
        let handle = NatsWorker::builder(config.clone())
            .agent(stuck)
            .id("stuck")
            .concurrency(4)
            .build()
            .unwrap()
            .spawn()
            .unwrap();
        let executor = NatsExecutor::connect(config.clone(), "handover")
            .await
            .unwrap();
        let convo = Orchestrator::start(lead(3, remote("echo", &executor)));
        convo.send_user("go").await.unwrap();
        eventually(Duration::from_secs(10), async || {
            NatsWorker::list(&config)
                .await
                .unwrap()
                .iter()
                .any(|w| w.id == "stuck" && w.running == 3 && w.capacity == 4)
        })
        .await;
        handle.stop().await.unwrap();
        assert!(NatsWorker::list(&config).await.unwrap().is_empty());
        for n in 1..=3 {
            let e = entry(&executor, n).await.unwrap();
            assert_eq!(e.status, RemoteStatus::Pending, "task {n} given back");
        }
        let worker = NatsWorker::new(config, [echo_agent()]);
        actix::spawn(worker.clone().run());
        eventually(Duration::from_secs(20), async || worker.completed() == 3).await;
        convo.settled().await.unwrap();
        let results = results(&convo.history().await.unwrap());
        assert_eq!(results.len(), 3);
        assert!(results.iter().all(|(_, o)| o.is_success()));
    });
}

#[test]
fn a_worker_is_built_with_checked_names() {
    let config = baton_nats::NatsConfig::new("nats://127.0.0.1:1");
    assert!(matches!(
        NatsWorker::builder(config.clone()).build(),
        Err(baton_nats::NatsError::NoAgents)
    ));
    assert!(matches!(
        NatsWorker::builder(config.clone())
            .agents([echo_agent(), echo_agent()])
            .build(),
        Err(baton_nats::NatsError::DuplicateAgent(name)) if name == "echo"
    ));
    assert!(matches!(
        NatsWorker::builder(config.clone())
            .agent(echo_agent())
            .id("a.b")
            .build(),
        Err(baton_nats::NatsError::InvalidName(_))
    ));
    let worker = NatsWorker::builder(config)
        .agent(echo_agent())
        .build()
        .unwrap();
    assert!(
        worker.id().contains(&format!("-{}-", std::process::id())),
        "{}",
        worker.id()
    );
}

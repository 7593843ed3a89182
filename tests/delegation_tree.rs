//! Delegation trees under supervision, on tokio's paused clock.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton::core::{BudgetExceeded, Limits};
use baton::runtime::virtual_time::block_on_paused;
use baton::runtime::Supervision;
use baton::{
    Agent, ChatRequest, Event, Message, Orchestrator, ScriptedModel, ScriptedTurn, TaskId,
    TaskOutcome, TaskStatus, Tool, ToolError, ToolOutput,
};
use common::*;
use serde_json::json;
use tokio::time::Instant;

/// A model for trees: an agent delegates its prompt to each of its
/// `children` (by agent name), waits for every result, then answers with
/// the results joined; a leaf answers after 100 ms.
fn tree_model(children: fn(&str) -> Vec<&'static str>) -> ScriptedModel {
    ScriptedModel::from_fn(move |req: &ChatRequest| {
        let agent = req.agent.as_str();
        let prompt = req
            .messages
            .iter()
            .find_map(|m| match m {
                Message::User { content } => Some(content.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let kids = children(agent);
        if kids.is_empty() {
            return ScriptedTurn::text(format!("{agent} on {prompt}"))
                .after(Duration::from_millis(100));
        }
        let results: Vec<String> = req
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::TaskResult { outcome, .. } => Some(outcome.detail()),
                _ => None,
            })
            .collect();
        match req.messages.last() {
            Some(Message::User { .. }) => {
                let mut turn: Option<ScriptedTurn> = None;
                for (i, kid) in kids.iter().enumerate() {
                    let args = json!({"agent": kid, "prompt": format!("{prompt}/{i}")});
                    turn = Some(match turn {
                        None => ScriptedTurn::call("create_task", args),
                        Some(t) => t.and_call("create_task", args),
                    });
                }
                turn.unwrap_or_else(|| ScriptedTurn::text("nothing to do"))
            }
            _ if results.len() == kids.len() => {
                ScriptedTurn::text(format!("[{}]", results.join(" | ")))
            }
            _ => ScriptedTurn::text("waiting"),
        }
    })
    .recording()
}

fn three_levels(agent: &str) -> Vec<&'static str> {
    match agent {
        "lead" => vec!["researcher", "researcher"],
        "researcher" | "fine" => vec!["fetcher", "fetcher"],
        _ => vec![],
    }
}

fn tree_agents(model: &ScriptedModel) -> Agent {
    let fetcher = Agent::builder("fetcher").model(model.clone()).build();
    let researcher = Agent::builder("researcher")
        .model(model.clone())
        .delegates_to([fetcher])
        .build();
    Agent::builder("lead")
        .model(model.clone())
        .delegates_to([researcher])
        .limits(Limits {
            max_depth: 3,
            max_children: 8,
            max_concurrent: 64,
            max_tokens: 200_000,
        })
        .supervision(Supervision::retry(3).backoff_ms(200).timeout_s(120))
        .build()
}

/// Every history any agent sent to the model keeps the tool protocol.
fn assert_all_histories_valid(model: &ScriptedModel) {
    for req in model.requests() {
        let history = baton::History::from(req.messages.to_vec());
        assert_eq!(history.check_tool_protocol(), Ok(()), "agent {}", req.agent);
    }
}

#[test]
fn a_depth_three_tree_completes_with_its_shape_and_answer() {
    block_on_paused(async {
        let model = tree_model(three_levels);
        let convo = Orchestrator::start(tree_agents(&model));
        let start = Instant::now();
        convo.send_user("bees").await.unwrap();
        convo.settled().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(100),
            "all four fetchers ran at once"
        );
        let tree = convo.tree();
        assert_eq!(
            tree.shape(),
            "lead(researcher(fetcher, fetcher), researcher(fetcher, fetcher))"
        );
        assert!(tree
            .walk()
            .iter()
            .all(|(_, n)| n.record.status == TaskStatus::Succeeded));
        assert_eq!(
            convo.history().await.unwrap().last_assistant_text(),
            Some(
                "[[fetcher on bees/0/0 | fetcher on bees/0/1] | [fetcher on bees/1/0 | fetcher on bees/1/1]]"
            )
        );
        assert!(
            tree.render()
                .contains("task-3 fetcher [succeeded] attempts=1"),
            "{}",
            tree.render()
        );
        assert!(convo.tokens_used() > 0);
        assert_all_histories_valid(&model);
    });
}

#[test]
fn a_leaf_that_fails_twice_is_retried_and_the_parent_gets_one_result() {
    block_on_paused(async {
        let model = ScriptedModel::new()
            .script(
                "lead",
                [
                    ScriptedTurn::call("create_task", json!({"agent": "leaf", "prompt": "x"})),
                    ScriptedTurn::text("delegated"),
                    ScriptedTurn::text("got it"),
                ],
            )
            .script(
                "leaf",
                [
                    ScriptedTurn::fail("flaky 1"),
                    ScriptedTurn::fail("flaky 2"),
                    ScriptedTurn::text("leaf result"),
                ],
            );
        let leaf = Agent::builder("leaf").model(model.clone()).build();
        let lead = Agent::builder("lead")
            .model(model.clone())
            .delegates_to([leaf])
            .supervision(Supervision::retry(3).backoff_ms(200))
            .build();
        let convo = Orchestrator::start(lead);
        let mut events = convo.subscribe();
        let start = Instant::now();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(200 + 400),
            "backoff doubles"
        );
        let record = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!(record.status, TaskStatus::Succeeded);
        assert_eq!(record.attempts, 3);
        let history = convo.history().await.unwrap();
        let results: Vec<_> = history
            .messages()
            .iter()
            .filter(|m| matches!(m, Message::TaskResult { .. }))
            .collect();
        assert_eq!(results.len(), 1);
        assert_eq!(
            results[0].text().unwrap(),
            "[task task-1 from leaf succeeded]\nleaf result"
        );
        let retries: Vec<(u32, u64)> = drain(&mut events)
            .into_iter()
            .filter_map(|e| match e.event {
                Event::TaskRetrying {
                    attempt,
                    backoff_ms,
                    ..
                } => Some((attempt, backoff_ms)),
                _ => None,
            })
            .collect();
        assert_eq!(retries, [(1, 200), (2, 400)]);
    });
}

#[test]
fn a_hanging_leaf_times_out_and_the_parent_is_told() {
    block_on_paused(async {
        let model = ScriptedModel::new()
            .script(
                "lead",
                [
                    ScriptedTurn::call("create_task", json!({"agent": "leaf", "prompt": "x"})),
                    ScriptedTurn::text("delegated"),
                    ScriptedTurn::text("it timed out"),
                ],
            )
            .script("leaf", [ScriptedTurn::hang()]);
        let leaf = Agent::builder("leaf").model(model.clone()).build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([leaf])
            .supervision(Supervision::none().timeout_s(5))
            .build();
        let convo = Orchestrator::start(lead);
        let start = Instant::now();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(
            convo.check_task(TaskId::new(1)).unwrap().status,
            TaskStatus::TimedOut
        );
        let texts = texts(&convo.history().await.unwrap());
        assert!(texts
            .contains(&"[task task-1 from leaf timed_out]\nno result within 5000 ms".to_owned()));
        assert_eq!(convo.live_agents(), 1, "the timed-out worker is gone");
    });
}

#[test]
fn cancelling_a_middle_node_cancels_its_subtree_and_nothing_else() {
    block_on_paused(async {
        // The researchers' fetchers take 100 ms; the first branch's fetchers hang.
        let model = tree_model(three_levels);
        let hang =
            ScriptedModel::new().script("fetcher", [ScriptedTurn::hang(), ScriptedTurn::hang()]);
        let slow_fetcher = Agent::builder("fetcher").model(hang).build();
        let fetcher = Agent::builder("fetcher").model(model.clone()).build();
        let stuck = Agent::builder("researcher")
            .model(model.clone())
            .delegates_to([slow_fetcher])
            .build();
        let fine = Agent::builder("fine")
            .model(model.clone())
            .delegates_to([fetcher])
            .build();
        let lead_model = ScriptedModel::new().script(
            "lead",
            [
                ScriptedTurn::call("create_task", json!({"agent": "researcher", "prompt": "a"}))
                    .and_call("create_task", json!({"agent": "fine", "prompt": "b"})),
                ScriptedTurn::text("delegated"),
                ScriptedTurn::text("one branch was cancelled"),
                ScriptedTurn::text("the other finished"),
            ],
        );
        let lead = Agent::builder("lead")
            .model(lead_model)
            .delegates_to([stuck, fine])
            .build();
        let convo = Orchestrator::start(lead);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // task-1: researcher (its fetchers hang); task-2: fine.
        let before = convo.tree();
        assert_eq!(
            before.shape(),
            "lead(researcher(fetcher, fetcher), fine(fetcher, fetcher))"
        );
        assert_eq!(
            convo.cancel_task(TaskId::new(1)).await,
            Ok(TaskStatus::Cancelled)
        );
        // The subtree reads cancelled as soon as the cancel returns, before
        // its workers have stopped.
        for r in convo.registry().children_of(Some(TaskId::new(1))) {
            assert_eq!(r.status, TaskStatus::Cancelled, "{}", convo.tree().render());
        }
        convo.settled().await.unwrap();
        for (_, node) in convo.tree().walk() {
            let r = &node.record;
            let in_cancelled_branch = r.id == TaskId::new(1) || r.parent == Some(TaskId::new(1));
            let expected = if in_cancelled_branch {
                TaskStatus::Cancelled
            } else {
                TaskStatus::Succeeded
            };
            assert_eq!(r.status, expected, "{}", convo.tree().render());
        }
        assert_eq!(convo.live_agents(), 1);
        assert_all_histories_valid(&model);
        assert_eq!(convo.history().await.unwrap().check_tool_protocol(), Ok(()));
    });
}

fn budget_events(events: &[baton::EventEnvelope]) -> Vec<BudgetExceeded> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::BudgetExceeded { budget, .. } => Some(*budget),
            _ => None,
        })
        .collect()
}

#[test]
fn depth_and_children_budgets_refuse_with_a_tool_error_and_an_event() {
    block_on_paused(async {
        let model = ScriptedModel::new()
            .script(
                "lead",
                [
                    ScriptedTurn::call(
                        "create_task",
                        json!({"agent": "researcher", "prompt": "a"}),
                    )
                    .and_call("create_task", json!({"agent": "researcher", "prompt": "b"})),
                    ScriptedTurn::text("one refused"),
                    ScriptedTurn::text("done"),
                ],
            )
            .script(
                "researcher",
                [
                    ScriptedTurn::call(
                        "create_task",
                        json!({"agent": "fetcher", "prompt": "deeper"}),
                    ),
                    ScriptedTurn::text("could not go deeper"),
                ],
            )
            .recording();
        let fetcher = Agent::builder("fetcher").model(model.clone()).build();
        let researcher = Agent::builder("researcher")
            .model(model.clone())
            .delegates_to([fetcher])
            .build();
        let lead = Agent::builder("lead")
            .model(model.clone())
            .delegates_to([researcher])
            .limits(Limits {
                max_depth: 1,
                max_children: 1,
                ..Limits::default()
            })
            .build();
        let convo = Orchestrator::start(lead);
        let mut events = convo.subscribe();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        let errors = tool_errors(&convo.history().await.unwrap());
        assert_eq!(
            errors,
            ["error: the budget of 1 tasks per agent is used up"]
        );
        let researcher_saw = model
            .requests()
            .into_iter()
            .filter(|r| r.agent.as_str() == "researcher")
            .last()
            .unwrap();
        let errors = tool_errors(&baton::History::from(researcher_saw.messages.to_vec()));
        assert_eq!(
            errors,
            ["error: the delegation depth budget is 1: this agent may not delegate further"]
        );
        assert_eq!(
            budget_events(&drain(&mut events)),
            [
                BudgetExceeded::Children { limit: 1 },
                BudgetExceeded::Depth { limit: 1 }
            ]
        );
        assert_eq!(convo.tree().shape(), "lead(researcher)");
    });
}

#[test]
fn the_concurrency_budget_queues_excess_tasks_as_pending() {
    block_on_paused(async {
        let turn = ScriptedTurn::calls(
            "deep_research",
            (0..5).map(|i| json!({ "topic": format!("t{i}") })),
        );
        let model = ScriptedModel::new().script(
            "lead",
            [
                turn,
                ScriptedTurn::text("started"),
                ScriptedTurn::text("r"),
                ScriptedTurn::text("r"),
                ScriptedTurn::text("r"),
                ScriptedTurn::text("r"),
                ScriptedTurn::text("r"),
            ],
        );
        let lead = Agent::builder("lead")
            .model(model)
            .background_tool(DeepResearch { secs: 1 })
            .limits(Limits {
                max_concurrent: 2,
                ..Limits::default()
            })
            .build();
        let convo = Orchestrator::start(lead);
        let start = Instant::now();
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let statuses: Vec<TaskStatus> = convo.tasks().iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                TaskStatus::Running,
                TaskStatus::Running,
                TaskStatus::Pending,
                TaskStatus::Pending,
                TaskStatus::Pending
            ]
        );
        convo.settled().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3),
            "five 1 s tasks, two at a time"
        );
        assert!(convo
            .tasks()
            .iter()
            .all(|r| r.status == TaskStatus::Succeeded));
    });
}

#[test]
fn the_concurrency_budget_does_not_deadlock_a_tree_deeper_than_it_is_wide() {
    block_on_paused(async {
        let model = tree_model(three_levels);
        let fetcher = Agent::builder("fetcher").model(model.clone()).build();
        let researcher = Agent::builder("researcher")
            .model(model.clone())
            .delegates_to([fetcher])
            .build();
        let lead = Agent::builder("lead")
            .model(model.clone())
            .delegates_to([researcher])
            .limits(Limits {
                max_concurrent: 2,
                ..Limits::default()
            })
            .build();
        let convo = Orchestrator::start(lead);
        convo.send_user("bees").await.unwrap();
        convo.settled().await.unwrap();
        assert_eq!(convo.tasks().len(), 6);
        assert!(convo
            .tasks()
            .iter()
            .all(|r| r.status == TaskStatus::Succeeded));
    });
}

#[test]
fn the_token_budget_stops_further_turns() {
    block_on_paused(async {
        let model = ScriptedModel::new().script(
            "lead",
            [
                ScriptedTurn::text("first").with_usage(15, 10),
                ScriptedTurn::text("never sent"),
            ],
        );
        let lead = Agent::builder("lead")
            .model(model.clone())
            .limits(Limits {
                max_tokens: 20,
                ..Limits::default()
            })
            .build();
        let convo = Orchestrator::start(lead);
        let mut events = convo.subscribe();
        convo.send_user("one").await.unwrap();
        convo.settled().await.unwrap();
        convo.send_user("two").await.unwrap();
        convo.settled().await.unwrap();
        let events = drain(&mut events);
        assert_eq!(
            budget_events(&events),
            [BudgetExceeded::Tokens {
                limit: 20,
                used: 25
            }]
        );
        assert!(matches!(
            matching(&events, |e| matches!(e, Event::TurnFailed { .. }))[0].event,
            Event::TurnFailed { turn: 2, .. }
        ));
        assert_eq!(model.served("lead"), 1, "the second request was never sent");
        let texts = texts(&convo.history().await.unwrap());
        assert_eq!(texts, ["one", "first", "two"], "the input is kept");
    });
}

#[test]
fn two_approvals_wait_while_a_third_branch_finishes() {
    block_on_paused(async {
        let model = ScriptedModel::from_fn(|req: &ChatRequest| match req.agent.as_str() {
            "lead" => match req.messages.last() {
                Some(Message::User { .. }) => {
                    ScriptedTurn::call("create_task", json!({"agent": "writer", "prompt": "w1"}))
                        .and_call("create_task", json!({"agent": "writer", "prompt": "w2"}))
                        .and_call("create_task", json!({"agent": "reader", "prompt": "r"}))
                }
                _ => ScriptedTurn::text("noted"),
            },
            other => ScriptedTurn::text(format!("{other} done")).after(Duration::from_secs(1)),
        });
        let writer = Agent::builder("writer").model(model.clone()).build();
        let reader = Agent::builder("reader").model(model.clone()).build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([writer, reader])
            .require_approval("writer")
            .build();
        let convo = Orchestrator::start(lead);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let status = |n: u64| convo.check_task(TaskId::new(n)).unwrap().status;
        assert_eq!(status(1), TaskStatus::AwaitingApproval);
        assert_eq!(status(2), TaskStatus::AwaitingApproval);
        assert_eq!(status(3), TaskStatus::Succeeded);
        // Approved: the sub-agent is starting (it runs from its first turn on).
        assert_eq!(convo.approve(TaskId::new(1)).await, Ok(TaskStatus::Pending));
        assert_eq!(
            convo.reject(TaskId::new(2), "not now").await,
            Ok(TaskStatus::Failed)
        );
        assert!(
            convo.approve(TaskId::new(2)).await.is_err(),
            "decided already"
        );
        convo.settled().await.unwrap();
        assert_eq!(status(1), TaskStatus::Succeeded);
        assert_eq!(
            convo.check_task(TaskId::new(2)).unwrap().outcome,
            Some(TaskOutcome::Failed {
                error: "rejected: not now".into()
            })
        );
    });
}

#[test]
fn background_tools_are_supervised_too() {
    block_on_paused(async {
        let calls = Arc::new(AtomicU32::new(0));
        let model = ScriptedModel::new().script(
            "lead",
            [
                ScriptedTurn::call("flaky", json!({})),
                ScriptedTurn::text("started"),
                ScriptedTurn::text("done"),
            ],
        );
        let lead = Agent::builder("lead")
            .model(model)
            .background_tool(Flaky {
                calls: Arc::clone(&calls),
                failures: 2,
                takes: Duration::ZERO,
            })
            .supervision(Supervision::retry(2).backoff_ms(10))
            .build();
        let convo = Orchestrator::start(lead);
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let record = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!((record.status, record.attempts), (TaskStatus::Succeeded, 3));
    });
}

#[test]
fn after_shutdown_no_actor_or_task_remains() {
    block_on_paused(async {
        let model = tree_model(three_levels);
        let hang = ScriptedModel::new().script("fetcher", (0..4).map(|_| ScriptedTurn::hang()));
        let fetcher = Agent::builder("fetcher").model(hang).build();
        let researcher = Agent::builder("researcher")
            .model(model.clone())
            .delegates_to([fetcher])
            .build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([researcher])
            .build();
        let convo = Orchestrator::start(lead);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(convo.live_agents(), 7);
        assert_eq!(convo.registry().running_count(), 6);
        convo.shutdown().await.unwrap();
        assert_eq!(convo.live_agents(), 0);
        assert_eq!(convo.registry().running_count(), 0);
        assert!(convo
            .tasks()
            .iter()
            .all(|r| r.status == TaskStatus::Cancelled));
    });
}

/// A tool that records which thread it ran on.
struct WhereAmI {
    threads: Arc<std::sync::Mutex<std::collections::HashSet<std::thread::ThreadId>>>,
}

impl Tool for WhereAmI {
    type Args = NoArgs;
    fn name(&self) -> &str {
        "where_am_i"
    }
    fn description(&self) -> &str {
        "Records the thread it runs on."
    }
    async fn call(&self, _args: NoArgs) -> Result<ToolOutput, ToolError> {
        self.threads
            .lock()
            .map_err(|e| ToolError::Failed(e.to_string()))?
            .insert(std::thread::current().id());
        Ok("here".into())
    }
}

#[test]
fn workers_are_spread_over_the_arbiter_pool() {
    // Real threads, so a real clock; nothing here depends on timing.
    actix_rt::System::new().block_on(async {
        let threads = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let model = ScriptedModel::from_fn(|req: &ChatRequest| {
            match (req.agent.as_str(), req.messages.last()) {
                ("lead", Some(Message::User { .. })) => ScriptedTurn::calls(
                    "create_task",
                    (0..4).map(|i| json!({"agent": "w", "prompt": i.to_string()})),
                ),
                ("w", Some(Message::User { .. })) => ScriptedTurn::call("where_am_i", json!({})),
                _ => ScriptedTurn::text("ok"),
            }
        });
        let worker = Agent::builder("w")
            .model(model.clone())
            .tool(WhereAmI {
                threads: Arc::clone(&threads),
            })
            .build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([worker])
            .build();
        let convo = Orchestrator::builder(lead).worker_threads(2).spawn();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        assert!(convo
            .tasks()
            .iter()
            .all(|r| r.status == TaskStatus::Succeeded));
        let seen = threads.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "four workers round-robin over two arbiters");
        assert!(!seen.contains(&std::thread::current().id()));
        convo.shutdown().await.unwrap();
    });
}

/// A model whose `complete` itself panics on its first `panics` calls.
struct PanicsAtFirst {
    calls: AtomicU32,
    panics: u32,
}

impl baton::ChatModel for PanicsAtFirst {
    fn name(&self) -> &str {
        "panics-at-first"
    }

    fn complete(
        &self,
        _request: ChatRequest,
    ) -> futures::future::BoxFuture<'static, Result<baton::ChatResponse, baton::LlmError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(n > self.panics, "worker crashed on call {n}");
        Box::pin(async move {
            Ok(baton::ChatResponse {
                content: Some(format!("survived on call {n}")),
                ..Default::default()
            })
        })
    }
}

#[test]
fn a_panicking_worker_is_replaced_and_its_task_retried() {
    block_on_paused(async {
        let lead_model = ScriptedModel::new().script(
            "lead",
            [
                ScriptedTurn::call("create_task", json!({"agent": "crashy", "prompt": "x"})),
                ScriptedTurn::text("delegated"),
                ScriptedTurn::text("done"),
            ],
        );
        let crashy = Agent::builder("crashy")
            .model(PanicsAtFirst {
                calls: AtomicU32::new(0),
                panics: 1,
            })
            .build();
        let lead = Agent::builder("lead")
            .model(lead_model)
            .delegates_to([crashy])
            .supervision(Supervision::retry(1).backoff_ms(50))
            .build();
        let convo = Orchestrator::start(lead);
        let mut events = convo.subscribe();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        let record = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!((record.status, record.attempts), (TaskStatus::Succeeded, 2));
        assert_eq!(
            record.outcome,
            Some(TaskOutcome::Succeeded {
                output: "survived on call 2".into()
            })
        );
        let retried = drain(&mut events)
            .into_iter()
            .find_map(|e| match e.event {
                Event::TaskRetrying { error, .. } => Some(error),
                _ => None,
            })
            .unwrap();
        assert!(
            retried.contains("panicked") && retried.contains("worker crashed on call 1"),
            "{retried}"
        );
    });
}

/// Runs "remote" tasks as timers in this process: enough to check the
/// runtime's side of the remote-executor contract.
#[derive(Default)]
struct TimerExecutor {
    cancelled: std::sync::Mutex<Vec<TaskId>>,
}

impl baton::runtime::RemoteExecutor for TimerExecutor {
    fn dispatch(
        &self,
        task: baton::runtime::RemoteTask,
        report: actix::Recipient<baton::runtime::messages::TaskFinished>,
    ) {
        let secs: u64 = task.prompt.parse().unwrap_or(1);
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            report.do_send(baton::runtime::messages::TaskFinished {
                task_id: task.task_id,
                attempt: task.attempt,
                outcome: TaskOutcome::Succeeded {
                    output: format!("{} ran remotely", task.agent),
                },
            });
        });
    }

    fn cancel(&self, task_id: TaskId) {
        self.cancelled.lock().unwrap().push(task_id);
    }
}

#[test]
fn remote_sub_agents_report_like_local_ones_and_time_out_on_the_parent_clock() {
    block_on_paused(async {
        let executor = Arc::new(TimerExecutor::default());
        let model = ScriptedModel::new().script(
            "lead",
            [
                ScriptedTurn::call("create_task", json!({"agent": "far", "prompt": "2"}))
                    .and_call("create_task", json!({"agent": "far", "prompt": "60"}))
                    .and_call("create_task", json!({"agent": "near", "prompt": "x"})),
                ScriptedTurn::text("delegated"),
                ScriptedTurn::text("r"),
                ScriptedTurn::text("r"),
                ScriptedTurn::text("r"),
            ],
        );
        let far = Agent::builder("far").remote(executor.clone()).build();
        let near = Agent::builder("near")
            .model(ScriptedModel::new().script("near", [ScriptedTurn::text("ran here")]))
            .build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([far, near])
            .supervision(Supervision::none().timeout_s(10))
            .build();
        let convo = Orchestrator::start(lead);
        let start = Instant::now();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        let r = |n| convo.check_task(TaskId::new(n)).unwrap();
        assert_eq!(
            r(1).outcome,
            Some(TaskOutcome::Succeeded {
                output: "far ran remotely".into()
            })
        );
        assert_eq!(r(2).status, TaskStatus::TimedOut);
        assert_eq!(r(3).status, TaskStatus::Succeeded);
        assert_eq!(*executor.cancelled.lock().unwrap(), [TaskId::new(2)]);
        assert_eq!(convo.tree().shape(), "lead(far, far, near)");
    });
}

#[test]
fn a_remote_task_is_published_only_once_its_record_is_durable_even_if_the_journal_fails() {
    block_on_paused(async {
        let journal = Unreliable::new();
        let executor = Arc::new(Noting::new(&journal));
        let model = ScriptedModel::new().script(
            "lead",
            [
                ScriptedTurn::call("create_task", json!({"agent": "far", "prompt": "p"}))
                    .after(Duration::from_secs(1)),
                ScriptedTurn::text("delegated"),
                ScriptedTurn::text("done"),
            ],
        );
        let far = Agent::builder("far").remote(executor.clone()).build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([far])
            .build();
        let convo = durable(lead, &journal);
        convo.send_user("go").await.unwrap();
        // The journal fails from before the delegation (at 1 s) to 3 s.
        tokio::time::sleep(Duration::from_millis(500)).await;
        journal.go_down();
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert!(journal.refused() > 0);
        assert_eq!(
            convo.check_task(TaskId::new(1)).unwrap().status,
            TaskStatus::Running
        );
        journal.recover();
        // Tried at 1.2, 1.6 and 2.4 s (down), again at 4 s.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            executor.dispatched.lock().unwrap().is_empty(),
            "not published before its record is durable"
        );
        convo.settled().await.unwrap();
        assert_eq!(
            *executor.dispatched.lock().unwrap(),
            [(TaskId::new(1), true)],
            "published once, its creation durable by then"
        );
        assert_eq!(
            convo.check_task(TaskId::new(1)).unwrap().status,
            TaskStatus::Succeeded
        );
        let replay = baton::core::Replay::from_records(journal.durable());
        assert_eq!(replay.history, convo.history().await.unwrap().messages());
    });
}

/// A lead whose first reply delegates `n` subtasks to `leaf` in one go.
fn wide_model(n: usize, leaf: ScriptedTurn) -> ScriptedModel {
    let all = ScriptedTurn::calls(
        "create_task",
        (0..n).map(|i| json!({"agent": "leaf", "prompt": i.to_string()})),
    );
    ScriptedModel::from_fn(move |req: &ChatRequest| match req.agent.as_str() {
        "lead" => ScriptedTurn::text("ok"),
        _ => leaf.clone(),
    })
    .script("lead", [all])
}

fn wide_lead(model: &ScriptedModel) -> Agent {
    let leaf = Agent::builder("leaf").model(model.clone()).build();
    Agent::builder("lead")
        .model(model.clone())
        .delegates_to([leaf])
        .build()
}

#[test]
fn a_reply_with_many_calls_lets_its_first_workers_run_before_the_rest_is_dispatched() {
    block_on_paused(async {
        let n = 1_000;
        let model = wide_model(n, ScriptedTurn::text("done"));
        let convo = Orchestrator::builder(wide_lead(&model))
            .event_capacity(16 * n)
            .spawn();
        let mut events = convo.subscribe();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        let events = drain(&mut events);
        let position = |pred: &dyn Fn(&Event) -> bool| events.iter().position(|e| pred(&e.event));
        let first_finished =
            position(&|e| matches!(e, Event::TaskFinished { .. })).expect("a task finished");
        let last_created = events
            .iter()
            .rposition(|e| matches!(e.event, Event::TaskCreated { .. }))
            .expect("tasks were created");
        assert!(
            first_finished < last_created,
            "workers ran while the reply was still being dispatched \
             (first result at event {first_finished}, last task created at {last_created})"
        );
        let tasks = convo.tasks();
        assert_eq!(tasks.len(), n);
        assert!(tasks.iter().all(|r| r.status == TaskStatus::Succeeded));
        let history = convo.history().await.unwrap();
        assert_eq!(history.check_tool_protocol(), Ok(()));
        assert_eq!(
            results_in(&history),
            n,
            "every result joins the history once"
        );
        convo.shutdown().await.unwrap();
    });
}

#[test]
fn user_input_interrupts_a_reply_that_is_still_being_dispatched() {
    block_on_paused(async {
        let n = 1_000;
        let model = wide_model(n, ScriptedTurn::hang());
        let convo = Orchestrator::builder(wide_lead(&model))
            .input_policy(baton::runtime::InputPolicy::Interrupt)
            .event_capacity(16 * n)
            .spawn();
        let mut events = convo.subscribe();
        convo.send_user("go").await.unwrap();
        // The lead yields between batches of calls: speak at the first chance.
        wait_for(&mut events, |e| matches!(e, Event::TaskCreated { .. })).await;
        convo.send_user("stop, never mind").await.unwrap();
        // The leaves hang, so the conversation never settles: let it run on.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let created = convo.tasks().len();
        assert!(
            (1..n).contains(&created),
            "the calls after the interruption start nothing ({created} of {n} tasks created)"
        );
        let history = convo.history().await.unwrap();
        assert_eq!(
            history.check_tool_protocol(),
            Ok(()),
            "every call answered once"
        );
        let interrupted = tool_errors(&history)
            .iter()
            .filter(|e| e.contains("interrupted") || e.contains("user sent a new message"))
            .count();
        assert_eq!(
            interrupted,
            n - created,
            "the rest were answered as interrupted"
        );
        convo.shutdown().await.unwrap();
        assert_eq!(convo.live_agents(), 0);
    });
}

#[test]
fn a_cancelled_subtree_reads_cancelled_before_its_workers_have_stopped() {
    // Real threads: the only arbiter is held still by a tool, so the middle
    // worker cannot handle its shutdown while the test looks at the tree.
    actix_rt::System::new().block_on(async {
        let (hold, holding, release) = HoldThread::new();
        let convo = Orchestrator::builder(lead_over_a_held_mid(hold))
            .worker_threads(1)
            .spawn();
        convo.send_user("go").await.unwrap();
        held(holding).await;
        // task-1: mid (its arbiter is held); task-2: the leaf it created.
        assert_eq!(convo.registry().len(), 2);
        assert_eq!(
            convo.cancel_task(TaskId::new(1)).await,
            Ok(TaskStatus::Cancelled)
        );
        assert_eq!(
            convo.check_task(TaskId::new(2)).unwrap().status,
            TaskStatus::Cancelled,
            "the leaf is cancelled with its parent, though nothing on its arbiter has run"
        );
        drop(release);
        convo.settled().await.unwrap();
        convo.shutdown().await.unwrap();
    });
}

/// A lead that delegates to "mid", which delegates to a hanging "leaf"
/// and then holds its thread with `hold`.
fn lead_over_a_held_mid(hold: HoldThread) -> Agent {
    let model = ScriptedModel::from_fn(|req: &ChatRequest| {
        match (req.agent.as_str(), req.messages.last()) {
            ("lead", Some(Message::User { .. })) => {
                ScriptedTurn::call("create_task", json!({"agent": "mid", "prompt": "m"}))
            }
            ("mid", Some(Message::User { .. })) => {
                ScriptedTurn::call("create_task", json!({"agent": "leaf", "prompt": "l"}))
                    .and_call("hold_thread", json!({}))
            }
            ("leaf", _) => ScriptedTurn::hang(),
            _ => ScriptedTurn::text("ok"),
        }
    });
    let leaf = Agent::builder("leaf").model(model.clone()).build();
    let mid = Agent::builder("mid")
        .model(model.clone())
        .delegates_to([leaf])
        .tool(hold)
        .build();
    Agent::builder("lead")
        .model(model)
        .delegates_to([mid])
        .build()
}

/// How many `TaskFinished` records `journal` holds for task `id`.
fn ends_in(journal: &baton::core::MemoryJournal, id: u64) -> usize {
    journal
        .records()
        .iter()
        .filter(|r| matches!(r, baton::core::JournalRecord::TaskFinished { task_id, .. } if *task_id == TaskId::new(id)))
        .count()
}

/// `settled` waits for the ends of a cancelled subtree, which the
/// subtree's owners journal (each after its task's `TaskCreated`) as they
/// learn of the cancel: here the middle worker's thread is held, so the
/// leaf's end is not journaled until it is released, and `settled` does
/// not answer before. (Before, `settled` answered as soon as the
/// conversation was idle: the log could still lack the leaf's end.)
#[test]
fn settled_waits_until_the_owners_of_a_cancelled_subtree_have_journaled_its_ends() {
    block_on_paused(async {
        let (hold, holding, release) = HoldThread::new();
        let journal = baton::core::MemoryJournal::default();
        let convo = Orchestrator::builder(lead_over_a_held_mid(hold))
            .journal(Arc::new(journal.clone()))
            .worker_threads(1)
            .spawn();
        convo.send_user("go").await.unwrap();
        held(holding).await;
        assert_eq!(
            convo.cancel_task(TaskId::new(1)).await,
            Ok(TaskStatus::Cancelled)
        );
        let ends = |id: u64| ends_in(&journal, id);
        assert_eq!((ends(1), ends(2)), (1, 0), "the leaf's owner is held");
        // Virtual time runs on while the conversation waits for the held
        // thread: an hour passes, and `settled` has not answered.
        let early = tokio::time::timeout(Duration::from_secs(3600), convo.settled()).await;
        assert!(
            early.is_err(),
            "settled answered before the leaf's end was journaled"
        );
        drop(release);
        convo.settled().await.unwrap();
        assert_eq!((ends(1), ends(2)), (1, 1));
        let replay = baton::core::Replay::from_records(journal.records());
        let logged: Vec<(TaskId, TaskStatus)> =
            replay.tasks.iter().map(|(t, _)| (t.id, t.status)).collect();
        assert_eq!(
            logged,
            [
                (TaskId::new(1), TaskStatus::Cancelled),
                (TaskId::new(2), TaskStatus::Cancelled)
            ]
        );
        convo.shutdown().await.unwrap();
    });
}

/// A `settled` waiting for the ends of a cancelled subtree when the
/// conversation is shut down answers `Stopped`, not `Ok`: the leaf's owner
/// is held, its end is not in the log, and the conversation never settled.
/// (Before, the stop released the wait, and `settled` answered `Ok` with
/// the leaf's end missing from the log.)
#[test]
fn settled_waiting_for_a_cancelled_subtree_answers_stopped_when_the_conversation_stops() {
    block_on_paused(async {
        let (hold, holding, release) = HoldThread::new();
        let journal = baton::core::MemoryJournal::default();
        let convo = Orchestrator::builder(lead_over_a_held_mid(hold))
            .journal(Arc::new(journal.clone()))
            .worker_threads(1)
            .spawn();
        convo.send_user("go").await.unwrap();
        held(holding).await;
        assert_eq!(
            convo.cancel_task(TaskId::new(1)).await,
            Ok(TaskStatus::Cancelled)
        );
        let c = convo.clone();
        let settled = tokio::spawn(async move { c.settled().await });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!settled.is_finished(), "the leaf's owner is held");
        let c = convo.clone();
        let shutdown = tokio::spawn(async move { c.shutdown().await });
        // The conversation stops; its held worker does not, yet.
        let answer = tokio::time::timeout(Duration::from_secs(10), settled)
            .await
            .expect("settled answers once the conversation has stopped")
            .unwrap();
        assert_eq!(ends_in(&journal, 2), 0, "the leaf's end is not in the log");
        assert_eq!(answer, Err(baton::RuntimeError::Stopped));
        drop(release);
        shutdown.await.unwrap().unwrap();
        assert_eq!(convo.live_agents(), 0);
    });
}

/// A task's id, status and outcome.
type Facts = (TaskId, TaskStatus, Option<TaskOutcome>);

/// Each task's facts, from the log's replay and from the live registry.
fn logged_and_live(journal: &Unreliable, convo: &baton::Conversation) -> (Vec<Facts>, Vec<Facts>) {
    let facts = |t: &baton::core::TaskRecord| (t.id, t.status, t.outcome.clone());
    let replay = baton::core::Replay::from_records(journal.durable());
    (
        replay.tasks.iter().map(|(t, _)| facts(t)).collect(),
        convo.tasks().iter().map(facts).collect(),
    )
}

/// How many `TaskFinished` records the log holds for `id`.
fn finishes(journal: &Unreliable, id: TaskId) -> usize {
    journal
        .durable()
        .iter()
        .filter(|r| matches!(r, baton::core::JournalRecord::TaskFinished { task_id, .. } if *task_id == id))
        .count()
}

/// A lead that runs one 1 s research task and then answers "done".
fn researching_lead() -> Agent {
    let model = ScriptedModel::from_fn(|req: &ChatRequest| match req.messages.last() {
        Some(Message::User { .. }) => ScriptedTurn::call("deep_research", json!({"topic": "x"})),
        Some(Message::TaskResult { .. }) => ScriptedTurn::text("done"),
        _ => ScriptedTurn::text("started"),
    });
    Agent::builder("lead")
        .model(model)
        .background_tool(DeepResearch { secs: 1 })
        .build()
}

#[test]
fn a_cancel_between_a_tasks_end_and_its_fold_finds_it_finished() {
    block_on_paused(async {
        let journal = Unreliable::new();
        let convo = durable(researching_lead(), &journal);
        let mut events = convo.subscribe();
        convo.send_user("go").await.unwrap();
        // The task ends at 1 s; its record is held back from 0.5 s.
        tokio::time::sleep(Duration::from_millis(500)).await;
        journal.hold();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let id = TaskId::new(1);
        assert_eq!(
            convo.cancel_task(id).await,
            Ok(TaskStatus::Succeeded),
            "already finished"
        );
        journal.release();
        convo.settled().await.unwrap();
        let record = convo.check_task(id).unwrap();
        assert_eq!(record.status, TaskStatus::Succeeded);
        let (logged, live) = logged_and_live(&journal, &convo);
        assert_eq!(logged, live);
        assert_eq!(finishes(&journal, id), 1);
        let history = convo.history().await.unwrap();
        let results: Vec<_> = history
            .messages()
            .iter()
            .filter_map(|m| match m {
                Message::TaskResult { outcome, .. } => Some(outcome.status_word()),
                _ => None,
            })
            .collect();
        assert_eq!(results, ["succeeded"], "the model hears of it once");
        let ended: Vec<_> = drain(&mut events)
            .into_iter()
            .filter_map(|e| match e.event {
                Event::TaskFinished { outcome, .. } => Some(outcome.status_word()),
                _ => None,
            })
            .collect();
        assert_eq!(ended, ["succeeded"]);
    });
}

#[test]
fn a_subtree_cancelled_while_a_result_below_is_on_its_way_keeps_that_result() {
    block_on_paused(async {
        // The lead delegates to "mid", which runs one 1 s research task.
        let model = ScriptedModel::from_fn(|req: &ChatRequest| {
            match (req.agent.as_str(), req.messages.last()) {
                ("lead", Some(Message::User { .. })) => {
                    ScriptedTurn::call("create_task", json!({"agent": "mid", "prompt": "p"}))
                }
                ("mid", Some(Message::User { .. })) => {
                    ScriptedTurn::call("deep_research", json!({"topic": "x"}))
                }
                _ => ScriptedTurn::text("ok"),
            }
        });
        let mid = Agent::builder("mid")
            .model(model.clone())
            .background_tool(DeepResearch { secs: 1 })
            .build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([mid])
            .build();
        let journal = Unreliable::new();
        let convo = durable(lead, &journal);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        journal.hold();
        // The research (task 2) ended at 1 s, its record held back; then
        // its parent (task 1) is cancelled with its subtree.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            convo.cancel_task(TaskId::new(1)).await,
            Ok(TaskStatus::Cancelled)
        );
        journal.release();
        convo.settled().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = |n| convo.check_task(TaskId::new(n)).unwrap().status;
        assert_eq!(
            (status(1), status(2)),
            (TaskStatus::Cancelled, TaskStatus::Succeeded)
        );
        let (logged, live) = logged_and_live(&journal, &convo);
        assert_eq!(logged, live);
        assert_eq!(finishes(&journal, TaskId::new(2)), 1);
    });
}

#[test]
fn a_shutdown_between_a_tasks_end_and_its_fold_records_its_real_outcome() {
    block_on_paused(async {
        let journal = Unreliable::new();
        let convo = durable(researching_lead(), &journal);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        journal.hold();
        tokio::time::sleep(Duration::from_secs(1)).await;
        convo.shutdown().await.unwrap();
        journal.release();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let id = TaskId::new(1);
        assert_eq!(convo.check_task(id).unwrap().status, TaskStatus::Succeeded);
        let (logged, live) = logged_and_live(&journal, &convo);
        assert_eq!(logged, live);
        assert_eq!(finishes(&journal, id), 1);
        // Resumed, the conversation folds the result it had not folded.
        let replay = baton::core::Replay::from_records(journal.durable());
        assert_eq!(
            replay.pending_inputs.len(),
            1,
            "{:?}",
            replay.pending_inputs
        );
    });
}

//! The conversation actor end to end, on tokio's paused clock.

mod common;

use std::time::Duration;

use baton::runtime::virtual_time::block_on_paused;
use baton::{
    Agent, Event, InputPolicy, Message, Orchestrator, ScriptedModel, ScriptedTurn, TaskId,
    TaskOutcome, TaskStatus,
};
use common::*;
use serde_json::json;
use tokio::time::Instant;

const CITIES: [&str; 5] = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo"];

#[test]
fn five_weather_lookups_in_one_turn_finish_at_one_virtual_second() {
    let elapsed = block_on_paused(async {
        let mut turn = ScriptedTurn::call("get_weather", json!({"city": CITIES[0]}));
        for city in &CITIES[1..] {
            turn = turn.and_call("get_weather", json!({ "city": city }));
        }
        let model =
            ScriptedModel::new().script("assistant", [turn, ScriptedTurn::text("All sunny.")]);
        let convo = Orchestrator::start(
            Agent::builder("assistant")
                .model(model)
                .tool(GetWeather)
                .build(),
        );
        let start = Instant::now();
        convo.send_user("Weather in five cities?").await.unwrap();
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        assert_eq!(history.check_tool_protocol(), Ok(()));
        let answers: Vec<_> = history
            .messages()
            .iter()
            .filter(|m| matches!(m, Message::Tool { .. }))
            .filter_map(Message::text)
            .collect();
        assert_eq!(
            answers,
            CITIES
                .iter()
                .map(|c| format!("sunny in {c}"))
                .collect::<Vec<_>>()
        );
        assert_eq!(history.last_assistant_text(), Some("All sunny."));
        start.elapsed()
    });
    assert_eq!(elapsed, Duration::from_secs(1));
}

#[test]
fn five_weather_lookups_one_per_turn_take_five_virtual_seconds() {
    let elapsed = block_on_paused(async {
        let mut script: Vec<_> = CITIES
            .iter()
            .map(|c| ScriptedTurn::call("get_weather", json!({ "city": c })))
            .collect();
        script.push(ScriptedTurn::text("All sunny."));
        let model = ScriptedModel::new().script("assistant", script);
        let convo = Orchestrator::start(
            Agent::builder("assistant")
                .model(model)
                .tool(GetWeather)
                .build(),
        );
        let start = Instant::now();
        convo
            .send_user("Weather in five cities, one by one?")
            .await
            .unwrap();
        convo.settled().await.unwrap();
        start.elapsed()
    });
    assert_eq!(elapsed, Duration::from_secs(5));
}

#[test]
fn user_input_during_a_model_turn_is_kept_and_follows_that_turn() {
    block_on_paused(async {
        let model = ScriptedModel::new().script(
            "assistant",
            [
                ScriptedTurn::text("first answer").after(Duration::from_secs(2)),
                ScriptedTurn::text("second answer"),
            ],
        );
        let convo = Orchestrator::start(Agent::builder("assistant").model(model).build());
        convo.send_user("one").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        convo.send_user("two").await.unwrap();
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        assert_eq!(
            texts(&history),
            ["one", "first answer", "two", "second answer"]
        );
    });
}

#[test]
fn a_task_result_arriving_during_a_turn_is_folded_after_it() {
    block_on_paused(async {
        let model = ScriptedModel::new().script(
            "assistant",
            [
                ScriptedTurn::call("deep_research", json!({"topic": "bees"})),
                ScriptedTurn::text("started research"),
                // The user's second question; the research lands while this
                // (slow) turn is in flight.
                ScriptedTurn::text("answer to chat").after(Duration::from_secs(3)),
                ScriptedTurn::text("research is in"),
            ],
        );
        let agent = Agent::builder("assistant")
            .model(model)
            .background_tool(DeepResearch { secs: 2 })
            .build();
        let convo = Orchestrator::start(agent);
        convo.send_user("research bees").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        convo.send_user("meanwhile, hi").await.unwrap();
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        assert_eq!(history.check_tool_protocol(), Ok(()));
        let t = texts(&history);
        assert_eq!(t[0], "research bees");
        assert_eq!(t[1], r#"{"status":"running","task_id":"task-1"}"#);
        assert_eq!(
            &t[2..5],
            ["started research", "meanwhile, hi", "answer to chat"]
        );
        assert_eq!(
            t[5],
            "[task task-1 from deep_research succeeded]\nreport on bees"
        );
        assert_eq!(t[6], "research is in");
        assert_eq!(t.len(), 7);
    });
}

#[test]
fn check_task_answers_while_a_model_turn_is_in_flight() {
    block_on_paused(async {
        let model = ScriptedModel::new().script(
            "assistant",
            [
                ScriptedTurn::call("deep_research", json!({"topic": "ants"})),
                ScriptedTurn::hang(),
            ],
        );
        let agent = Agent::builder("assistant")
            .model(model)
            .background_tool(DeepResearch { secs: 10 })
            .build();
        let convo = Orchestrator::start(agent);
        let mut events = convo.subscribe();
        convo.send_user("research ants").await.unwrap();
        // Wait until the second model turn (the one that hangs) has started.
        loop {
            let e = events.recv().await.unwrap();
            if matches!(e.event, Event::TurnStarted { turn: 2, .. }) {
                break;
            }
        }
        let record = convo.check_task(TaskId::new(1)).expect("task exists");
        assert_eq!(record.status, TaskStatus::Running);
        tokio::time::sleep(Duration::from_secs(11)).await;
        let record = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!(record.status, TaskStatus::Succeeded);
        assert_eq!(
            record.outcome,
            Some(TaskOutcome::Succeeded {
                output: "report on ants".into()
            })
        );
    });
}

#[test]
fn the_model_can_check_and_cancel_its_tasks() {
    block_on_paused(async {
        let model = ScriptedModel::new()
            .script(
                "assistant",
                [
                    ScriptedTurn::call("deep_research", json!({"topic": "a"})),
                    ScriptedTurn::call("check_task", json!({"task_id": "task-1"}))
                        .and_call("check_all_tasks", json!({}))
                        .and_call("cancel_task", json!({"task_id": "task-1"})),
                    ScriptedTurn::text("cancelled it"),
                ],
            )
            .recording();
        let agent = Agent::builder("assistant")
            .model(model.clone())
            .background_tool(DeepResearch { secs: 60 })
            .build();
        let convo = Orchestrator::start(agent);
        let start = Instant::now();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the task was stopped"
        );
        assert_eq!(
            convo.check_task(TaskId::new(1)).unwrap().status,
            TaskStatus::Cancelled
        );
        let history = convo.history().await.unwrap();
        let tool_answers: Vec<serde_json::Value> = history
            .messages()
            .iter()
            .filter_map(|m| match m {
                Message::Tool { content, .. } => serde_json::from_str(content).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(tool_answers[1]["status"], "running");
        assert_eq!(tool_answers[2][0]["task_id"], "task-1");
        assert_eq!(tool_answers[3]["status"], "cancelled");
        // The model saw every answer before its final reply.
        assert_eq!(model.requests().len(), 3);
        assert_eq!(history.last_assistant_text(), Some("cancelled it"));
    });
}

#[test]
fn cancelling_from_the_handle_stops_the_task_and_tells_the_model() {
    block_on_paused(async {
        let model = ScriptedModel::new().script(
            "assistant",
            [
                ScriptedTurn::call("deep_research", json!({"topic": "a"})),
                ScriptedTurn::text("working on it"),
                ScriptedTurn::text("ok, stopped"),
            ],
        );
        let agent = Agent::builder("assistant")
            .model(model)
            .background_tool(DeepResearch { secs: 60 })
            .build();
        let convo = Orchestrator::start(agent);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            convo.cancel_task(TaskId::new(1)).await,
            Ok(TaskStatus::Cancelled)
        );
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        let t = texts(&history);
        assert_eq!(
            t[t.len() - 2],
            "[task task-1 from deep_research cancelled]\ncancelled by the user"
        );
        assert_eq!(t[t.len() - 1], "ok, stopped");
        // Nothing arrives later: the task never reports.
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(convo.history().await.unwrap().len(), history.len());
        assert_eq!(
            convo.cancel_task(TaskId::new(9)).await,
            Err(baton::RuntimeError::UnknownTask(TaskId::new(9)))
        );
    });
}

#[test]
fn unknown_tools_and_bad_arguments_are_errors_the_model_sees() {
    block_on_paused(async {
        let model = ScriptedModel::new().script(
            "assistant",
            [
                ScriptedTurn::call("get_wether", json!({"city": "Paris"}))
                    .and_call("get_weather", json!({"town": "Paris"})),
                ScriptedTurn::call_raw("get_weather", "{not json"),
                ScriptedTurn::text("sorry"),
            ],
        );
        let convo = Orchestrator::start(
            Agent::builder("assistant")
                .model(model)
                .tool(GetWeather)
                .build(),
        );
        convo.send_user("weather?").await.unwrap();
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        assert_eq!(history.check_tool_protocol(), Ok(()));
        let errors = tool_errors(&history);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].contains("unknown tool `get_wether`") && errors[0].contains("get_weather")
        );
        assert!(
            errors[1].contains("invalid arguments for `get_weather`") && errors[1].contains("city")
        );
        assert!(errors[2].contains("invalid arguments"));
        assert_eq!(history.last_assistant_text(), Some("sorry"));
    });
}

#[test]
fn a_panicking_tool_gives_a_failed_result_and_the_conversation_goes_on() {
    block_on_paused(async {
        let model = ScriptedModel::new().script(
            "assistant",
            [
                ScriptedTurn::call("panicky", json!({})),
                ScriptedTurn::text("that failed"),
                ScriptedTurn::text("still here"),
            ],
        );
        let convo = Orchestrator::start(
            Agent::builder("assistant")
                .model(model)
                .tool(Panicky)
                .build(),
        );
        convo.send_user("try it").await.unwrap();
        convo.settled().await.unwrap();
        convo.send_user("are you alive?").await.unwrap();
        convo.settled().await.unwrap();
        let history = convo.history().await.unwrap();
        let t = texts(&history);
        assert!(t[1].contains("`panicky` panicked: tool exploded"), "{t:?}");
        assert_eq!(t.last().map(String::as_str), Some("still here"));
    });
}

#[test]
fn a_hung_inline_tool_times_out_as_an_error() {
    let elapsed = block_on_paused(async {
        let model = ScriptedModel::new().script(
            "assistant",
            [
                ScriptedTurn::call("forever", json!({})),
                ScriptedTurn::text("gave up"),
            ],
        );
        let agent = Agent::builder("assistant")
            .model(model)
            .tool(Forever)
            .tool_timeout(Duration::from_secs(5))
            .build();
        let convo = Orchestrator::start(agent);
        let start = Instant::now();
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        let t = texts(&convo.history().await.unwrap());
        assert_eq!(t[1], "error: `forever` timed out after 5000 ms");
        start.elapsed()
    });
    assert_eq!(elapsed, Duration::from_secs(5));
}

#[test]
fn a_delegated_task_runs_a_sub_agent_and_its_answer_joins_the_conversation() {
    block_on_paused(async {
        let model = ScriptedModel::new()
            .script(
                "lead",
                [
                    ScriptedTurn::call(
                        "create_task",
                        json!({"agent": "researcher", "prompt": "find X"}),
                    ),
                    ScriptedTurn::text("delegated"),
                    ScriptedTurn::text("X is 42"),
                ],
            )
            .script(
                "researcher",
                [
                    ScriptedTurn::call("get_weather", json!({"city": "Oslo"})),
                    ScriptedTurn::text("found: 42").after(Duration::from_secs(2)),
                ],
            )
            .recording();
        let researcher = Agent::builder("researcher")
            .model(model.clone())
            .system_prompt("You research.")
            .tool(GetWeather)
            .build();
        let lead = Agent::builder("lead")
            .model(model.clone())
            .delegates_to([researcher])
            .build();
        let convo = Orchestrator::start(lead);
        let mut events = convo.subscribe();
        convo.send_user("what is X?").await.unwrap();
        convo.settled().await.unwrap();
        let t = texts(&convo.history().await.unwrap());
        assert_eq!(t[3], "[task task-1 from researcher succeeded]\nfound: 42");
        assert_eq!(t[4], "X is 42");
        let record = convo.check_task(TaskId::new(1)).unwrap();
        assert_eq!(record.status, TaskStatus::Succeeded);
        // The researcher's own history began with its prompt and the task.
        let first_researcher_request = model
            .requests()
            .into_iter()
            .find(|r| r.agent.as_str() == "researcher")
            .unwrap();
        assert_eq!(
            texts(&baton::History::from(
                first_researcher_request.messages.to_vec()
            )),
            ["You research.", "find X"]
        );
        let events = drain(&mut events);
        let researcher_turns = matching(
            &events,
            |e| matches!(e, Event::TurnStarted { agent, task: Some(_), .. } if agent.as_str() == "researcher"),
        );
        assert_eq!(researcher_turns.len(), 2);
    });
}

#[test]
fn a_failing_or_panicking_worker_reports_a_failed_task() {
    block_on_paused(async {
        let model = ScriptedModel::new()
            .script(
                "lead",
                [
                    ScriptedTurn::call("create_task", json!({"agent": "flaky", "prompt": "a"}))
                        .and_call("create_task", json!({"agent": "crashy", "prompt": "b"})),
                    ScriptedTurn::text("delegated both"),
                    ScriptedTurn::text("one failed"),
                    ScriptedTurn::text("both failed"),
                ],
            )
            .script("flaky", [ScriptedTurn::fail("provider down")])
            .script(
                "crashy",
                [ScriptedTurn::panic("boom").after(Duration::from_secs(1))],
            );
        let flaky = Agent::builder("flaky").model(model.clone()).build();
        let crashy = Agent::builder("crashy").model(model.clone()).build();
        let lead = Agent::builder("lead")
            .model(model)
            .delegates_to([flaky, crashy])
            .build();
        let convo = Orchestrator::start(lead);
        convo.send_user("go").await.unwrap();
        convo.settled().await.unwrap();
        let records = convo.tasks();
        assert_eq!(records.len(), 2);
        assert!(
            records.iter().all(|r| r.status == TaskStatus::Failed),
            "{records:?}"
        );
        let t = texts(&convo.history().await.unwrap());
        assert!(t.iter().any(
            |m| m.starts_with("[task task-1 from flaky failed]") && m.contains("provider down")
        ));
        assert!(t
            .iter()
            .any(|m| m.starts_with("[task task-2 from crashy failed]") && m.contains("boom")));
        assert_eq!(t.last().map(String::as_str), Some("both failed"));
    });
}

#[test]
fn interrupt_policy_aborts_the_turn_and_restarts_with_the_new_input() {
    block_on_paused(async {
        let model = ScriptedModel::new()
            .script(
                "assistant",
                [
                    ScriptedTurn::text("slow answer").after(Duration::from_secs(10)),
                    ScriptedTurn::call("get_weather", json!({"city": "Oslo"})),
                    ScriptedTurn::text("answer to the third"),
                ],
            )
            .recording();
        let agent = Agent::builder("assistant")
            .model(model.clone())
            .tool(GetWeather)
            .build();
        let convo = Orchestrator::builder(agent)
            .input_policy(InputPolicy::Interrupt)
            .spawn();
        let mut events = convo.subscribe();
        let start = Instant::now();
        convo.send_user("first").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        convo.send_user("second").await.unwrap();
        // The second turn runs get_weather (1 s); interrupt it half-way.
        tokio::time::sleep(Duration::from_millis(500)).await;
        convo.send_user("third").await.unwrap();
        convo.settled().await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(3));
        let history = convo.history().await.unwrap();
        assert_eq!(history.check_tool_protocol(), Ok(()));
        let t = texts(&history);
        assert_eq!(t[0], "first");
        assert_eq!(t[1], "second");
        assert!(t[2].contains("interrupted"), "{t:?}");
        assert_eq!(&t[3..], ["third", "answer to the third"]);
        assert!(!t.iter().any(|m| m == "slow answer"));
        let interrupted = matching(&drain(&mut events), |e| {
            matches!(e, Event::TurnInterrupted { .. })
        });
        assert_eq!(interrupted.len(), 2);
    });
}

#[test]
fn shutdown_cancels_every_running_task() {
    block_on_paused(async {
        let model = ScriptedModel::new().script(
            "assistant",
            [
                ScriptedTurn::call("deep_research", json!({"topic": "a"}))
                    .and_call("deep_research", json!({"topic": "b"})),
                ScriptedTurn::text("working"),
            ],
        );
        let agent = Agent::builder("assistant")
            .model(model)
            .background_tool(DeepResearch { secs: 100 })
            .build();
        let convo = Orchestrator::start(agent);
        convo.send_user("go").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(convo.registry().running_count(), 2);
        convo.shutdown().await.unwrap();
        tokio::task::yield_now().await;
        assert_eq!(convo.registry().running_count(), 0);
        assert!(convo
            .tasks()
            .iter()
            .all(|r| r.status == TaskStatus::Cancelled));
        assert_eq!(
            convo.send_user("hello?").await,
            Err(baton::RuntimeError::Stopped)
        );
    });
}

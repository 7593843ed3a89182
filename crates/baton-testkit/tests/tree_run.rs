//! The tree test kit asserts what happened and fails clearly otherwise.

use std::time::Duration;

use baton_core::TaskStatus;
use baton_llm::{ScriptedModel, ScriptedTurn};
use baton_runtime::Agent;
use baton_testkit::TreeRun;
use serde_json::json;

fn two_level_tree() -> Agent {
    let model = ScriptedModel::new()
        .script(
            "lead",
            [
                ScriptedTurn::call("create_task", json!({"agent": "researcher", "prompt": "a"}))
                    .and_call("create_task", json!({"agent": "researcher", "prompt": "b"})),
                ScriptedTurn::text("delegated"),
                ScriptedTurn::text("one in"),
                ScriptedTurn::text("report"),
            ],
        )
        .script(
            "researcher",
            [
                ScriptedTurn::text("slow finding").after(Duration::from_secs(3)),
                ScriptedTurn::text("fast finding").after(Duration::from_secs(1)),
            ],
        );
    let researcher = Agent::builder("researcher").model(model.clone()).build();
    Agent::builder("lead")
        .model(model)
        .delegates_to([researcher])
        .build()
}

#[test]
fn a_run_reports_shape_statuses_answer_and_virtual_time() {
    let run = TreeRun::paused(two_level_tree(), ["go"]).unwrap();
    run.tree().assert_shape("lead(researcher, researcher)");
    run.tree().assert_all(TaskStatus::Succeeded);
    assert_eq!(run.tree().count(TaskStatus::Succeeded), 2);
    assert_eq!(run.elapsed(), Duration::from_secs(3));
    run.assert_finished_within(Duration::from_secs(3));
    assert_eq!(run.answer(), Some("report"));
    // The script's latencies set the order: the second task lands first.
    let finished: Vec<String> = run
        .events()
        .iter()
        .filter_map(|e| match &e.event {
            baton_core::Event::TaskFinished { task_id, .. } => Some(task_id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(finished, ["task-2", "task-1"]);
}

#[test]
#[should_panic(expected = "tree shape differs")]
fn a_wrong_shape_fails_with_the_tree() {
    TreeRun::paused(two_level_tree(), ["go"])
        .unwrap()
        .tree()
        .assert_shape("lead(researcher)");
}

#[test]
#[should_panic(expected = "more than 2s")]
fn a_slow_run_fails_the_time_limit() {
    TreeRun::paused(two_level_tree(), ["go"])
        .unwrap()
        .assert_finished_within(Duration::from_secs(2));
}

//! The built-in task tools that give a model its task handles:
//! `create_task`, `check_task`, `check_all_tasks` and `cancel_task`.
//!
//! This module parses their calls and answers the read-only ones straight
//! from the [`TaskRegistry`]; the actor carries out `create_task` and
//! `cancel_task`, which start and stop work.

use baton_core::tool::schema_for;
use baton_core::{AgentName, TaskId, TaskRegistry, ToolError, ToolSpec};
use schemars::JsonSchema;
use serde::Deserialize;

/// The name of the tool that delegates a subtask to a sub-agent.
pub const CREATE_TASK: &str = "create_task";
/// The name of the tool that reports one task.
pub const CHECK_TASK: &str = "check_task";
/// The name of the tool that reports every task of the caller.
pub const CHECK_ALL_TASKS: &str = "check_all_tasks";
/// The name of the tool that cancels a task.
pub const CANCEL_TASK: &str = "cancel_task";

/// Arguments of `create_task`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskArgs {
    /// The sub-agent to delegate to.
    pub agent: String,
    /// The subtask, as a self-contained instruction for the sub-agent.
    pub prompt: String,
}

/// `create_task`'s arguments as parsed on the delegation path: both are
/// borrowed from the call's text where it has no escapes, the agent name
/// becomes the delegate's own shared name and the prompt is copied once,
/// into the task. [`CreateTaskArgs`] is the schema the model sees.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTaskCall<'a> {
    #[serde(borrow)]
    agent: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    prompt: std::borrow::Cow<'a, str>,
}

/// Arguments of `check_task` and `cancel_task`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskIdArgs {
    /// The task id, as returned when the task was created (e.g. `task-3`).
    pub task_id: String,
}

/// Arguments of `check_all_tasks` (none).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
pub struct NoArgs {}

/// A parsed call of a built-in task tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskToolCall {
    /// Delegate `prompt` to the sub-agent `agent`.
    Create {
        /// The sub-agent.
        agent: AgentName,
        /// The subtask.
        prompt: std::sync::Arc<str>,
    },
    /// Report one task.
    Check(TaskId),
    /// Report every task of the caller.
    CheckAll,
    /// Cancel one task.
    Cancel(TaskId),
}

/// The specs of the task tools an agent is offered: `create_task` when it
/// has sub-agents (with their names as an enum), and the three others when
/// it can have tasks at all.
pub fn specs(delegates: &[AgentName], has_background_tools: bool) -> Vec<ToolSpec> {
    let mut specs = Vec::new();
    if !delegates.is_empty() {
        let mut create = ToolSpec {
            name: CREATE_TASK.into(),
            description: "Delegate a subtask to a sub-agent. Returns a task id at once; \
                          the result joins the conversation when the sub-agent finishes."
                .into(),
            parameters: schema_for::<CreateTaskArgs>(),
        };
        let names: Vec<&str> = delegates.iter().map(AgentName::as_str).collect();
        create.parameters["properties"]["agent"]["enum"] = serde_json::json!(names);
        specs.push(create);
    }
    if !delegates.is_empty() || has_background_tools {
        specs.push(ToolSpec::for_args::<TaskIdArgs>(
            CHECK_TASK,
            "Report a task's status, and its result or error once it has ended.",
        ));
        specs.push(ToolSpec::for_args::<NoArgs>(
            CHECK_ALL_TASKS,
            "Report the status of every task you have started.",
        ));
        specs.push(ToolSpec::for_args::<TaskIdArgs>(
            CANCEL_TASK,
            "Cancel a running task and everything it started.",
        ));
    }
    specs
}

/// Parses a call if `name` is a task tool: `None` when it is not one,
/// `Some(Err(..))` when its arguments are invalid.
pub fn parse(
    name: &str,
    arguments: &str,
    delegates: &[AgentName],
) -> Option<Result<TaskToolCall, ToolError>> {
    let invalid = |reason: String| ToolError::InvalidArguments {
        tool: name.to_owned(),
        reason,
    };
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    let parsed = match name {
        CREATE_TASK if !delegates.is_empty() => serde_json::from_str::<CreateTaskCall>(text)
            .map_err(|e| invalid(e.to_string()))
            .and_then(|a| {
                if let Some(agent) = delegates.iter().find(|d| d.as_str() == a.agent) {
                    Ok(TaskToolCall::Create {
                        agent: agent.clone(),
                        prompt: std::sync::Arc::from(a.prompt),
                    })
                } else {
                    let agent = a.agent;
                    let known: Vec<&str> = delegates.iter().map(AgentName::as_str).collect();
                    Err(invalid(format!(
                        "no sub-agent `{agent}`; you can delegate to: {}",
                        known.join(", ")
                    )))
                }
            }),
        CHECK_TASK => parse_task_id(text)
            .map(TaskToolCall::Check)
            .map_err(invalid),
        CANCEL_TASK => parse_task_id(text)
            .map(TaskToolCall::Cancel)
            .map_err(invalid),
        CHECK_ALL_TASKS => Ok(TaskToolCall::CheckAll),
        _ => return None,
    };
    Some(parsed)
}

fn parse_task_id(text: &str) -> Result<TaskId, String> {
    let args: TaskIdArgs = serde_json::from_str(text).map_err(|e| e.to_string())?;
    args.task_id
        .parse()
        .map_err(|e: baton_core::ids::ParseTaskIdError| e.to_string())
}

/// The answer to `check_task`: the task's record as JSON text.
pub fn check_task(registry: &TaskRegistry, id: TaskId) -> Result<String, ToolError> {
    registry
        .get(id)
        .map(|r| r.to_check_json(registry.now_ms()).to_string())
        .ok_or_else(|| ToolError::Failed(format!("no task `{id}`")))
}

/// The answer to `check_all_tasks`: every task started by `owner_task`
/// (`None`: the conversation), as a JSON array.
pub fn check_all_tasks(registry: &TaskRegistry, owner_task: Option<TaskId>) -> String {
    let now = registry.now_ms();
    let all: Vec<serde_json::Value> = registry
        .children_of(owner_task)
        .iter()
        .map(|r| r.to_check_json(now))
        .collect();
    serde_json::Value::from(all).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{TaskKind, TaskOutcome};

    fn delegates() -> Vec<AgentName> {
        vec!["researcher".into(), "writer".into()]
    }

    #[test]
    fn create_task_offers_the_sub_agents_as_an_enum() {
        let specs = specs(&delegates(), false);
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [CREATE_TASK, CHECK_TASK, CHECK_ALL_TASKS, CANCEL_TASK]
        );
        assert_eq!(
            specs[0].parameters["properties"]["agent"]["enum"],
            serde_json::json!(["researcher", "writer"])
        );
        assert!(super::specs(&[], false).is_empty());
        assert_eq!(super::specs(&[], true).len(), 3);
    }

    #[test]
    fn parses_calls_and_rejects_bad_ones_with_reasons() {
        let d = delegates();
        assert_eq!(
            parse(CREATE_TASK, r#"{"agent":"writer","prompt":"p"}"#, &d),
            Some(Ok(TaskToolCall::Create {
                agent: "writer".into(),
                prompt: "p".into()
            }))
        );
        let err = parse(CREATE_TASK, r#"{"agent":"poet","prompt":"p"}"#, &d)
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("researcher, writer"), "{err}");
        assert_eq!(
            parse(CHECK_TASK, r#"{"task_id":"task-4"}"#, &d),
            Some(Ok(TaskToolCall::Check(TaskId::new(4))))
        );
        assert!(matches!(
            parse(CANCEL_TASK, r#"{"task_id":"nope"}"#, &d),
            Some(Err(ToolError::InvalidArguments { .. }))
        ));
        assert_eq!(
            parse(CHECK_ALL_TASKS, "", &d),
            Some(Ok(TaskToolCall::CheckAll))
        );
        assert_eq!(parse("get_weather", "{}", &d), None);
        assert_eq!(
            parse(CREATE_TASK, "{}", &[]),
            None,
            "no sub-agents: not offered"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn checks_read_the_registry() {
        let reg = TaskRegistry::new();
        let a = reg.create(None, "root".into(), TaskKind::Tool { tool: "t".into() });
        let _other = reg.create(Some(a), "w".into(), TaskKind::Tool { tool: "t".into() });
        reg.finish(
            a,
            TaskOutcome::Succeeded {
                output: "done".into(),
            },
        );
        let one: serde_json::Value = serde_json::from_str(&check_task(&reg, a).unwrap()).unwrap();
        assert_eq!(one["result"], "done");
        assert!(check_task(&reg, TaskId::new(99)).is_err());
        let all: serde_json::Value = serde_json::from_str(&check_all_tasks(&reg, None)).unwrap();
        assert_eq!(all.as_array().unwrap().len(), 1);
    }
}

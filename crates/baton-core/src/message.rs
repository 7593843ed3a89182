//! Conversation messages in a provider-neutral form.
//!
//! The shapes follow the OpenAI tool protocol (system, user, assistant with
//! tool calls, tool results answering a call id), plus one baton addition:
//! [`Message::TaskResult`], the clearly marked message by which a background
//! task's result joins the conversation after its tool call was answered
//! with a task id. Providers render it as a user-role message whose text
//! starts with a `[task …]` marker (see [`Message::task_result_text`]).

use serde::{Deserialize, Serialize};

use crate::ids::{AgentName, CallId, TaskId};

/// One tool call requested by a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The model's id for this call; the answering tool message repeats it.
    pub id: CallId,
    /// The tool's name as the model wrote it (it may name no known tool).
    pub name: String,
    /// The arguments as the model wrote them: a JSON text that may not parse.
    pub arguments: String,
}

impl ToolCall {
    /// Builds a call; `arguments` is serialized to JSON text.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: serde_json::Value,
    ) -> Self {
        Self {
            id: CallId::new(id),
            name: name.into(),
            arguments: arguments.to_string(),
        }
    }
}

/// How a task ended; every task ends in exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TaskOutcome {
    /// The task produced a result.
    Succeeded {
        /// The result text (a tool's output or a sub-agent's final answer).
        output: String,
    },
    /// The task failed; `error` says why.
    Failed {
        /// What went wrong, for the model and the log.
        error: String,
    },
    /// The task was cancelled before it finished.
    Cancelled {
        /// Who or what cancelled it.
        reason: String,
    },
    /// The task ran past its time limit.
    TimedOut {
        /// The limit that was exceeded, in milliseconds.
        after_ms: u64,
    },
    /// The process stopped while the task ran, and the task could not
    /// safely be started again (its tool is not idempotent).
    Interrupted {
        /// What happened.
        reason: String,
    },
}

impl TaskOutcome {
    /// The status word for this outcome (`succeeded`, `failed`, …).
    pub fn status_word(&self) -> &'static str {
        match self {
            TaskOutcome::Succeeded { .. } => "succeeded",
            TaskOutcome::Failed { .. } => "failed",
            TaskOutcome::Cancelled { .. } => "cancelled",
            TaskOutcome::TimedOut { .. } => "timed_out",
            TaskOutcome::Interrupted { .. } => "interrupted",
        }
    }

    /// The result or the reason, as text for the model.
    pub fn detail(&self) -> String {
        match self {
            TaskOutcome::Succeeded { output } => output.clone(),
            TaskOutcome::Failed { error } => error.clone(),
            TaskOutcome::Cancelled { reason } => reason.clone(),
            TaskOutcome::TimedOut { after_ms } => format!("no result within {after_ms} ms"),
            TaskOutcome::Interrupted { reason } => reason.clone(),
        }
    }

    /// Whether the task succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, TaskOutcome::Succeeded { .. })
    }
}

/// Token counts for one model request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the request.
    pub prompt_tokens: u64,
    /// Tokens in the reply.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.prompt_tokens += rhs.prompt_tokens;
        self.completion_tokens += rhs.completion_tokens;
    }
}

/// One message of a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// Instructions for the model.
    System {
        /// The prompt text.
        content: String,
    },
    /// What the user said.
    User {
        /// The user's text.
        content: String,
    },
    /// What the model answered: text, tool calls, or both.
    Assistant {
        /// The reply text, if any.
        content: Option<String>,
        /// The tool calls, in the order the model gave them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The answer to one tool call.
    Tool {
        /// The call this answers.
        call_id: CallId,
        /// The tool's name, as called.
        name: String,
        /// The result, or the error text when `is_error`.
        content: String,
        /// Whether `content` is an error the model should see as such.
        #[serde(default)]
        is_error: bool,
    },
    /// A background task's result, joining the conversation when it lands.
    TaskResult {
        /// The task that finished.
        task_id: TaskId,
        /// What ran: the tool's or the sub-agent's name.
        source: AgentName,
        /// How it ended.
        outcome: TaskOutcome,
    },
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message::User {
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message::System {
            content: content.into(),
        }
    }

    /// An assistant message with text only.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::Assistant {
            content: Some(content.into()),
            tool_calls: Vec::new(),
        }
    }

    /// The text a provider sends for a [`Message::TaskResult`]: a marker line
    /// naming the task, its source and status, then the result or reason.
    pub fn task_result_text(task_id: TaskId, source: &AgentName, outcome: &TaskOutcome) -> String {
        format!(
            "[task {task_id} from {source} {}]\n{}",
            outcome.status_word(),
            outcome.detail()
        )
    }

    /// The message's text, if it has one (tool calls are not text).
    pub fn text(&self) -> Option<String> {
        match self {
            Message::System { content } | Message::User { content } => Some(content.clone()),
            Message::Assistant { content, .. } => content.clone(),
            Message::Tool { content, .. } => Some(content.clone()),
            Message::TaskResult {
                task_id,
                source,
                outcome,
            } => Some(Self::task_result_text(*task_id, source, outcome)),
        }
    }

    /// The tool calls of an assistant message; empty for every other kind.
    pub fn tool_calls(&self) -> &[ToolCall] {
        match self {
            Message::Assistant { tool_calls, .. } => tool_calls,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_result_text_is_marked_and_names_the_task() {
        let text = Message::task_result_text(
            TaskId::new(3),
            &AgentName::new("research"),
            &TaskOutcome::Succeeded {
                output: "42".into(),
            },
        );
        assert_eq!(text, "[task task-3 from research succeeded]\n42");
    }

    #[test]
    fn messages_serialize_with_a_role_tag() {
        let json = serde_json::to_value(Message::user("hi")).unwrap();
        assert_eq!(json, serde_json::json!({"role": "user", "content": "hi"}));
    }
}

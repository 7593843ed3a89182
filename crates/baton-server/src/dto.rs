//! The JSON bodies of the API, with their OpenAPI schemas.
//!
//! These mirror baton-core's types in the form the API promises, so the
//! core can change without changing the API.

use baton_core::{Message, TaskKind, TaskNode, TaskOutcome, TaskRecord, TaskStatus, TaskTree};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/conversations`: which agent to talk to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    /// The agent's name; the server's default agent when absent.
    #[serde(default)]
    pub agent: Option<String>,
}

/// A conversation the server holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConversationInfo {
    /// Its id, e.g. `conv-1`.
    pub id: String,
    /// The agent it talks to (the root of its tree).
    pub agent: String,
    /// Tokens the whole tree has used.
    pub tokens_used: u64,
    /// The sequence number of its newest event (0 before any).
    pub last_event_seq: u64,
}

/// The conversations the server holds, oldest first, and the agents it
/// can start new ones with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConversationList {
    /// The conversations.
    pub conversations: Vec<ConversationInfo>,
    /// The agents `POST /v1/conversations` accepts, the default first.
    pub agents: Vec<String>,
}

/// `POST /v1/conversations/{id}/messages`: something the user says.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The text (not empty; at most the server's limit in characters).
    pub text: String,
}

/// The answer to a posted message: it is queued, the agent answers in its
/// own time (watch the event stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageAccepted {
    /// The conversation.
    pub conversation: String,
    /// The sequence number of the newest event when the message was
    /// accepted; its `user_message` event comes after it.
    pub after_seq: u64,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a slot or a retry.
    Pending,
    /// Waiting for a person's approval.
    AwaitingApproval,
    /// Running.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Ran past its time limit.
    TimedOut,
    /// Cut short by a restart.
    Interrupted,
}

impl From<TaskStatus> for TaskState {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Pending => TaskState::Pending,
            TaskStatus::AwaitingApproval => TaskState::AwaitingApproval,
            TaskStatus::Running => TaskState::Running,
            TaskStatus::Succeeded => TaskState::Succeeded,
            TaskStatus::Failed => TaskState::Failed,
            TaskStatus::Cancelled => TaskState::Cancelled,
            TaskStatus::TimedOut => TaskState::TimedOut,
            TaskStatus::Interrupted => TaskState::Interrupted,
        }
    }
}

/// What a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskKindName {
    /// A background tool call.
    Tool,
    /// A subtask delegated to a sub-agent.
    Delegation,
}

/// One task of a conversation's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    /// Its id, `task-N`.
    pub id: String,
    /// The task that created it; absent for the conversation's own tasks.
    pub parent: Option<String>,
    /// The agent that created it.
    pub owner: String,
    /// What it runs.
    pub kind: TaskKindName,
    /// The tool's or the sub-agent's name.
    pub source: String,
    /// The prompt a delegation was given.
    pub prompt: Option<String>,
    /// Where it is.
    pub status: TaskState,
    /// Attempts started (retries add one each).
    pub attempts: u32,
    /// Tokens its sub-agent used over all attempts.
    pub tokens: u64,
    /// When it was created, in ms since the conversation began.
    pub created_ms: u64,
    /// When it ended, in ms since the conversation began.
    pub finished_ms: Option<u64>,
    /// `finished_ms - created_ms`, once it has ended.
    pub duration_ms: Option<u64>,
    /// The result (succeeded) or the reason (otherwise), once it has ended.
    pub detail: Option<String>,
}

impl From<&TaskRecord> for TaskView {
    fn from(r: &TaskRecord) -> Self {
        let (kind, prompt) = match &r.kind {
            TaskKind::Tool { .. } => (TaskKindName::Tool, None),
            TaskKind::Delegation { prompt, .. } => {
                (TaskKindName::Delegation, Some(prompt.to_string()))
            }
        };
        Self {
            id: r.id.to_string(),
            parent: r.parent.map(|p| p.to_string()),
            owner: r.owner.to_string(),
            kind,
            source: r.kind.source().to_string(),
            prompt,
            status: r.status.into(),
            attempts: r.attempts,
            tokens: r.tokens,
            created_ms: r.created_ms,
            finished_ms: r.finished_ms,
            duration_ms: r.finished_ms.map(|f| f.saturating_sub(r.created_ms)),
            detail: r.outcome.as_ref().map(TaskOutcome::detail),
        }
    }
}

/// A task and the tasks it created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskNodeView {
    /// The task.
    pub task: TaskView,
    /// The tasks it created, oldest first.
    #[schema(no_recursion)]
    pub children: Vec<TaskNodeView>,
}

impl From<&TaskNode> for TaskNodeView {
    fn from(n: &TaskNode) -> Self {
        Self {
            task: (&n.record).into(),
            children: n.children.iter().map(Into::into).collect(),
        }
    }
}

/// A snapshot of a conversation's delegation tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TreeView {
    /// The conversation's agent, at the root.
    pub root: String,
    /// Tokens the whole tree has used.
    pub tokens_used: u64,
    /// The tasks the conversation created, oldest first.
    pub children: Vec<TaskNodeView>,
    /// The tree as indented text.
    pub text: String,
}

impl TreeView {
    pub(crate) fn new(tree: &TaskTree, tokens_used: u64) -> Self {
        Self {
            root: tree.root.to_string(),
            tokens_used,
            children: tree.children.iter().map(Into::into).collect(),
            text: tree.render(),
        }
    }
}

/// Every task of a conversation's tree, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    /// The tasks.
    pub tasks: Vec<TaskView>,
}

/// The answer to a cancellation: the task's status afterwards (a task that
/// had already ended keeps its status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskStatusView {
    /// The task.
    pub task_id: String,
    /// Its status.
    pub status: TaskState,
}

/// `POST .../tasks/{task_id}/reject`: why.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectTask {
    /// The reason the agent is told.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Who speaks in a history message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The system prompt.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's answer to a call.
    Tool,
    /// A background task's result joining the conversation.
    TaskResult,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ToolCallView {
    /// The model's call id.
    pub id: String,
    /// The tool.
    pub name: String,
    /// The arguments as the model wrote them (JSON text).
    pub arguments: String,
}

/// One message of the conversation's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    /// Who speaks.
    pub role: Role,
    /// The text (for a tool: its answer; for a task result: the result or
    /// the reason).
    pub content: Option<String>,
    /// The model's tool calls (assistant messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallView>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The tool (tool messages) or the task's source (task results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether a tool's answer is an error.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
    /// The task a result is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// How that task ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status: Option<TaskState>,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        let base = |role, content: Option<&str>| MessageView {
            role,
            content: content.map(str::to_owned),
            tool_calls: Vec::new(),
            call_id: None,
            name: None,
            is_error: false,
            task_id: None,
            task_status: None,
        };
        match m {
            Message::System { content } => base(Role::System, Some(content)),
            Message::User { content } => base(Role::User, Some(content)),
            Message::Assistant {
                content,
                tool_calls,
            } => MessageView {
                tool_calls: tool_calls
                    .iter()
                    .map(|c| ToolCallView {
                        id: c.id.to_string(),
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    })
                    .collect(),
                ..base(Role::Assistant, content.as_deref())
            },
            Message::Tool {
                call_id,
                name,
                content,
                is_error,
            } => MessageView {
                call_id: Some(call_id.to_string()),
                name: Some(name.clone()),
                is_error: *is_error,
                ..base(Role::Tool, Some(content))
            },
            Message::TaskResult {
                task_id,
                source,
                outcome,
            } => MessageView {
                name: Some(source.to_string()),
                task_id: Some(task_id.to_string()),
                task_status: Some(TaskStatus::from(outcome).into()),
                ..base(Role::TaskResult, Some(&outcome.detail()))
            },
        }
    }
}

/// A conversation's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    /// The messages.
    pub messages: Vec<MessageView>,
}

/// One event of `GET /v1/conversations/{id}/events`, as the `data` of an
/// SSE frame whose `id` is `seq`. The fields besides these three depend on
/// `type` (see docs/api.md).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamEvent {
    /// Position in the conversation's stream, from 1, without gaps.
    pub seq: u64,
    /// Milliseconds since the conversation began.
    pub at_ms: u64,
    /// `user_message`, `turn_started`, `turn_finished`, `turn_failed`,
    /// `turn_interrupted`, `assistant_message`, `tool_call_started`,
    /// `tool_call_finished`, `task_created`, `task_started`,
    /// `task_retrying`, `approval_requested`, `approval_decided`,
    /// `budget_exceeded`, `task_finished` or `idle`.
    #[serde(rename = "type")]
    pub kind: String,
}

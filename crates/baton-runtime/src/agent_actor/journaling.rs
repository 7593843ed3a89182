//! Durability: what an agent writes to the conversation's journal, and how
//! a conversation picks up from a journal's replay.

use std::sync::Arc;

use actix::Context;
use baton_core::{
    DynTool, JournalRecord, TaskId, TaskKind, TaskOutcome, TaskStatus, ToolError, ToolOutput,
};
use futures::future::BoxFuture;

use super::tasks::{OwnTask, TaskState, TaskWork};
use super::{find_tool, AgentActor};
use crate::role::Role;
use crate::turn_loop::TurnLoop;

impl<R: Role> AgentActor<R> {
    /// Replaces the fresh state with one read back from a journal.
    pub(crate) fn resume_from(&mut self, replay: baton_core::Replay) {
        if !replay.history.is_empty() {
            let journaled = replay.history.len();
            let (turns, _) = TurnLoop::resume(replay.history);
            self.turns = turns;
            self.journaled = journaled;
        }
        for input in replay.pending_inputs {
            self.turns.enqueue(input);
        }
        for (record, _) in &replay.tasks {
            self.shared.registry.restore(record.clone());
        }
        self.resumed_tasks = replay.tasks;
    }

    /// Hands records to the journal, if any; returns the future that
    /// resolves once they are durable.
    pub(super) fn journal(
        &self,
        records: Vec<JournalRecord>,
    ) -> Option<BoxFuture<'static, Result<(), baton_core::JournalError>>> {
        self.shared.journal.as_ref().map(|j| j.append(records))
    }

    /// Hands records to the journal without waiting for them.
    pub(super) fn journal_detached(&mut self, records: Vec<JournalRecord>) {
        if self.shared.journal.is_some() {
            self.journal_buffer.extend(records);
        }
    }

    /// Hands the buffered records to the journal in one append, without
    /// waiting: the journal took them at the call, dropping the future
    /// leaves them queued, and the journal reports its own failures.
    pub(super) fn flush_journal(&mut self) {
        if !self.journal_buffer.is_empty() {
            let records = std::mem::take(&mut self.journal_buffer);
            drop(self.journal(records));
        }
    }

    /// Journals the conversation's history messages not journaled yet.
    pub(super) fn journal_history(&mut self) {
        if self.role.task().is_some() || self.shared.journal.is_none() {
            return;
        }
        let messages = self.turns.history().messages();
        if self.journaled >= messages.len() {
            return;
        }
        let records = messages[self.journaled..]
            .iter()
            .map(|m| JournalRecord::Appended { message: m.clone() })
            .collect();
        self.journaled = messages.len();
        self.journal_detached(records);
        self.flush_journal();
    }

    /// Journals a new task as it now stands (with its first attempt, if
    /// it started), and a background tool's arguments.
    pub(super) fn journal_created(&mut self, id: TaskId) {
        if self.shared.journal.is_none() {
            return;
        }
        let (Some(task), Some(own)) = (self.shared.registry.get(id), self.tasks.get(&id)) else {
            return;
        };
        let arguments = match &own.work {
            TaskWork::Tool { arguments, .. } => Some(arguments.clone()),
            TaskWork::Delegation { .. } => None,
        };
        self.journal_detached(vec![JournalRecord::TaskCreated { task, arguments }]);
    }

    /// Picks up the tasks of a resumed conversation: the conversation's own
    /// unfinished tasks start again (unless their tool is not idempotent);
    /// deeper ones are cancelled, as their parents start over.
    pub(super) fn resume_tasks(&mut self, ctx: &mut Context<Self>) {
        for (record, arguments) in std::mem::take(&mut self.resumed_tasks) {
            let id = record.id;
            if record.status.is_terminal() {
                continue;
            }
            if record.parent.is_some() {
                let outcome = TaskOutcome::Cancelled {
                    reason: "its parent started over after a restart".into(),
                };
                if self.shared.registry.finish(id, outcome.clone()) {
                    self.journal_detached(vec![JournalRecord::TaskFinished {
                        task_id: id,
                        outcome,
                    }]);
                }
                continue;
            }
            let source = record.kind.source();
            let spec = &self.agent.spec;
            let work = match &record.kind {
                TaskKind::Tool { tool } => find_tool(&spec.background_tools, tool).map(|t| {
                    (
                        t.is_idempotent(),
                        TaskWork::Tool {
                            tool: Arc::clone(t),
                            arguments: arguments.clone().unwrap_or_default(),
                        },
                    )
                }),
                TaskKind::Delegation { agent, prompt } => {
                    spec.delegates.iter().find(|a| a.name() == agent).map(|a| {
                        (
                            true,
                            TaskWork::Delegation {
                                agent: a.clone(),
                                prompt: prompt.clone(),
                            },
                        )
                    })
                }
            };
            let awaiting = record.status == TaskStatus::AwaitingApproval;
            let state = if awaiting {
                TaskState::AwaitingApproval
            } else {
                TaskState::Waiting
            };
            self.handles(ctx);
            self.created += 1;
            let (restartable, work) = match work {
                Some(found) => found,
                None => (
                    false,
                    TaskWork::Tool {
                        tool: Arc::new(Missing),
                        arguments: String::new(),
                    },
                ),
            };
            let configured =
                !matches!(&work, TaskWork::Tool { tool, .. } if tool.tool_name() == Missing::NAME);
            self.tasks.insert(
                id,
                OwnTask {
                    work,
                    attempt: record.attempts,
                    state,
                    spans: Default::default(),
                },
            );
            if !configured {
                let error = format!("`{source}` is no longer configured for this agent");
                self.finish_task(id, TaskOutcome::Failed { error }, ctx);
            } else if !restartable {
                let reason = format!(
                    "the process stopped while `{source}` ran; it was not started again because it is not idempotent"
                );
                self.finish_task(id, TaskOutcome::Interrupted { reason }, ctx);
            } else if !awaiting {
                self.shared.registry.set_status(id, TaskStatus::Pending);
                self.launch(id, ctx);
            }
        }
        self.flush_journal();
    }
}

/// Stands in for a tool that a resumed journal names but the agent no
/// longer has; never run.
pub(super) struct Missing;

impl Missing {
    pub(super) const NAME: &'static str = "baton::missing_tool";
}

impl DynTool for Missing {
    fn spec(&self) -> baton_core::ToolSpec {
        baton_core::ToolSpec {
            name: Self::NAME.into(),
            description: String::new(),
            parameters: serde_json::json!({}),
        }
    }

    fn tool_name(&self) -> &str {
        Self::NAME
    }

    fn is_idempotent(&self) -> bool {
        false
    }

    fn prepare(
        self: Arc<Self>,
        _arguments: &str,
    ) -> Result<BoxFuture<'static, Result<ToolOutput, ToolError>>, ToolError> {
        Err(ToolError::Failed(
            "this tool is no longer configured".into(),
        ))
    }
}

//! The task table: one row per task of each conversation, what `Replay`
//! makes of the log. PostgreSQL's writer keeps it in the same transaction
//! as the events that change it; SQLite's brings it up to date from the
//! events when idle, and its readers fold the events it does not hold yet
//! (see `docs/store.md`). Reading it answers "what are the tasks, where are
//! they" without replaying a conversation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use baton_core::{JournalRecord, TaskId, TaskKind, TaskOutcome, TaskStatus};

use crate::error::StoreError;

/// How much of a task's result or error the table keeps.
pub const OUTCOME_SUMMARY_CHARS: usize = 200;

/// One row of the task table ([`crate::Store::tasks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTask {
    /// The task.
    pub id: TaskId,
    /// The task that created it; `None` for the conversation's own tasks.
    pub parent: Option<TaskId>,
    /// The agent that created it.
    pub owner: String,
    /// `tool` or `delegation`.
    pub kind: String,
    /// The tool or sub-agent it runs.
    pub source: String,
    /// Where it is, as the log says.
    pub status: TaskStatus,
    /// Attempts started.
    pub attempts: u32,
    /// When its creation was committed (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// When its end was committed, once it ended.
    pub finished_at_ms: Option<i64>,
    /// Its result or error, cut to [`OUTCOME_SUMMARY_CHARS`] characters.
    pub outcome: Option<String>,
}

/// A task's result or error as the table keeps it: cut to
/// [`OUTCOME_SUMMARY_CHARS`] characters, a NUL as U+FFFD (see
/// [`storable`]).
pub fn summary(outcome: &TaskOutcome) -> String {
    let detail = outcome.detail();
    storable(match detail.char_indices().nth(OUTCOME_SUMMARY_CHARS) {
        Some((cut, _)) => format!("{}…", &detail[..cut]),
        None => detail,
    })
}

/// Text as the task table keeps it: a NUL character (a tool's binary
/// output), which PostgreSQL's `text` cannot hold, as U+FFFD. The log
/// keeps the text as it was (its JSON escapes a NUL).
pub fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// When a change was committed (ms since the Unix epoch): `None` for the
/// commit that writes it (the writer folds a batch's records before its
/// commit time is known); a time of its own when one batch of changes
/// spans several commits (the backfill of old events, row by row).
pub(crate) type At = Option<i64>;

/// A new row, as a `TaskCreated` record writes it.
#[derive(Debug, Clone)]
pub(crate) struct TaskRow {
    pub(crate) parent: Option<i64>,
    pub(crate) owner: String,
    pub(crate) kind: &'static str,
    pub(crate) source: String,
    pub(crate) status: &'static str,
    pub(crate) attempts: i64,
    /// When it was created.
    pub(crate) created_at: At,
    /// Once it has ended (it was created ended, or ended later in the
    /// batch): when.
    pub(crate) finished_at: Option<At>,
    pub(crate) outcome: Option<String>,
}

impl TaskRow {
    /// Whether it has ended.
    pub(crate) fn finished(&self) -> bool {
        self.finished_at.is_some()
    }
}

/// How a task ends, as a `TaskFinished` record writes it.
#[derive(Debug, Clone)]
pub(crate) struct Finish {
    pub(crate) status: &'static str,
    pub(crate) outcome: String,
    /// When.
    pub(crate) at: At,
}

/// What one batch does to one task: written once, whatever the number of
/// its records in the batch.
#[derive(Debug, Clone)]
pub(crate) enum TaskChange {
    /// Created (or created again) in the batch: the whole row.
    Row(TaskRow),
    /// Changed in the batch, created before: applied only while the stored
    /// row has not ended (as `Replay` ignores a second completion).
    Update {
        /// The highest attempt count the batch gives it (0: none).
        attempts: i64,
        finish: Option<Finish>,
    },
}

/// The task changes of a batch, per conversation and task, in the order of
/// first appearance.
#[derive(Debug, Default)]
pub(crate) struct TaskChanges {
    pub(crate) changes: Vec<(Arc<str>, i64, TaskChange)>,
    /// Where each task's change is in `changes`, by conversation and task
    /// number (looked up without allocating: one or two lookups a record).
    index: HashMap<Arc<str>, HashMap<i64, usize, FastHash>, FastHash>,
}

/// The hasher of the change index: its keys are a batch's conversations
/// and task numbers, not attacker-chosen.
type FastHash = foldhash::fast::RandomState;

fn task_number(id: TaskId) -> i64 {
    i64::try_from(id.get()).unwrap_or(i64::MAX)
}

impl TaskChanges {
    /// Folds one append's records in, in order, as `Replay` would; they
    /// take the time of the commit that writes the changes.
    pub(crate) fn add(&mut self, conversation: &str, records: &[JournalRecord]) {
        self.fold(conversation, records, None);
    }

    /// Folds in records committed at `at_ms` (an old `events` row), in
    /// order, after those folded before: written together, the changes
    /// leave the task table as writing them one row at a time would.
    pub(crate) fn add_at(&mut self, conversation: &str, records: &[JournalRecord], at_ms: i64) {
        self.fold(conversation, records, Some(at_ms));
    }

    fn fold(&mut self, conversation: &str, records: &[JournalRecord], at: At) {
        for record in records {
            match record {
                JournalRecord::TaskCreated { task, .. } => {
                    let (kind, source) = match &task.kind {
                        TaskKind::Tool { tool } => ("tool", tool.to_string()),
                        TaskKind::Delegation { agent, .. } => ("delegation", agent.to_string()),
                    };
                    let row = TaskRow {
                        parent: task.parent.map(task_number),
                        owner: storable(task.owner.to_string()),
                        source: storable(source),
                        kind,
                        status: task.status.as_str(),
                        attempts: i64::from(task.attempts),
                        created_at: at,
                        finished_at: task.status.is_terminal().then_some(at),
                        outcome: task.outcome.as_ref().map(summary),
                    };
                    // Created again: the new row replaces the old, as in `Replay`.
                    *self.entry(conversation, task.id, empty_update()) = TaskChange::Row(row);
                }
                JournalRecord::TaskStarted { task_id, attempt } => {
                    let attempt = i64::from(*attempt);
                    match self.entry(conversation, *task_id, empty_update()) {
                        TaskChange::Row(row) if !row.finished() => {
                            row.attempts = row.attempts.max(attempt);
                        }
                        TaskChange::Update {
                            attempts,
                            finish: None,
                        } => *attempts = (*attempts).max(attempt),
                        _ => {}
                    }
                }
                JournalRecord::TaskFinished {
                    task_id,
                    outcome,
                    attempts: count,
                } => {
                    let count = count.map_or(0, i64::from);
                    let status = outcome.status_word();
                    match self.entry(conversation, *task_id, empty_update()) {
                        TaskChange::Row(row) if !row.finished() => {
                            row.finished_at = Some(at);
                            row.status = status;
                            row.outcome = Some(summary(outcome));
                            row.attempts = row.attempts.max(count);
                        }
                        TaskChange::Update { attempts, finish } if finish.is_none() => {
                            *attempts = (*attempts).max(count);
                            *finish = Some(Finish {
                                status,
                                outcome: summary(outcome),
                                at,
                            });
                        }
                        _ => {}
                    }
                }
                JournalRecord::UserInput { .. } | JournalRecord::Appended { .. } => {}
            }
        }
    }

    /// The change recorded for a task, made `fresh` if there is none.
    fn entry(&mut self, conversation: &str, id: TaskId, fresh: TaskChange) -> &mut TaskChange {
        let number = task_number(id);
        if let Some(&i) = self.index.get(conversation).and_then(|t| t.get(&number)) {
            return &mut self.changes[i].2;
        }
        let name = match self.index.get_key_value(conversation) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(conversation),
        };
        self.changes.push((Arc::clone(&name), number, fresh));
        let i = self.changes.len() - 1;
        self.index.entry(name).or_default().insert(number, i);
        &mut self.changes[i].2
    }
}

impl TaskChanges {
    /// Applies the changes of `conversation` to its rows (`tasks`, by task
    /// number) as writing them to the table would: a reader's view of
    /// events the table does not hold yet.
    pub(crate) fn apply(
        &self,
        location: &crate::StoreLocation,
        conversation: &str,
        tasks: &mut BTreeMap<i64, StoredTask>,
    ) -> Result<(), StoreError> {
        let changes = self.changes.iter().filter(|(c, _, _)| &**c == conversation);
        for (_, id, change) in changes {
            match change {
                TaskChange::Row(row) => {
                    let task = stored_task(
                        location,
                        conversation,
                        *id,
                        row.parent,
                        row.owner.clone(),
                        row.kind.to_owned(),
                        row.source.clone(),
                        row.status,
                        row.attempts,
                        row.created_at.unwrap_or_default(),
                        row.finished_at.map(Option::unwrap_or_default),
                        row.outcome.clone(),
                    )?;
                    tasks.insert(*id, task);
                }
                TaskChange::Update { attempts, finish } => {
                    let Some(task) = tasks.get_mut(id).filter(|t| t.finished_at_ms.is_none())
                    else {
                        continue;
                    };
                    task.attempts = task
                        .attempts
                        .max(u32::try_from(*attempts).unwrap_or(u32::MAX));
                    if let Some(finish) = finish {
                        task.status = parse_status(finish.status).map_err(|message| {
                            StoreError::Malformed {
                                location: location.clone(),
                                conversation: conversation.to_owned(),
                                seq: 0,
                                message,
                            }
                        })?;
                        task.outcome = Some(finish.outcome.clone());
                        task.finished_at_ms = Some(finish.at.unwrap_or_default());
                    }
                }
            }
        }
        Ok(())
    }
}

fn empty_update() -> TaskChange {
    TaskChange::Update {
        attempts: 0,
        finish: None,
    }
}

/// Reads a status as the table spells it.
pub(crate) fn parse_status(text: &str) -> Result<TaskStatus, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("unknown task status `{text}`"))
}

/// Builds a [`StoredTask`] from a row's columns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stored_task(
    location: &crate::StoreLocation,
    conversation: &str,
    id: i64,
    parent: Option<i64>,
    owner: String,
    kind: String,
    source: String,
    status: &str,
    attempts: i64,
    created_at_ms: i64,
    finished_at_ms: Option<i64>,
    outcome: Option<String>,
) -> Result<StoredTask, StoreError> {
    let bad = |message: String| StoreError::Malformed {
        location: location.clone(),
        conversation: conversation.to_owned(),
        seq: 0,
        message: format!("task-{id} in the task table: {message}"),
    };
    let number = |n: i64| u64::try_from(n).map(TaskId::new);
    Ok(StoredTask {
        id: number(id).map_err(|e| bad(e.to_string()))?,
        parent: parent
            .map(number)
            .transpose()
            .map_err(|e| bad(e.to_string()))?,
        owner,
        kind,
        source,
        status: parse_status(status).map_err(bad)?,
        attempts: u32::try_from(attempts).map_err(|e| bad(e.to_string()))?,
        created_at_ms,
        finished_at_ms,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back() {
        for s in [
            TaskStatus::Pending,
            TaskStatus::AwaitingApproval,
            TaskStatus::Running,
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
            TaskStatus::TimedOut,
            TaskStatus::Interrupted,
        ] {
            assert_eq!(parse_status(s.as_str()), Ok(s));
        }
        assert!(parse_status("bogus").is_err());
    }

    #[test]
    fn summaries_are_cut() {
        let long = TaskOutcome::Succeeded {
            output: "é".repeat(500),
        };
        let s = summary(&long);
        assert_eq!(s.chars().count(), OUTCOME_SUMMARY_CHARS + 1);
        assert!(s.ends_with('…'));
        let short = TaskOutcome::Failed { error: "no".into() };
        assert_eq!(summary(&short), "no");
    }
}

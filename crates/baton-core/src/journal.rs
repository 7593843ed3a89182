//! The [`Journal`]: where a conversation writes what it must not lose.
//!
//! The runtime appends [`JournalRecord`]s as things happen: a user input
//! before it is acknowledged, a task's result before the parent's history
//! shows it, every message of the conversation's history, every task
//! created. Replaying the records rebuilds the conversation after a crash
//! ([`Replay`]). Implementations (a SQLite file, PostgreSQL) live in
//! `baton-store`; this crate only defines the contract.

use std::collections::HashMap;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::message::{Message, TaskOutcome};
use crate::task_registry::TaskRecord;

/// One durable fact about a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum JournalRecord {
    /// The user said something (logged before it is acknowledged).
    UserInput {
        /// The text.
        text: String,
    },
    /// A message entered the conversation's own history.
    Appended {
        /// The message.
        message: Message,
    },
    /// A task was created anywhere in the tree.
    TaskCreated {
        /// Its record as created.
        task: TaskRecord,
        /// A background tool's arguments, to run it again on resume.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arguments: Option<String>,
    },
    /// A later attempt of a task started: a retry, or a restart after a
    /// resume. (A task's first attempt is not logged on its own: the task's
    /// `TaskFinished` says how many attempts it took.)
    TaskStarted {
        /// The task.
        task_id: TaskId,
        /// The attempt's number, from 1.
        attempt: u32,
    },
    /// A task ended (logged before its parent's history shows it).
    TaskFinished {
        /// The task.
        task_id: TaskId,
        /// How it ended.
        outcome: TaskOutcome,
        /// How many attempts it had started by then (absent from journals
        /// written before attempts were logged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempts: Option<u32>,
    },
}

/// Why a journal could not take records: a failure that may pass (a full
/// disk, a lost connection: the records wait, see [`Journal`]), or a
/// journal closed for good ([`JournalError::is_closed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal error: {message}")]
pub struct JournalError {
    message: String,
    closed: bool,
}

impl JournalError {
    /// A failure that may pass: the journal keeps the records, and a later
    /// append that succeeds makes them durable.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            closed: false,
        }
    }

    /// The journal takes no more records (it was closed, or its writer
    /// died): no later append will succeed, so waiting is pointless.
    ///
    /// ```
    /// use baton_core::JournalError;
    ///
    /// let e = JournalError::closed("the store's writer has stopped");
    /// assert!(e.is_closed());
    /// assert!(!JournalError::new("disk full").is_closed());
    /// assert_eq!(e.to_string(), "journal error: the store's writer has stopped");
    /// ```
    pub fn closed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            closed: true,
        }
    }

    /// Whether the journal is closed for good (see [`JournalError::closed`]).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The pause before trying a failing journal again, after `previous` (or
/// none): 200 ms, doubling up to 5 s. One schedule for whoever waits on a
/// journal: the runtime's waits for durability and a store's own retries.
///
/// ```
/// use std::time::Duration;
/// use baton_core::journal::retry_pause;
///
/// assert_eq!(retry_pause(None), Duration::from_millis(200));
/// assert_eq!(retry_pause(Some(Duration::from_millis(200))), Duration::from_millis(400));
/// assert_eq!(retry_pause(Some(Duration::from_secs(4))), Duration::from_secs(5));
/// ```
pub fn retry_pause(previous: Option<std::time::Duration>) -> std::time::Duration {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(200);
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);
    previous.map_or(FIRST, |p| (p * 2).min(MAX))
}

/// A durable, append-only log of one conversation.
///
/// The contract, which the runtime relies on:
///
/// * **Call order.** `append` takes the records in call order at the moment
///   it is called (not when its future is first polled).
/// * **Nothing withdrawn.** Records handed to `append` are never withdrawn:
///   not when the future is dropped (the runtime drops it where it need not
///   wait), and not when the append fails. A failed append's future says
///   `Err`, but its records stay queued, in order, ahead of the records of
///   later appends, and are written with the next append.
/// * **Prefix durability.** So an append that resolves `Ok` has made
///   durable every record handed to the journal before it, those of earlier
///   appends that failed or whose futures were dropped included. An empty
///   append is how to wait for that: it resolves once everything appended
///   before it is durable, or fails.
///
/// A failure ([`JournalError::new`]) is therefore "not durable yet": a
/// caller that must know its records are durable waits for a later append
/// that succeeds, and never hands the same records again (they would be
/// logged twice). Implementations report failures of dropped futures
/// themselves, e.g. in their log.
///
/// A journal that can take no more records (closed, its writer dead, or
/// records of it it had to drop: too large, refused by its database, no
/// room left to keep them) fails that append and every later one with
/// [`JournalError::closed`], and says so loudly: a later `Ok` would claim
/// the dropped records durable. Callers stop waiting then (a conversation
/// stops, see `baton-runtime`); nothing handed over since the last
/// successful append is durable.
pub trait Journal: Send + Sync + 'static {
    /// Appends records; resolves once they, and every record appended
    /// before them, are durable.
    fn append(&self, records: Vec<JournalRecord>) -> BoxFuture<'static, Result<(), JournalError>>;
}

/// A journal kept in memory: durable only as long as the process, but
/// complete and ordered. For tests, and for replaying a run as it happened.
/// Its appends never fail, so it keeps the [`Journal`] contract trivially.
#[derive(Debug, Clone, Default)]
pub struct MemoryJournal {
    records: std::sync::Arc<std::sync::Mutex<Vec<JournalRecord>>>,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every record so far, in order.
    pub fn records(&self) -> Vec<JournalRecord> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Journal for MemoryJournal {
    fn append(&self, records: Vec<JournalRecord>) -> BoxFuture<'static, Result<(), JournalError>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(records);
        Box::pin(futures::future::ready(Ok(())))
    }
}

/// What replaying a journal rebuilds: the conversation's history, its inputs
/// not yet folded into history, and every task's latest record (with a
/// background tool's arguments).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    /// The conversation's history, in order.
    pub history: Vec<Message>,
    /// User inputs and task results that were accepted but had not yet
    /// entered history, in arrival order.
    pub pending_inputs: Vec<Message>,
    /// Every task, with the arguments of background tool calls.
    pub tasks: Vec<(TaskRecord, Option<String>)>,
}

impl Replay {
    /// Replays `records` in order. A task that finished twice keeps its
    /// first outcome (duplicate completions across a crash are ignored).
    pub fn from_records(records: impl IntoIterator<Item = JournalRecord>) -> Self {
        let mut history = Vec::new();
        let mut inputs: Vec<String> = Vec::new();
        let mut tasks: Vec<(TaskRecord, Option<String>)> = Vec::new();
        let mut index: HashMap<TaskId, usize> = HashMap::new();
        let mut results: Vec<(TaskId, TaskOutcome)> = Vec::new();
        for record in records {
            match record {
                JournalRecord::UserInput { text } => inputs.push(text),
                JournalRecord::Appended { message } => history.push(message),
                JournalRecord::TaskCreated { task, arguments } => {
                    index.insert(task.id, tasks.len());
                    tasks.push((task, arguments));
                }
                JournalRecord::TaskStarted { task_id, attempt } => {
                    if let Some(&i) = index.get(&task_id) {
                        let task = &mut tasks[i].0;
                        if !task.status.is_terminal() {
                            task.attempts = task.attempts.max(attempt);
                        }
                    }
                }
                JournalRecord::TaskFinished {
                    task_id,
                    outcome,
                    attempts,
                } => {
                    let Some(&i) = index.get(&task_id) else {
                        continue;
                    };
                    let task = &mut tasks[i].0;
                    if task.status.is_terminal() {
                        continue;
                    }
                    if let Some(attempts) = attempts {
                        task.attempts = task.attempts.max(attempts);
                    }
                    task.status = (&outcome).into();
                    task.outcome = Some(outcome.clone());
                    if task.parent.is_none() {
                        results.push((task_id, outcome));
                    }
                }
            }
        }
        // Inputs already in history were folded; the rest are pending. User
        // inputs are folded in the order they were accepted.
        let folded_users = history
            .iter()
            .filter(|m| matches!(m, Message::User { .. }))
            .count();
        let mut pending_inputs: Vec<Message> = inputs
            .into_iter()
            .skip(folded_users)
            .map(Message::user)
            .collect();
        let folded_results: std::collections::HashSet<TaskId> = history
            .iter()
            .filter_map(|m| match m {
                Message::TaskResult { task_id, .. } => Some(*task_id),
                _ => None,
            })
            .collect();
        for (task_id, outcome) in results {
            if folded_results.contains(&task_id) {
                continue;
            }
            let source = tasks[index[&task_id]].0.kind.source();
            pending_inputs.push(Message::TaskResult {
                task_id,
                source,
                outcome,
            });
        }
        Self {
            history,
            pending_inputs,
            tasks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task_registry::{TaskKind, TaskStatus};

    fn task(id: u64) -> TaskRecord {
        TaskRecord {
            id: TaskId::new(id),
            parent: None,
            owner: "a".into(),
            kind: TaskKind::Tool { tool: "t".into() },
            status: TaskStatus::Running,
            created_ms: 0,
            finished_ms: None,
            outcome: None,
            attempts: 1,
            tokens: 0,
            call: None,
        }
    }

    fn ok(s: &str) -> TaskOutcome {
        TaskOutcome::Succeeded { output: s.into() }
    }

    #[test]
    fn replay_separates_folded_and_pending_inputs() {
        let records = vec![
            JournalRecord::UserInput { text: "one".into() },
            JournalRecord::Appended {
                message: Message::user("one"),
            },
            JournalRecord::TaskCreated {
                task: task(1),
                arguments: Some("{}".into()),
            },
            JournalRecord::TaskCreated {
                task: task(2),
                arguments: None,
            },
            JournalRecord::TaskStarted {
                task_id: TaskId::new(1),
                attempt: 2,
            },
            JournalRecord::TaskFinished {
                task_id: TaskId::new(1),
                outcome: ok("r1"),
                attempts: Some(3),
            },
            JournalRecord::TaskFinished {
                task_id: TaskId::new(1),
                outcome: ok("duplicate"),
                attempts: Some(9),
            },
            JournalRecord::TaskStarted {
                task_id: TaskId::new(2),
                attempt: 2,
            },
            JournalRecord::UserInput { text: "two".into() },
        ];
        let replay = Replay::from_records(records);
        assert_eq!(replay.history, vec![Message::user("one")]);
        assert_eq!(
            replay.pending_inputs,
            vec![
                Message::user("two"),
                Message::TaskResult {
                    task_id: TaskId::new(1),
                    source: "t".into(),
                    outcome: ok("r1"),
                },
            ]
        );
        assert_eq!(replay.tasks[0].0.outcome, Some(ok("r1")));
        // The attempts of the first completion; a retry counts while running.
        assert_eq!(replay.tasks[0].0.attempts, 3);
        assert_eq!(replay.tasks[1].0.status, TaskStatus::Running);
        assert_eq!(replay.tasks[1].0.attempts, 2);
    }

    #[test]
    fn records_round_trip_through_json() {
        let r = JournalRecord::TaskFinished {
            task_id: TaskId::new(3),
            outcome: ok("x"),
            attempts: Some(2),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["record"], "task_finished");
        assert_eq!(json["attempts"], 2);
        assert_eq!(serde_json::from_value::<JournalRecord>(json).unwrap(), r);
        // Written before attempts were logged: none.
        let old = serde_json::json!({
            "record": "task_finished",
            "task_id": "task-3",
            "outcome": {"status": "succeeded", "output": "x"},
        });
        assert_eq!(
            serde_json::from_value::<JournalRecord>(old).unwrap(),
            JournalRecord::TaskFinished {
                task_id: TaskId::new(3),
                outcome: ok("x"),
                attempts: None,
            }
        );
    }
}

//! The shared task registry: every task of one conversation's tree.
//!
//! It is a `DashMap` behind an `Arc`, so `check_task` and
//! `check_all_tasks` read it directly from any thread, without a mailbox
//! round trip, and answer at once even while the conversation actor is busy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::ids::{AgentName, CallId, TaskId, TaskIdGen};
use crate::message::TaskOutcome;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Created, waiting for a slot (the tree's concurrency budget) or a retry.
    Pending,
    /// Waiting for a person to approve or reject it.
    AwaitingApproval,
    /// Running.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
    /// Ran past its time limit.
    TimedOut,
    /// Cut short by a restart and not started again.
    Interrupted,
}

impl TaskStatus {
    /// The status as the model and the events spell it (`running`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::AwaitingApproval => "awaiting_approval",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::TimedOut => "timed_out",
            TaskStatus::Interrupted => "interrupted",
        }
    }

    /// Whether the task has ended (no further change will happen).
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            TaskStatus::Pending | TaskStatus::AwaitingApproval | TaskStatus::Running
        )
    }
}

impl From<&TaskOutcome> for TaskStatus {
    fn from(outcome: &TaskOutcome) -> Self {
        match outcome {
            TaskOutcome::Succeeded { .. } => TaskStatus::Succeeded,
            TaskOutcome::Failed { .. } => TaskStatus::Failed,
            TaskOutcome::Cancelled { .. } => TaskStatus::Cancelled,
            TaskOutcome::TimedOut { .. } => TaskStatus::TimedOut,
            TaskOutcome::Interrupted { .. } => TaskStatus::Interrupted,
        }
    }
}

/// What a task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// A background tool call.
    Tool {
        /// The tool's name.
        tool: String,
    },
    /// A subtask delegated to a sub-agent.
    Delegation {
        /// The sub-agent's name.
        agent: AgentName,
        /// The prompt it was given (shared with the running task, not
        /// copied).
        prompt: Arc<str>,
    },
}

impl TaskKind {
    /// The tool's or the sub-agent's name.
    pub fn source(&self) -> AgentName {
        match self {
            TaskKind::Tool { tool } => AgentName::new(tool.as_str()),
            TaskKind::Delegation { agent, .. } => agent.clone(),
        }
    }
}

/// One task's record: who made it, what it runs, where it is, how it ended.
///
/// Serialized (the journal's `TaskCreated`, snapshots), fields that are
/// absent or zero are left out (the journal writes one per task); reading
/// takes them as absent or zero again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id.
    pub id: TaskId,
    /// The task that created it, or `None` for the conversation itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<TaskId>,
    /// The agent that created it.
    pub owner: AgentName,
    /// What it runs.
    pub kind: TaskKind,
    /// Where it is.
    pub status: TaskStatus,
    /// When it was created, in ms since the registry began.
    pub created_ms: u64,
    /// When it ended, in ms since the registry began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// How it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TaskOutcome>,
    /// How many attempts have started (retries add one each).
    pub attempts: u32,
    /// Tokens its sub-agent used, over all attempts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens: u64,
    /// The model's tool call that created it (`create_task` or a
    /// background tool), if a model did: a resumed conversation answers
    /// that call with the task rather than as interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<CallId>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TaskRecord {
    /// The compact JSON the model reads from `check_task`.
    pub fn to_check_json(&self, now_ms: u64) -> serde_json::Value {
        let mut v = serde_json::json!({
            "task_id": self.id,
            "source": self.kind.source(),
            "status": self.status,
            "attempts": self.attempts,
            "elapsed_ms": self.finished_ms.unwrap_or(now_ms).saturating_sub(self.created_ms),
        });
        match &self.outcome {
            Some(TaskOutcome::Succeeded { output }) => v["result"] = output.clone().into(),
            Some(other) if !other.is_success() => v["error"] = other.detail().into(),
            _ => {}
        }
        v
    }
}

#[derive(Debug)]
struct Inner {
    /// Keyed by ids the registry makes (small integers, not attacker-chosen
    /// keys), so a fast hash will do.
    tasks: DashMap<TaskId, TaskRecord, foldhash::fast::RandomState>,
    /// Tasks whose outcome is decided but not recorded yet (see
    /// [`TaskRegistry::decide`]). Read and written only under the task's
    /// entry in `tasks`.
    decided: DashMap<TaskId, (), foldhash::fast::RandomState>,
    ids: TaskIdGen,
    epoch: Instant,
}

/// The registry of one tree's tasks; cheap to clone (an `Arc`).
#[derive(Debug, Clone)]
pub struct TaskRegistry {
    inner: Arc<Inner>,
}

impl Default for TaskRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskRegistry {
    /// An empty registry whose clock starts now (tokio's clock, so paused
    /// time in tests gives virtual timestamps).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                tasks: DashMap::default(),
                decided: DashMap::default(),
                ids: TaskIdGen::default(),
                epoch: Instant::now(),
            }),
        }
    }

    /// Milliseconds since the registry began.
    pub fn now_ms(&self) -> u64 {
        duration_ms(self.inner.epoch.elapsed())
    }

    /// Records a new task, running its first attempt, and returns its id.
    pub fn create(&self, parent: Option<TaskId>, owner: AgentName, kind: TaskKind) -> TaskId {
        self.create_with(parent, owner, kind, TaskStatus::Running, None)
    }

    /// Records a new task in `status` (`Pending`, `AwaitingApproval` or
    /// `Running`) and returns its id. A `Running` task counts one attempt.
    /// `call` is the model's tool call that created it, if any.
    pub fn create_with(
        &self,
        parent: Option<TaskId>,
        owner: AgentName,
        kind: TaskKind,
        status: TaskStatus,
        call: Option<CallId>,
    ) -> TaskId {
        let id = self.inner.ids.next_id();
        let record = TaskRecord {
            id,
            parent,
            owner,
            kind,
            status,
            created_ms: self.now_ms(),
            finished_ms: None,
            outcome: None,
            attempts: u32::from(status == TaskStatus::Running),
            tokens: 0,
            call,
        };
        self.inner.tasks.insert(id, record);
        id
    }

    /// Moves a task that has not ended to `status`; starting to run counts
    /// a new attempt. Returns the attempt number, or `None` if the task is
    /// unknown or already ended.
    pub fn set_status(&self, id: TaskId, status: TaskStatus) -> Option<u32> {
        let mut r = self.inner.tasks.get_mut(&id)?;
        if r.status.is_terminal() || status.is_terminal() {
            return None;
        }
        if status == TaskStatus::Running && r.status != TaskStatus::Running {
            r.attempts += 1;
        }
        r.status = status;
        Some(r.attempts)
    }

    /// Adds `tokens` to a task's count.
    pub fn add_tokens(&self, id: TaskId, tokens: u64) {
        if let Some(mut r) = self.inner.tasks.get_mut(&id) {
            r.tokens += tokens;
        }
    }

    /// A copy of one task's record.
    pub fn get(&self, id: TaskId) -> Option<TaskRecord> {
        self.inner.tasks.get(&id).map(|r| r.clone())
    }

    /// Puts back a record read from a journal, keeping its id; later ids
    /// continue after the highest restored one.
    pub fn restore(&self, record: TaskRecord) {
        self.inner.ids.advance_past(record.id);
        self.inner.tasks.insert(record.id, record);
    }

    /// What a task runs: its tool's or sub-agent's name.
    pub fn source(&self, id: TaskId) -> Option<AgentName> {
        self.inner.tasks.get(&id).map(|r| r.kind.source())
    }

    /// One task's status.
    pub fn status(&self, id: TaskId) -> Option<TaskStatus> {
        self.inner.tasks.get(&id).map(|r| r.status)
    }

    /// One task's status and the task that created it (`None`: the
    /// conversation did).
    pub fn status_and_parent(&self, id: TaskId) -> Option<(TaskStatus, Option<TaskId>)> {
        self.inner.tasks.get(&id).map(|r| (r.status, r.parent))
    }

    /// Ends a task with `outcome`. Returns `false`, changing nothing, if the
    /// task is unknown or already ended: a second completion is ignored.
    pub fn finish(&self, id: TaskId, outcome: TaskOutcome) -> bool {
        let now = self.now_ms();
        match self.inner.tasks.get_mut(&id) {
            Some(mut r) if !r.status.is_terminal() => {
                r.status = TaskStatus::from(&outcome);
                r.finished_ms = Some(now);
                r.outcome = Some(outcome);
                self.inner.decided.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Marks that a task's outcome is decided, to be recorded with
    /// [`finish`](Self::finish) later (once it is durable): until then the
    /// task reads as it did, but [`cancel`](Self::cancel) leaves it alone,
    /// so a cancel that comes in between cannot make it end otherwise.
    /// Returns `false` if the task is unknown or already ended.
    pub fn decide(&self, id: TaskId) -> bool {
        match self.inner.tasks.get_mut(&id) {
            Some(r) if !r.status.is_terminal() => {
                self.inner.decided.insert(id, ());
                true
            }
            _ => false,
        }
    }

    /// Ends a task with `outcome` (a cancellation) unless it has ended or
    /// its outcome is [decided](Self::decide) already. Returns whether it
    /// did.
    pub fn cancel(&self, id: TaskId, outcome: TaskOutcome) -> bool {
        let now = self.now_ms();
        match self.inner.tasks.get_mut(&id) {
            Some(mut r) if !r.status.is_terminal() && !self.inner.decided.contains_key(&id) => {
                r.status = TaskStatus::from(&outcome);
                r.finished_ms = Some(now);
                r.outcome = Some(outcome);
                true
            }
            _ => false,
        }
    }

    /// Copies of every task created by `parent` (`None`: the conversation's
    /// own tasks), oldest first.
    pub fn children_of(&self, parent: Option<TaskId>) -> Vec<TaskRecord> {
        let mut v: Vec<TaskRecord> = self
            .inner
            .tasks
            .iter()
            .filter(|r| r.parent == parent)
            .map(|r| r.clone())
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// Copies of every task, oldest first.
    pub fn all(&self) -> Vec<TaskRecord> {
        let mut v: Vec<TaskRecord> = self.inner.tasks.iter().map(|r| r.clone()).collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// Every task under `id` (its children, theirs, …) that has not ended,
    /// with its attempt count, parents before children. One pass over the
    /// registry, whatever the depth.
    pub fn unfinished_descendants(&self, id: TaskId) -> Vec<(TaskId, u32)> {
        let mut children: HashMap<TaskId, Vec<(TaskId, u32)>> = HashMap::new();
        for r in self.inner.tasks.iter() {
            if let (Some(parent), false) = (r.parent, r.status.is_terminal()) {
                children.entry(parent).or_default().push((r.id, r.attempts));
            }
        }
        let mut out = Vec::new();
        let mut next = vec![id];
        while let Some(parent) = next.pop() {
            for (child, attempts) in children.remove(&parent).unwrap_or_default() {
                out.push((child, attempts));
                next.push(child);
            }
        }
        out
    }

    /// How many tasks have not ended yet.
    pub fn running_count(&self) -> usize {
        self.inner
            .tasks
            .iter()
            .filter(|r| !r.status.is_terminal())
            .count()
    }

    /// The number of tasks ever created.
    pub fn len(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Whether no task was ever created.
    pub fn is_empty(&self) -> bool {
        self.inner.tasks.is_empty()
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> TaskKind {
        TaskKind::Tool { tool: name.into() }
    }

    #[test]
    fn unfinished_descendants_are_the_whole_subtree_still_running() {
        let reg = TaskRegistry::new();
        let a = reg.create(None, "lead".into(), tool("a"));
        let b = reg.create(Some(a), "x".into(), tool("b"));
        let c = reg.create(Some(b), "y".into(), tool("c"));
        let done = reg.create(Some(b), "y".into(), tool("d"));
        let other = reg.create(None, "lead".into(), tool("e"));
        let _other_child = reg.create(Some(other), "z".into(), tool("f"));
        assert!(reg.finish(
            done,
            TaskOutcome::Succeeded {
                output: "ok".into()
            }
        ));
        let mut under: Vec<TaskId> = reg
            .unfinished_descendants(a)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        under.sort();
        assert_eq!(under, [b, c]);
        assert!(reg.unfinished_descendants(c).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_finishes_once_and_keeps_its_first_outcome() {
        let reg = TaskRegistry::new();
        let id = reg.create(None, "a".into(), tool("slow"));
        assert_eq!(reg.status(id), Some(TaskStatus::Running));
        assert_eq!(reg.get(id).unwrap().attempts, 1);
        assert_eq!(reg.set_status(id, TaskStatus::Pending), Some(1));
        assert_eq!(reg.set_status(id, TaskStatus::Running), Some(2));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(reg.finish(id, TaskOutcome::Succeeded { output: "x".into() }));
        assert!(!reg.finish(
            id,
            TaskOutcome::Failed {
                error: "late".into()
            }
        ));
        let r = reg.get(id).unwrap();
        assert_eq!(r.status, TaskStatus::Succeeded);
        assert_eq!(r.finished_ms, Some(1500));
        let check = r.to_check_json(9999);
        assert_eq!(check["result"], "x");
        assert_eq!(check["elapsed_ms"], 1500);
        assert_eq!(check["status"], "succeeded");
    }

    #[test]
    fn a_cancel_leaves_a_task_whose_outcome_is_decided_alone() {
        let reg = TaskRegistry::new();
        let cancelled = || TaskOutcome::Cancelled {
            reason: "stop".into(),
        };
        let (a, b) = (
            reg.create(None, "a".into(), tool("t")),
            reg.create(None, "a".into(), tool("t")),
        );
        assert!(reg.decide(a));
        assert!(!reg.cancel(a, cancelled()), "decided: not cancelled");
        assert_eq!(reg.status(a), Some(TaskStatus::Running), "not ended yet");
        assert!(reg.finish(a, TaskOutcome::Succeeded { output: "x".into() }));
        assert_eq!(reg.status(a), Some(TaskStatus::Succeeded));
        assert!(!reg.decide(a), "ended");
        assert!(reg.cancel(b, cancelled()));
        assert!(!reg.decide(b));
        assert_eq!(reg.status(b), Some(TaskStatus::Cancelled));
    }

    #[test]
    fn status_words_match_serde() {
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
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn children_are_scoped_to_their_parent() {
        let reg = TaskRegistry::new();
        let a = reg.create(None, "root".into(), tool("t"));
        let b = reg.create(Some(a), "w".into(), tool("t"));
        let c = reg.create(None, "root".into(), tool("t"));
        let root: Vec<_> = reg.children_of(None).iter().map(|r| r.id).collect();
        assert_eq!(root, vec![a, c]);
        let under_a: Vec<_> = reg.children_of(Some(a)).iter().map(|r| r.id).collect();
        assert_eq!(under_a, vec![b]);
        assert_eq!(reg.running_count(), 3);
        reg.finish(
            b,
            TaskOutcome::Cancelled {
                reason: "user".into(),
            },
        );
        assert_eq!(reg.running_count(), 2);
        assert_eq!(reg.get(b).unwrap().to_check_json(0)["error"], "user");
    }
}

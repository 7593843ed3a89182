//! Identifier newtypes, so a task id is never confused with an agent name.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The id of one task (a background tool call or a delegated subtask).
///
/// Ids are small integers handed out by a [`crate::TaskRegistry`]; they
/// display and serialize as `task-N`, which is what the model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u64);

impl TaskId {
    /// Wraps a raw number. Registries hand these out; tests may build them.
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// The raw number inside.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

/// The error for a string that is not a `task-N` id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a task id (expected `task-N`, e.g. `task-3`)")]
pub struct ParseTaskIdError(pub String);

impl FromStr for TaskId {
    type Err = ParseTaskIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let digits = trimmed.strip_prefix("task-").unwrap_or(trimmed);
        digits
            .parse::<u64>()
            .map(TaskId)
            .map_err(|_| ParseTaskIdError(s.to_owned()))
    }
}

impl Serialize for TaskId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // `task-N` without the formatting machinery: the journal writes
        // several ids per task.
        let mut text = [0u8; 5 + 20];
        text[..5].copy_from_slice(b"task-");
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(self.0).as_bytes();
        let end = 5 + digits.len();
        text[5..end].copy_from_slice(digits);
        // ASCII only.
        s.serialize_str(std::str::from_utf8(&text[..end]).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hands out increasing [`TaskId`]s; shared by every node of one tree.
#[derive(Debug, Default)]
pub struct TaskIdGen(AtomicU64);

impl TaskIdGen {
    /// The next id; the first is `task-1`.
    pub fn next_id(&self) -> TaskId {
        TaskId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Makes sure the next id is after `id` (used when restoring).
    pub fn advance_past(&self, id: TaskId) {
        self.0.fetch_max(id.0, Ordering::Relaxed);
    }
}

/// The name of an agent (`"assistant"`, `"researcher"`), unique in a tree.
///
/// Shared, not copied: every task record, event and request of an agent
/// names it, so a clone only bumps a reference count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentName(Arc<str>);

impl AgentName {
    /// Wraps a name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(Arc::from(name.into()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AgentName {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl From<String> for AgentName {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

/// The id a model gives one tool call (`call_abc123`); the tool message
/// that answers the call carries the same id (a shared copy: cloning it
/// allocates nothing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(Arc<str>);

impl CallId {
    /// Wraps an id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(Arc::from(id.into()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for CallId {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_round_trips_through_text_and_json() {
        let id = TaskId::new(42);
        assert_eq!(id.to_string(), "task-42");
        assert_eq!("task-42".parse::<TaskId>(), Ok(id));
        assert_eq!("42".parse::<TaskId>(), Ok(id));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"task-42\"");
        assert_eq!(serde_json::from_str::<TaskId>(&json).unwrap(), id);
    }

    #[test]
    fn bad_task_id_names_the_input() {
        let err = "job-7".parse::<TaskId>().unwrap_err();
        assert!(err.to_string().contains("job-7"), "{err}");
    }

    #[test]
    fn id_gen_starts_at_one_and_increases() {
        let g = TaskIdGen::default();
        assert_eq!(g.next_id(), TaskId::new(1));
        assert_eq!(g.next_id(), TaskId::new(2));
    }
}

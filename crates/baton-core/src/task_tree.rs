//! [`TaskTree`]: a snapshot of a conversation's delegation tree, built from
//! the registry, rendered as indented text or as a compact shape.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentName, TaskId};
use crate::task_registry::{TaskRecord, TaskRegistry};

/// One task and the tasks it created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskNode {
    /// The task's record as it was when the snapshot was taken.
    pub record: TaskRecord,
    /// The tasks it created, oldest first.
    pub children: Vec<TaskNode>,
}

/// A snapshot of the whole tree: the conversation's agent at the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTree {
    /// The conversation's agent.
    pub root: AgentName,
    /// The tasks the conversation created, oldest first.
    pub children: Vec<TaskNode>,
}

impl TaskTree {
    /// Takes a snapshot of `registry`, whose root agent is `root`.
    pub fn snapshot(root: AgentName, registry: &TaskRegistry) -> Self {
        Self::from_records(root, registry.all())
    }

    /// Builds the tree from records (any order).
    pub fn from_records(root: AgentName, records: Vec<TaskRecord>) -> Self {
        let mut by_parent: BTreeMap<Option<TaskId>, Vec<TaskRecord>> = BTreeMap::new();
        for r in records {
            by_parent.entry(r.parent).or_default().push(r);
        }
        for list in by_parent.values_mut() {
            list.sort_by_key(|r| r.id);
        }
        fn build(
            parent: Option<TaskId>,
            by_parent: &mut BTreeMap<Option<TaskId>, Vec<TaskRecord>>,
        ) -> Vec<TaskNode> {
            let records = by_parent.remove(&parent).unwrap_or_default();
            records
                .into_iter()
                .map(|record| {
                    let children = build(Some(record.id), by_parent);
                    TaskNode { record, children }
                })
                .collect()
        }
        let children = build(None, &mut by_parent);
        Self { root, children }
    }

    /// The tree's shape: each node's source (sub-agent or tool name) with
    /// its children in parentheses, oldest first, e.g.
    /// `lead(researcher(fetcher, fetcher), researcher)`.
    pub fn shape(&self) -> String {
        fn node(n: &TaskNode, out: &mut String) {
            out.push_str(n.record.kind.source().as_str());
            children(&n.children, out);
        }
        fn children(list: &[TaskNode], out: &mut String) {
            if list.is_empty() {
                return;
            }
            out.push('(');
            for (i, c) in list.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                node(c, out);
            }
            out.push(')');
        }
        let mut out = self.root.to_string();
        children(&self.children, &mut out);
        out
    }

    /// Every node, depth first, with its depth (1 for the conversation's
    /// own tasks).
    pub fn walk(&self) -> Vec<(u32, &TaskNode)> {
        fn go<'a>(list: &'a [TaskNode], depth: u32, out: &mut Vec<(u32, &'a TaskNode)>) {
            for n in list {
                out.push((depth, n));
                go(&n.children, depth + 1, out);
            }
        }
        let mut out = Vec::new();
        go(&self.children, 1, &mut out);
        out
    }

    /// The tree as indented text, one task a line: id, source, status,
    /// attempts, tokens and duration.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.root);
        for (depth, n) in self.walk() {
            let r = &n.record;
            let indent = "  ".repeat(depth as usize);
            let took = r
                .finished_ms
                .map(|f| format!(" {}ms", f.saturating_sub(r.created_ms)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{indent}└ {} {} [{}] attempts={} tokens={}{took}",
                r.id,
                r.kind.source(),
                r.status.as_str(),
                r.attempts,
                r.tokens,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task_registry::TaskKind;
    use crate::TaskOutcome;

    fn delegate(agent: &str) -> TaskKind {
        TaskKind::Delegation {
            agent: agent.into(),
            prompt: "p".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shape_and_render_follow_parent_links() {
        let reg = TaskRegistry::new();
        let r1 = reg.create(None, "lead".into(), delegate("researcher"));
        let r2 = reg.create(None, "lead".into(), delegate("researcher"));
        let f1 = reg.create(Some(r1), "researcher".into(), delegate("fetcher"));
        reg.create(
            Some(r1),
            "researcher".into(),
            TaskKind::Tool {
                tool: "fetch".into(),
            },
        );
        reg.finish(f1, TaskOutcome::Succeeded { output: "x".into() });
        let tree = TaskTree::snapshot("lead".into(), &reg);
        assert_eq!(tree.shape(), "lead(researcher(fetcher, fetch), researcher)");
        let text = tree.render();
        assert!(
            text.starts_with("lead\n  └ task-1 researcher [running] attempts=1"),
            "{text}"
        );
        assert!(text.contains("    └ task-3 fetcher [succeeded]"), "{text}");
        assert_eq!(tree.walk().len(), 4);
        let _ = r2;
    }
}

//! [`Timeline`]: when each task ran, what ran in parallel, and the
//! critical path, read off a run's events.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use baton_core::{Event, EventEnvelope, TaskId};

/// One task's life, in milliseconds since the run began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpan {
    /// The task.
    pub id: TaskId,
    /// The task that created it (`None`: the conversation).
    pub parent: Option<TaskId>,
    /// The tool or sub-agent it ran.
    pub source: String,
    /// When it was created.
    pub created_ms: u64,
    /// When its first attempt started, if it did.
    pub started_ms: Option<u64>,
    /// When it ended, if it did.
    pub finished_ms: Option<u64>,
    /// How it ended (`succeeded`, ...), or `unfinished`.
    pub status: String,
    /// How many attempts it took.
    pub attempts: u32,
}

impl TaskSpan {
    /// When it began running (or was created, if it never started).
    pub fn begin_ms(&self) -> u64 {
        self.started_ms.unwrap_or(self.created_ms)
    }

    /// When it ended (or began, if it never ended).
    pub fn end_ms(&self) -> u64 {
        self.finished_ms.unwrap_or_else(|| self.begin_ms())
    }
}

/// Every task of a run, in creation order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// The tasks.
    pub tasks: Vec<TaskSpan>,
    /// When the last event happened.
    pub end_ms: u64,
}

impl Timeline {
    /// Reads the timeline off a run's events.
    pub fn from_events(events: &[EventEnvelope]) -> Self {
        let mut tasks: Vec<TaskSpan> = Vec::new();
        let mut index: BTreeMap<TaskId, usize> = BTreeMap::new();
        let mut end_ms = 0;
        for envelope in events {
            end_ms = end_ms.max(envelope.at_ms);
            match &envelope.event {
                Event::TaskCreated {
                    task_id,
                    parent,
                    kind,
                    ..
                } => {
                    index.insert(*task_id, tasks.len());
                    tasks.push(TaskSpan {
                        id: *task_id,
                        parent: *parent,
                        source: kind.source().as_str().to_owned(),
                        created_ms: envelope.at_ms,
                        started_ms: None,
                        finished_ms: None,
                        status: "unfinished".to_owned(),
                        attempts: 0,
                    });
                }
                Event::TaskStarted { task_id, attempt } => {
                    if let Some(span) = index.get(task_id).map(|&i| &mut tasks[i]) {
                        span.started_ms.get_or_insert(envelope.at_ms);
                        span.attempts = span.attempts.max(*attempt);
                    }
                }
                Event::TaskFinished { task_id, outcome } => {
                    if let Some(span) = index.get(task_id).map(|&i| &mut tasks[i]) {
                        span.finished_ms.get_or_insert(envelope.at_ms);
                        span.status = outcome.status_word().to_owned();
                    }
                }
                _ => {}
            }
        }
        Self { tasks, end_ms }
    }

    /// The most tasks running at once, and when that first happened.
    pub fn peak_parallelism(&self) -> (usize, u64) {
        let mut edges: Vec<(u64, i64)> = Vec::new();
        for t in self.tasks.iter().filter(|t| t.started_ms.is_some()) {
            edges.push((t.begin_ms(), 1));
            edges.push((t.end_ms(), -1));
        }
        // Ends sort before starts at the same instant: back-to-back tasks
        // did not overlap.
        edges.sort();
        let (mut now, mut peak, mut at) = (0i64, 0i64, 0);
        for (time, delta) in edges {
            now += delta;
            if now > peak {
                peak = now;
                at = time;
            }
        }
        (peak.max(0) as usize, at)
    }

    /// The chain of tasks that decided when the run ended: from the
    /// conversation's last-ending task down through each task's
    /// last-ending child.
    pub fn critical_path(&self) -> Vec<&TaskSpan> {
        let mut path = Vec::new();
        let mut parent = None;
        loop {
            let next = self
                .tasks
                .iter()
                .filter(|t| t.parent == parent)
                .max_by_key(|t| (t.end_ms(), std::cmp::Reverse(t.id)));
            let Some(task) = next else { break };
            path.push(task);
            parent = Some(task.id);
        }
        path
    }

    /// The timeline as text: one bar per task, then the peak parallelism
    /// and the critical path.
    pub fn render(&self, width: usize) -> String {
        let mut out = String::new();
        if self.tasks.is_empty() {
            out.push_str("no tasks\n");
            return out;
        }
        let span = self.end_ms.max(1) as f64;
        let id_width = self
            .tasks
            .iter()
            .map(|t| t.id.to_string().len())
            .max()
            .unwrap_or(6);
        let name_width = self.tasks.iter().map(|t| t.source.len()).max().unwrap_or(4);
        for t in &self.tasks {
            let from = ((t.begin_ms() as f64 / span) * width as f64).floor() as usize;
            let to = ((t.end_ms() as f64 / span) * width as f64).ceil() as usize;
            let to = to.clamp(from + 1, width.max(from + 1));
            let bar: String = (0..width.max(to))
                .map(|i| if i >= from && i < to { '█' } else { '·' })
                .collect();
            let _ = writeln!(
                out,
                "{:<id_width$}  {:<name_width$}  {bar}  {:>8} → {:>8}  {}{}",
                t.id.to_string(),
                t.source,
                seconds(t.begin_ms()),
                seconds(t.end_ms()),
                t.status,
                if t.attempts > 1 {
                    format!(" ({} attempts)", t.attempts)
                } else {
                    String::new()
                }
            );
        }
        let (peak, at) = self.peak_parallelism();
        let _ = writeln!(out, "peak parallelism: {peak} tasks at {}", seconds(at));
        let path: Vec<String> = self
            .critical_path()
            .iter()
            .map(|t| {
                format!(
                    "{} {} ({})",
                    t.id,
                    t.source,
                    seconds(t.end_ms() - t.begin_ms())
                )
            })
            .collect();
        let _ = writeln!(out, "critical path: {}", path.join(" → "));
        out
    }
}

/// `1.250s`.
pub fn seconds(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{AgentName, TaskKind, TaskOutcome};

    fn at(at_ms: u64, event: Event) -> EventEnvelope {
        EventEnvelope {
            seq: 0,
            at_ms,
            event,
        }
    }

    fn task(n: u64) -> TaskId {
        format!("task-{n}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn created(n: u64, parent: Option<u64>, agent: &str, at_ms: u64) -> EventEnvelope {
        at(
            at_ms,
            Event::TaskCreated {
                task_id: task(n),
                parent: parent.map(task),
                owner: AgentName::new("lead"),
                kind: TaskKind::Delegation {
                    agent: AgentName::new(agent),
                    prompt: "".into(),
                },
            },
        )
    }

    fn started(n: u64, at_ms: u64) -> EventEnvelope {
        at(
            at_ms,
            Event::TaskStarted {
                task_id: task(n),
                attempt: 1,
            },
        )
    }

    fn finished(n: u64, at_ms: u64) -> EventEnvelope {
        at(
            at_ms,
            Event::TaskFinished {
                task_id: task(n),
                outcome: TaskOutcome::Succeeded {
                    output: String::new(),
                },
            },
        )
    }

    #[test]
    fn finds_peak_parallelism_and_the_critical_path() {
        let events = vec![
            created(1, None, "researcher", 0),
            started(1, 0),
            created(2, None, "researcher", 0),
            started(2, 0),
            created(3, Some(1), "fetcher", 100),
            started(3, 100),
            finished(2, 500),
            finished(3, 900),
            finished(1, 1000),
        ];
        let timeline = Timeline::from_events(&events);
        assert_eq!(timeline.peak_parallelism(), (3, 100));
        let path: Vec<String> = timeline
            .critical_path()
            .iter()
            .map(|t| t.id.to_string())
            .collect();
        assert_eq!(path, ["task-1", "task-3"]);
        let text = timeline.render(20);
        assert!(
            text.contains("critical path: task-1 researcher (1.000s) → task-3 fetcher (0.800s)"),
            "{text}"
        );
    }
}

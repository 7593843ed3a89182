//! The live task tree `baton run` draws on a terminal: one spinner per
//! task, indented under its parent, finished with its status.

use std::collections::HashMap;
use std::time::Duration;

use baton_core::{Event, EventEnvelope, TaskId};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

struct Bar {
    bar: ProgressBar,
    label: String,
    depth: usize,
}

/// Spinners for the tasks of one run.
pub struct LiveTree {
    multi: MultiProgress,
    /// Each task's spinner, its label (`task-3 fetcher`) and its depth.
    bars: HashMap<TaskId, Bar>,
    style: ProgressStyle,
}

impl LiveTree {
    /// A tree with the root agent's line.
    pub fn new(root: &str) -> Self {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix}{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let _ = multi.println(root);
        Self {
            multi,
            bars: HashMap::new(),
            style,
        }
    }

    /// Updates the tree for one event.
    pub fn on_event(&mut self, envelope: &EventEnvelope) {
        match &envelope.event {
            Event::TaskCreated {
                task_id,
                parent,
                kind,
                ..
            } => {
                let depth = parent
                    .and_then(|p| self.bars.get(&p).map(|b| b.depth + 1))
                    .unwrap_or(1);
                let label = format!("{task_id} {}", kind.source());
                // Added in creation order, indented by depth.
                let bar = ProgressBar::new_spinner()
                    .with_style(self.style.clone())
                    .with_prefix("  ".repeat(depth))
                    .with_message(format!("{label} pending"));
                let bar = self.multi.add(bar);
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars.insert(*task_id, Bar { bar, label, depth });
            }
            Event::TaskStarted { task_id, attempt } => {
                self.update(*task_id, |bar, name| {
                    let retry = if *attempt > 1 {
                        format!(" (attempt {attempt})")
                    } else {
                        String::new()
                    };
                    bar.set_message(format!("{name} running{retry}"));
                });
            }
            Event::ApprovalRequested { task_id } => self.update(*task_id, |bar, name| {
                bar.set_message(format!("{name} awaiting approval"));
            }),
            Event::TaskFinished { task_id, outcome } => self.update(*task_id, |bar, name| {
                let mark = if outcome.is_success() { "✓" } else { "✗" };
                bar.finish_with_message(format!(
                    "{mark} {name} {} at {}",
                    outcome.status_word(),
                    baton_scenario::timeline::seconds(envelope.at_ms)
                ));
            }),
            _ => {}
        }
    }

    fn update(&self, id: TaskId, f: impl FnOnce(&ProgressBar, &str)) {
        if let Some(b) = self.bars.get(&id) {
            f(&b.bar, &b.label);
        }
    }

    /// Stops every spinner still turning.
    pub fn finish(&self) {
        for b in self.bars.values() {
            if !b.bar.is_finished() {
                b.bar.abandon();
            }
        }
    }
}

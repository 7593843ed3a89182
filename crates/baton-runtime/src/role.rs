//! What an agent actor is to the rest of the tree: the conversation itself
//! ([`Root`]) or a worker running one delegated task ([`Worker`]).

use actix::Recipient;
use baton_core::{TaskId, TaskOutcome};
use tokio::sync::oneshot;

use crate::messages::TaskFinished;

/// The part of an agent actor that differs between the conversation and a
/// worker: where it sits in the tree and what it does when its work is done.
pub trait Role: Unpin + Sized + 'static {
    /// The task this agent runs as (`None` for the conversation).
    fn task(&self) -> Option<TaskId>;

    /// The task that created this agent's task, if any.
    fn parent(&self) -> Option<TaskId>;

    /// The depth in the tree: 0 for the conversation.
    fn depth(&self) -> u32;

    /// The span this agent's span nests under (its parent agent's), and the
    /// span of the turn that started it, which its span follows from.
    fn spans(&self) -> (Option<tracing::Id>, Option<tracing::Id>);

    /// Called when nothing is in flight, nothing is queued and no task is
    /// running. `answer` is the agent's last text. Returns `true` if the
    /// agent should stop.
    fn settled(&mut self, answer: Option<&str>) -> bool;

    /// Called when the agent's work failed (its model request, or its
    /// journal closed for good). Returns `true` if the agent should stop.
    fn failed(&mut self, error: &str) -> bool;

    /// Called when the attempt's time limit passed. Returns `true` if the
    /// agent should stop.
    fn timed_out(&mut self, after_ms: u64) -> bool;

    /// Called when the agent is stopped from outside (cancelled or shut
    /// down): it must not report a result any more.
    fn detach(&mut self);
}

/// The conversation: it lives until shut down, and wakes whoever waits for
/// it to settle.
#[derive(Debug, Default)]
pub struct Root {
    pub(crate) waiters: Vec<oneshot::Sender<()>>,
    /// The span the conversation's span nests under, if any
    /// ([`crate::Orchestrator::parent_span`]); held so it stays open.
    pub(crate) parent_span: Option<tracing::Span>,
}

impl Role for Root {
    fn task(&self) -> Option<TaskId> {
        None
    }

    fn parent(&self) -> Option<TaskId> {
        None
    }

    fn depth(&self) -> u32 {
        0
    }

    fn spans(&self) -> (Option<tracing::Id>, Option<tracing::Id>) {
        (self.parent_span.as_ref().and_then(tracing::Span::id), None)
    }

    fn settled(&mut self, _answer: Option<&str>) -> bool {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(());
        }
        false
    }

    fn failed(&mut self, _error: &str) -> bool {
        false
    }

    fn timed_out(&mut self, _after_ms: u64) -> bool {
        false
    }

    fn detach(&mut self) {}
}

/// A worker running one delegated task. It reports to its parent exactly
/// once: with its answer, its failure, or (if it is dropped without having
/// reported, e.g. after a panic) a failure saying so.
#[derive(Debug)]
pub struct Worker {
    pub(crate) task_id: TaskId,
    pub(crate) parent: Option<TaskId>,
    pub(crate) depth: u32,
    pub(crate) attempt: u32,
    /// Where to report: the parent's address, shared by all its workers.
    pub(crate) report_to: Option<std::sync::Arc<Recipient<TaskFinished>>>,
    pub(crate) parent_span: Option<tracing::Id>,
    pub(crate) started_by: Option<tracing::Id>,
}

impl Worker {
    /// Reports `outcome` to the parent, once; later calls do nothing.
    pub(crate) fn report(&mut self, outcome: TaskOutcome) {
        if let Some(parent) = self.report_to.take() {
            parent.do_send(TaskFinished {
                task_id: self.task_id,
                attempt: self.attempt,
                outcome,
            });
        }
    }
}

impl Role for Worker {
    fn task(&self) -> Option<TaskId> {
        Some(self.task_id)
    }

    fn parent(&self) -> Option<TaskId> {
        self.parent
    }

    fn depth(&self) -> u32 {
        self.depth
    }

    fn spans(&self) -> (Option<tracing::Id>, Option<tracing::Id>) {
        (self.parent_span.clone(), self.started_by.clone())
    }

    fn settled(&mut self, answer: Option<&str>) -> bool {
        self.report(TaskOutcome::Succeeded {
            output: answer.unwrap_or_default().to_owned(),
        });
        true
    }

    fn failed(&mut self, error: &str) -> bool {
        self.report(TaskOutcome::Failed {
            error: error.to_owned(),
        });
        true
    }

    fn timed_out(&mut self, after_ms: u64) -> bool {
        self.report(TaskOutcome::TimedOut { after_ms });
        true
    }

    fn detach(&mut self) {
        self.report_to = None;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.report(TaskOutcome::Failed {
            error: "the sub-agent stopped before it finished (it crashed or was shut down)".into(),
        });
    }
}

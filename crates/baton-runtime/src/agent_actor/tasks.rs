//! The tasks an agent creates and supervises: background tool calls and
//! delegations, their attempts, retries, approvals and cancellation.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Handler};
use baton_core::{
    AgentName, BudgetExceeded, CallId, DynTool, Event, JournalRecord, Message, TaskId, TaskKind,
    TaskOutcome, TaskStatus, ToolError, ToolOutput,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::journaling::Publish;
use super::{duration_ms, panic_message, AgentActor, InputPolicy, ModelActor};
use crate::agent::Agent;
use crate::error::RuntimeError;
use crate::messages::{CancelTask, Decide, Shutdown, TaskFinished};
use crate::remote::{RemoteExecutor, RemoteTask};
use crate::role::{Role, Worker};
use crate::telemetry::{self, TaskSpans};

/// The work behind a task, kept so that a retry can run it again.
#[derive(Clone)]
pub(super) enum TaskWork {
    Tool {
        tool: Arc<dyn DynTool>,
        arguments: String,
    },
    Delegation {
        agent: Agent,
        prompt: Arc<str>,
    },
}

/// What a worker for one attempt of a delegation is made from: sent to
/// the worker's thread and built there. It counts in the tree's census
/// from the moment it is made (a seed dropped unbuilt leaves it), so a
/// stop waits for it too.
pub(super) struct WorkerSeed {
    agent: Agent,
    prompt: Arc<str>,
    worker: Worker,
    /// The delegating agent's span and the turn that created the task:
    /// held (not just their ids) until the worker's own span is made, so
    /// neither can close in between, even if the delegating agent stops.
    parent_span: tracing::Span,
    started_by: tracing::Span,
    shared: Arc<super::Shared>,
    timeout: Option<Duration>,
    enlisted: super::Enlisted,
}

impl WorkerSeed {
    /// The worker, with its prompt queued for its first turn.
    pub(super) fn build(self) -> ModelActor {
        let mut worker = self.worker;
        worker.parent_span = self.parent_span.id();
        worker.started_by = self.started_by.id();
        let mut actor = ModelActor::new(
            self.agent,
            worker,
            self.shared,
            InputPolicy::Queue,
            self.timeout,
            self.enlisted,
        );
        actor.turns.enqueue(Message::user(&*self.prompt));
        // Only now may the spans close: the worker's span is made.
        drop((self.parent_span, self.started_by));
        actor
    }
}

/// Where one of this agent's own tasks is.
pub(super) enum TaskState {
    AwaitingApproval,
    /// Between attempts (backoff) or before the first.
    Waiting,
    Tool(JoinHandle<()>),
    Worker(Addr<ModelActor>),
    /// Running elsewhere, through this executor.
    Remote(Arc<dyn RemoteExecutor>),
    /// Its outcome is decided (with this status) and on its way to the
    /// journal; it ends once that is durable. It is not cancelled any more
    /// (see `TaskRegistry::decide`), and later reports are ignored.
    Ended(TaskStatus),
}

/// A task this agent created and supervises.
pub(super) struct OwnTask {
    pub(super) work: TaskWork,
    pub(super) attempt: u32,
    pub(super) state: TaskState,
    pub(super) spans: TaskSpans,
}

impl OwnTask {
    /// Whether the task still runs (or waits to): its outcome is not
    /// decided yet.
    pub(super) fn is_open(&self) -> bool {
        !matches!(self.state, TaskState::Ended(_))
    }
}

/// The ends of tasks cancelled with a subtree above them that are not in
/// the journal yet.
///
/// An agent that cancels one of its tasks ends the whole subtree under it
/// in the registry at once, but journals only its own task's end: each
/// task below is journaled by the agent that owns it, after that task's
/// `TaskCreated` (which its owner may not have handed to the journal yet),
/// as the owner learns of the cancel (see [`AgentActor::cancel_tree`]).
/// This counts those ends from the registry's cancel until their owner has
/// handed them to the journal, so that [`crate::Conversation::settled`]
/// can wait for them. Counted only for a conversation with a journal.
#[derive(Debug, Default)]
pub(crate) struct EndsFromAbove {
    /// Ends made in the registry whose records are not handed over yet.
    unjournaled: AtomicUsize,
    /// Set when the conversation has stopped: nothing waits any more (an
    /// owner stopped without journaling, as a closed journal leaves it,
    /// would otherwise be waited for forever).
    closed: AtomicBool,
    /// Woken when `unjournaled` reaches 0, and when closed.
    changed: Notify,
}

impl EndsFromAbove {
    /// `n` more ends are on their way to the journal.
    fn expect(&self, n: usize) {
        self.unjournaled.fetch_add(n, Ordering::AcqRel);
    }

    /// `n` of the ends expected are handed to the journal (or will never
    /// be: their owner stopped without journaling).
    pub(crate) fn journaled(&self, n: usize) {
        if n > 0 && self.unjournaled.fetch_sub(n, Ordering::AcqRel) == n {
            self.changed.notify_waiters();
        }
    }

    /// The conversation has stopped: [`EndsFromAbove::all_journaled`]
    /// resolves from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Resolves once every end expected so far is handed to the journal
    /// (so an append made after it comes after them): `true`; or once the
    /// conversation has stopped with ends still not handed over: `false`
    /// (they may never be, and the log lacks them).
    pub(crate) async fn all_journaled(&self) -> bool {
        loop {
            let mut changed = std::pin::pin!(self.changed.notified());
            // Registered before the check, so a change in between still
            // wakes it.
            changed.as_mut().enable();
            if self.unjournaled.load(Ordering::Acquire) == 0 {
                return true;
            }
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            changed.await;
        }
    }
}

impl<R: Role> AgentActor<R> {
    /// Ends a task: journals the outcome, then (once it is durable) tells
    /// the agent, so a result is in the log before history shows it.
    pub(super) fn finish_task(
        &mut self,
        id: TaskId,
        outcome: TaskOutcome,
        ctx: &mut Context<Self>,
    ) {
        if self.shared.journal.is_none() {
            return self.conclude(id, outcome, ctx);
        }
        self.conclude_when_durable(id, outcome, ctx);
    }

    pub(super) fn refuse(&self, exceeded: BudgetExceeded) {
        self.emit(|| Event::BudgetExceeded {
            agent: self.name(),
            task: self.role.task(),
            budget: exceeded,
        });
    }

    /// Creates a task (after the budget checks), then starts it or, if it
    /// needs approval, parks it. Returns the tool call's answer.
    pub(super) fn new_task(
        &mut self,
        kind: TaskKind,
        work: TaskWork,
        call: &CallId,
        ctx: &mut Context<Self>,
    ) -> Result<String, ToolError> {
        let limits = self.shared.limits;
        let mut check = limits.check_children(self.created);
        if check.is_ok() && matches!(work, TaskWork::Delegation { .. }) {
            check = limits.check_depth(self.role.depth());
        }
        if let Err(exceeded) = check {
            self.refuse(exceeded);
            return Err(ToolError::Failed(exceeded.to_string()));
        }
        self.created += 1;
        let source = match &kind {
            TaskKind::Tool { tool } => tool.as_str(),
            TaskKind::Delegation { agent, .. } => agent.as_str(),
        };
        let needs_approval = self.agent.spec.needs_approval(source);
        let status = if needs_approval {
            TaskStatus::AwaitingApproval
        } else {
            TaskStatus::Pending
        };
        // The registry keeps the kind; a listener gets a copy.
        let event_kind = self.shared.events.is_observed().then(|| kind.clone());
        let id = self.shared.registry.create_with(
            self.role.task(),
            self.name(),
            kind,
            status,
            Some(call.clone()),
        );
        self.handles(ctx);
        if let Some(kind) = event_kind {
            self.emit(|| Event::TaskCreated {
                task_id: id,
                parent: self.role.task(),
                owner: self.name(),
                kind,
            });
        }
        let state = if needs_approval {
            TaskState::AwaitingApproval
        } else {
            TaskState::Waiting
        };
        self.tasks.insert(
            id,
            OwnTask {
                work,
                attempt: 0,
                state,
                spans: TaskSpans::started_in(&self.turn_span),
            },
        );
        // Its worker starts only once its `TaskCreated` is handed to the
        // journal (see `start_deferred`): the worker journals records that
        // name the task, which must come after it.
        let deferred = std::mem::replace(&mut self.defer_starts, true);
        if needs_approval {
            self.emit(|| Event::ApprovalRequested { task_id: id });
        } else {
            self.launch(id, ctx);
        }
        self.journal_created(id);
        self.defer_starts = deferred;
        if !deferred {
            self.start_deferred();
        }
        let status = self.shared.registry.status(id).unwrap_or(status);
        Ok(task_answer(id, status))
    }

    /// Starts the next attempt of one of this agent's tasks; `false` if
    /// it did not (the task is gone, or the tree is being stopped: then the
    /// task stays waiting, and the stop cancels it or, on suspend, leaves
    /// it running in the journal; or an agent above cancelled it with its
    /// subtree: then it waits for this agent's `Shutdown`).
    ///
    /// An attempt after the first (a retry, a restart after resume) is
    /// journaled as `TaskStarted` before it starts, so the log and a
    /// resumed registry count it, and the records of the attempt (its
    /// worker's subtasks, its result) come after it. Unless launches are
    /// deferred (a dispatch batch, a resume, a task being created), its
    /// worker starts at once, after the records buffered so far are handed
    /// to the journal (see [`AgentActor::start_deferred`]).
    pub(super) fn launch(&mut self, id: TaskId, ctx: &mut Context<Self>) -> bool {
        if self.shared.census.is_stopping() {
            return false;
        }
        if self.ended_above(id) {
            // Cancelled with a subtree above it: it stays as it is until
            // this agent's `Shutdown`, on its way, ends it here.
            return false;
        }
        let Some(own) = self.tasks.get_mut(&id) else {
            return false;
        };
        own.attempt += 1;
        let attempt = own.attempt;
        let timeout = self.agent.spec.supervision.attempt_timeout();
        let work = own.work.clone();
        let started_by = own.spans.started_by.clone();
        if attempt > 1 {
            self.journal_detached(vec![JournalRecord::TaskStarted {
                task_id: id,
                attempt,
            }]);
        }
        let state = match work {
            TaskWork::Tool { tool, arguments } => TaskState::Tool(self.spawn_tool_attempt(
                id,
                attempt,
                tool,
                arguments,
                timeout,
                &started_by,
                ctx,
            )),
            TaskWork::Delegation { agent, prompt } if agent.spec.remote.is_some() => {
                self.dispatch_remote(id, attempt, agent, prompt.to_string(), timeout, ctx)
            }
            TaskWork::Delegation { agent, prompt } => {
                let seed = WorkerSeed {
                    agent,
                    prompt,
                    worker: Worker {
                        task_id: id,
                        parent: self.role.task(),
                        depth: self.role.depth() + 1,
                        attempt,
                        report_to: Some(Arc::clone(&self.handles(ctx).report)),
                        parent_span: None,
                        started_by: None,
                    },
                    parent_span: self.span.clone(),
                    started_by,
                    enlisted: self.shared.census.enlist(),
                    shared: Arc::clone(&self.shared),
                    timeout,
                };
                let addr = match &self.shared.arbiters {
                    // Built on the worker's own thread, which also frees it;
                    // started by `start_deferred`.
                    Some(pool) => pool.start_later(seed, &mut self.starts),
                    // On this thread: it runs once this handler has returned,
                    // which hands its records to the journal first (every
                    // launch is followed by `start_deferred`).
                    None => seed.build().start(),
                };
                TaskState::Worker(addr)
            }
        };
        if let Some(own) = self.tasks.get_mut(&id) {
            own.state = state;
        }
        if !self.defer_starts {
            self.start_deferred();
        }
        true
    }

    /// Hands the records buffered so far to the journal, then starts the
    /// workers launched since the last call, a batch per arbiter.
    ///
    /// In that order: a worker on another thread journals at once (its
    /// subtasks' `TaskCreated`, their results), and those records name its
    /// task, so they must come after the records that announce it (its
    /// `TaskCreated`, its attempt's `TaskStarted`), or a crash in between
    /// leaves a log with a child before its parent. Handing over is enough,
    /// the journal keeps appends in call order (see [`baton_core::Journal`]);
    /// the workers need not wait for durability.
    pub(super) fn start_deferred(&mut self) {
        self.flush_journal();
        if let Some(pool) = &self.shared.arbiters {
            if !self.starts.is_empty() {
                pool.start_batch(&mut self.starts, WorkerSeed::build);
            }
        }
    }

    /// Runs one attempt of a background tool as a spawned future: it waits
    /// for a slot if the tree has a concurrency budget, runs under the
    /// attempt's time limit, and reports with `TaskFinished`. Its span
    /// follows from `started_by`, the turn that called the tool.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn_tool_attempt(
        &mut self,
        task_id: TaskId,
        attempt: u32,
        tool: Arc<dyn DynTool>,
        arguments: String,
        timeout: Option<Duration>,
        started_by: &tracing::Span,
        ctx: &mut Context<Self>,
    ) -> JoinHandle<()> {
        let me = ctx.address();
        let registry = self.shared.registry.clone();
        let events = self.shared.events.clone();
        let slots = self.shared.slots.clone();
        let census = Arc::clone(&self.shared.census);
        let mark_running = move || {
            if let Some(attempt) = registry.set_status(task_id, TaskStatus::Running) {
                events.publish(Event::TaskStarted { task_id, attempt });
            }
        };
        // Without a concurrency budget the task is running from now on.
        let mut ready = slots.is_none();
        let mut permit = None;
        if let Some(slots) = &slots {
            if let Ok(p) = Arc::clone(slots).try_acquire_owned() {
                permit = Some(p);
                ready = true;
            }
        }
        if ready {
            mark_running();
        }
        let span = telemetry::task_span(&self.span, task_id, attempt, tool.tool_name(), started_by);
        let name = tool.tool_name().to_owned();
        let work = async move {
            let _permit = match (permit, slots) {
                (Some(p), _) => Some(p),
                (None, Some(slots)) => {
                    let p = slots.acquire_owned().await.ok();
                    if census.is_stopping() {
                        // The tree is being stopped: the attempt does not
                        // begin (the stop cancels its task or, on
                        // suspend, leaves it running in the journal).
                        return;
                    }
                    mark_running();
                    p
                }
                (None, None) => None,
            };
            let outcome = match tool.prepare(&arguments) {
                Err(e) => TaskOutcome::Failed {
                    error: e.to_string(),
                },
                Ok(fut) => run_guarded(&name, fut, timeout).await,
            };
            me.do_send(TaskFinished {
                task_id,
                attempt,
                outcome,
            });
        };
        actix::spawn(work.instrument(span))
    }

    /// Hands one attempt of a delegation to the sub-agent's remote
    /// executor. The parent keeps the attempt's clock: past the time
    /// limit the attempt ends as timed out and the executor is told to stop.
    pub(super) fn dispatch_remote(
        &mut self,
        id: TaskId,
        attempt: u32,
        agent: Agent,
        prompt: String,
        timeout: Option<Duration>,
        ctx: &mut Context<Self>,
    ) -> TaskState {
        let Some(executor) = agent.spec.remote.clone() else {
            return TaskState::Waiting;
        };
        if let Some(attempt) = self.shared.registry.set_status(id, TaskStatus::Running) {
            self.emit(|| Event::TaskStarted {
                task_id: id,
                attempt,
            });
        }
        let trace = self
            .tasks
            .get(&id)
            .and_then(|t| telemetry::RemoteTrace::of(&self.span, &t.spans.started_by));
        let task = RemoteTask {
            task_id: id,
            attempt,
            agent: agent.name().clone(),
            prompt,
            trace,
        };
        let report = ctx.address().recipient();
        // Write before effect: published only once its record (its
        // `TaskCreated`, journaled just after it is launched, or a later
        // attempt's `TaskStarted`, just before) is durable, waiting as
        // results do if the journal fails (see `Publish`).
        if self.shared.journal.is_none() {
            executor.dispatch(task, report);
        } else {
            let publish = Publish {
                attempt,
                executor: Arc::clone(&executor),
                task,
                report,
            };
            self.publish_when_durable(publish, ctx);
        }
        if let Some(limit) = timeout {
            let after_ms = duration_ms(limit);
            ctx.run_later(limit, move |act, ctx| {
                let current = act
                    .tasks
                    .get(&id)
                    .is_some_and(|t| t.attempt == attempt && t.is_open());
                if current {
                    if let Some(own) = act.tasks.get(&id) {
                        if let TaskState::Remote(executor) = &own.state {
                            executor.cancel(id);
                        }
                    }
                    ctx.notify(TaskFinished {
                        task_id: id,
                        attempt,
                        outcome: TaskOutcome::TimedOut { after_ms },
                    });
                }
            });
        }
        TaskState::Remote(executor)
    }

    /// Delegates `prompt` to a new worker running `agent`; returns the
    /// call's answer.
    pub(super) fn delegate(
        &mut self,
        agent: AgentName,
        prompt: Arc<str>,
        call: &CallId,
        ctx: &mut Context<Self>,
    ) -> Result<String, ToolError> {
        let spec = self
            .agent
            .spec
            .delegates
            .iter()
            .find(|a| *a.name() == agent)
            .cloned()
            .ok_or_else(|| ToolError::Failed(format!("no sub-agent `{agent}`")))?;
        self.new_task(
            TaskKind::Delegation {
                agent,
                prompt: Arc::clone(&prompt),
            },
            TaskWork::Delegation {
                agent: spec,
                prompt,
            },
            call,
            ctx,
        )
    }

    /// Ends one of this agent's tasks with `outcome` and tells the model.
    pub(super) fn conclude(&mut self, id: TaskId, outcome: TaskOutcome, ctx: &mut Context<Self>) {
        if self.fold_result(id, outcome) {
            self.advance(ctx);
        }
    }

    /// Ends one of this agent's tasks with `outcome` and queues the result
    /// for the model, without starting a turn; `false` if it had ended.
    pub(super) fn fold_result(&mut self, id: TaskId, outcome: TaskOutcome) -> bool {
        let own = self.tasks.remove(&id);
        if !self.shared.registry.finish(id, outcome.clone()) {
            if let Some(own) = own.filter(OwnTask::is_open) {
                // Still open here, ended in the registry: cancelled with
                // a subtree above it (without a journal; with one, its
                // outcome was decided first, see `conclude_when_durable`).
                self.end_from_above(id, own.attempt);
            }
            return false;
        }
        // The turn that reads the result follows from its handling.
        if let Some(span) = telemetry::current_task_result() {
            self.result_spans.push(span);
        }
        self.emit(|| Event::TaskFinished {
            task_id: id,
            outcome: outcome.clone(),
        });
        let source = match own.map(|own| own.work) {
            Some(TaskWork::Delegation { agent, .. }) => agent.name().clone(),
            _ => self
                .shared
                .registry
                .source(id)
                .unwrap_or_else(|| AgentName::new("unknown")),
        };
        self.turns.enqueue(Message::TaskResult {
            task_id: id,
            source,
            outcome,
        });
        true
    }

    /// Cancels one of this agent's own tasks and everything under it.
    pub(super) fn cancel(&mut self, id: TaskId, reason: &str) -> Result<TaskStatus, RuntimeError> {
        let Some(record) = self.shared.registry.get(id) else {
            return Err(RuntimeError::UnknownTask(id));
        };
        if record.parent != self.role.task() {
            return Err(RuntimeError::NotOwned(id));
        }
        match self.tasks.get(&id).map(|own| &own.state) {
            None => return Ok(record.status),
            // Its outcome is decided (its record on its way to the
            // journal): it has finished, as it will read once durable.
            Some(TaskState::Ended(status)) => return Ok(*status),
            Some(_) => {}
        }
        let Some(own) = self.tasks.remove(&id) else {
            return Ok(record.status);
        };
        self.end_cancelled(id, reason, own.attempt);
        match own.state {
            TaskState::Tool(handle) => handle.abort(),
            TaskState::Worker(addr) => addr.do_send(Shutdown {
                reason: reason.to_owned(),
                suspend: false,
            }),
            TaskState::Remote(executor) => executor.cancel(id),
            TaskState::AwaitingApproval | TaskState::Waiting | TaskState::Ended(_) => {}
        }
        Ok(TaskStatus::Cancelled)
    }

    /// Cancels one of this agent's own tasks on request (the model's
    /// `cancel_task`, the user's): the task and, at once, every task under
    /// it in the registry, so the tree reads cancelled as soon as this
    /// returns. The workers that own those tasks stop in their own time.
    ///
    /// Only this agent's own task's end is journaled here. Each task under
    /// it is journaled by the agent that owns it, as that agent learns of
    /// the cancel (its `Shutdown`, on its way down the tree; or a report,
    /// an approval or a retry that finds the task ended): a worker on
    /// another thread may have made a subtask (it is in the registry) and
    /// not yet handed its `TaskCreated` to the journal, and the end must
    /// come after it in the log, which only its owner can see to. Until
    /// then the ends are counted in [`EndsFromAbove`], which `settled`
    /// waits for.
    pub(super) fn cancel_tree(
        &mut self,
        id: TaskId,
        reason: &str,
    ) -> Result<TaskStatus, RuntimeError> {
        let owned = self.tasks.get(&id).is_some_and(OwnTask::is_open);
        let status = self.cancel(id, reason)?;
        if owned {
            let outcome = TaskOutcome::Cancelled {
                reason: reason.to_owned(),
            };
            let counted = self.shared.journal.is_some();
            let ends = &self.shared.ends_from_above;
            for (task_id, _) in self.shared.registry.unfinished_descendants(id) {
                // Counted first: its owner may journal it as soon as the
                // registry says it ended.
                if counted {
                    ends.expect(1);
                }
                if !self.shared.registry.cancel(task_id, outcome.clone()) && counted {
                    // Ended meanwhile, or its outcome is decided: its owner
                    // journals that.
                    ends.journaled(1);
                }
            }
        }
        Ok(status)
    }

    /// Ends one of this agent's tasks as cancelled, unless it has ended
    /// already or its outcome is decided (whoever decided it ends it); the
    /// one who ends it journals and announces it, once. Called as the task
    /// leaves this agent's tasks: if an agent above ended it meanwhile
    /// (cancelling a subtree), this agent journals that end.
    fn end_cancelled(&mut self, task_id: TaskId, reason: &str, attempts: u32) {
        let outcome = TaskOutcome::Cancelled {
            reason: reason.to_owned(),
        };
        if self.shared.registry.cancel(task_id, outcome.clone()) {
            self.journal_detached(vec![JournalRecord::TaskFinished {
                task_id,
                outcome: outcome.clone(),
                attempts: Some(attempts),
            }]);
            self.emit(|| Event::TaskFinished { task_id, outcome });
        } else {
            self.end_from_above(task_id, attempts);
        }
    }

    /// Whether one of this agent's tasks still open here has ended in the
    /// registry: an agent above cancelled it with its subtree (see
    /// [`AgentActor::cancel_tree`]), and this agent has not journaled it
    /// yet.
    pub(super) fn ended_above(&self, id: TaskId) -> bool {
        self.shared
            .registry
            .status(id)
            .is_some_and(TaskStatus::is_terminal)
    }

    /// Journals and announces the end of one of this agent's tasks that an
    /// agent above ended in the registry, cancelling a subtree (see
    /// [`AgentActor::cancel_tree`]), as the task leaves this agent's tasks
    /// while still open here. Its owner journals it, so after its
    /// `TaskCreated`, and once: the task leaves once. Does nothing if the
    /// registry does not say it ended.
    pub(super) fn end_from_above(&mut self, task_id: TaskId, attempts: u32) {
        let Some(record) = self.shared.registry.get(task_id) else {
            return;
        };
        let Some(outcome) = record.outcome.filter(|_| record.status.is_terminal()) else {
            return;
        };
        if self.shared.journal.is_some() {
            // Counted as journaled once the buffer is handed over (first:
            // a full buffer is handed over at once).
            self.ends_buffered += 1;
            self.journal_detached(vec![JournalRecord::TaskFinished {
                task_id,
                outcome: outcome.clone(),
                attempts: Some(attempts.max(record.attempts)),
            }]);
        }
        self.emit(|| Event::TaskFinished { task_id, outcome });
    }

    /// The ends from above in the journal buffer are handed over (see
    /// [`EndsFromAbove`]).
    pub(super) fn ends_handed_over(&mut self) {
        let n = std::mem::take(&mut self.ends_buffered);
        self.shared.ends_from_above.journaled(n);
    }

    pub(super) fn cancel_all(&mut self, reason: &str) {
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let _ = self.cancel(id, reason);
        }
    }

    /// Stops this agent's tasks without ending them (the agent is being
    /// suspended): nothing is journaled or changed in the registry, so the
    /// journal still has them running and a conversation resumed from it
    /// starts them again. Tool calls are aborted, workers suspended in turn;
    /// remote tasks go on where they run (a resumed conversation adopts
    /// their results).
    pub(super) fn suspend_all(&mut self, reason: &str) {
        let tasks: Vec<(TaskId, OwnTask)> = self.tasks.drain().collect();
        for (id, own) in tasks {
            if own.is_open() && self.shared.journal.is_some() && self.ended_above(id) {
                // Cancelled from above: not journaled either (like the
                // rest), so nothing is to wait for it.
                self.shared.ends_from_above.journaled(1);
            }
            match own.state {
                TaskState::Tool(handle) => handle.abort(),
                TaskState::Worker(addr) => addr.do_send(Shutdown {
                    reason: reason.to_owned(),
                    suspend: true,
                }),
                TaskState::Remote(_)
                | TaskState::AwaitingApproval
                | TaskState::Waiting
                | TaskState::Ended(_) => {}
            }
        }
    }
}

/// The answer to a task tool call: `{"status": …, "task_id": …}`.
pub(super) fn task_answer(id: TaskId, status: TaskStatus) -> String {
    use std::fmt::Write;
    // Built by hand: one of these per task, on the delegation path.
    let status = status.as_str();
    let mut answer = String::with_capacity(40 + status.len());
    answer.push_str(r#"{"status":""#);
    answer.push_str(status);
    answer.push_str(r#"","task_id":"task-"#);
    let _ = write!(answer, "{}", id.get());
    answer.push_str(r#""}"#);
    answer
}

/// Runs a tool future with panics contained and an optional time limit.
pub(super) async fn run_guarded(
    tool: &str,
    fut: BoxFuture<'static, Result<ToolOutput, ToolError>>,
    timeout: Option<Duration>,
) -> TaskOutcome {
    let guarded = AssertUnwindSafe(fut).catch_unwind();
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, guarded).await {
            Ok(r) => r,
            Err(_) => {
                return TaskOutcome::TimedOut {
                    after_ms: duration_ms(limit),
                }
            }
        },
        None => guarded.await,
    };
    match result {
        Ok(Ok(output)) => TaskOutcome::Succeeded { output: output.0 },
        Ok(Err(e)) => TaskOutcome::Failed {
            error: e.to_string(),
        },
        Err(panic) => TaskOutcome::Failed {
            error: ToolError::Panicked {
                tool: tool.to_owned(),
                message: panic_message(panic.as_ref()),
            }
            .to_string(),
        },
    }
}

impl<R: Role> Handler<TaskFinished> for AgentActor<R> {
    type Result = ();

    fn handle(&mut self, msg: TaskFinished, ctx: &mut Context<Self>) {
        let own = self.tasks.get_mut(&msg.task_id);
        let span = telemetry::task_result_span(
            &self.span,
            msg.task_id,
            msg.attempt,
            msg.outcome.status_word(),
            own.as_deref().map(|t| &t.spans),
        );
        let _guard = span.entered();
        // A task cancelled meanwhile, or a stale attempt's report, or one
        // for a task whose outcome is decided, changes nothing.
        let Some(own) = own.filter(|t| t.attempt == msg.attempt && t.is_open()) else {
            tracing::debug!(task_id = %msg.task_id, "ignored a report for an ended attempt");
            return;
        };
        if let Some(error) = self.shared.journal_closed.get().cloned() {
            // Nothing can be made durable any more: no retry, no fold; this
            // agent stops as the one below did.
            return self.journal_closed(&error, ctx);
        }
        let supervision = self.agent.spec.supervision;
        // A task an agent above cancelled with its subtree is not tried
        // again: `finish_task` finds it ended and journals that.
        let retry = !msg.outcome.is_success()
            && !matches!(msg.outcome, TaskOutcome::Cancelled { .. })
            && own.attempt < supervision.max_attempts()
            && !self
                .shared
                .registry
                .status(msg.task_id)
                .is_some_and(TaskStatus::is_terminal);
        if !retry {
            // `finish_task` concludes inside `span` (now, or once the
            // result is durable), so the next turn can follow from it.
            return self.finish_task(msg.task_id, msg.outcome, ctx);
        }
        own.state = TaskState::Waiting;
        let backoff = supervision.backoff_before(own.attempt + 1);
        self.shared
            .registry
            .set_status(msg.task_id, TaskStatus::Pending);
        self.emit(|| Event::TaskRetrying {
            task_id: msg.task_id,
            attempt: msg.attempt,
            error: msg.outcome.detail(),
            backoff_ms: duration_ms(backoff),
        });
        let (id, attempt) = (msg.task_id, msg.attempt);
        ctx.run_later(backoff, move |act, ctx| {
            let still_waiting = act
                .tasks
                .get(&id)
                .is_some_and(|t| t.attempt == attempt && matches!(t.state, TaskState::Waiting));
            if still_waiting {
                act.launch(id, ctx);
            }
        });
    }
}

impl<R: Role> Handler<Decide> for AgentActor<R> {
    type Result = Result<TaskStatus, RuntimeError>;

    fn handle(&mut self, msg: Decide, ctx: &mut Context<Self>) -> Self::Result {
        let _guard = self.span.clone().entered();
        let id = msg.task_id;
        let status = self
            .shared
            .registry
            .status(id)
            .ok_or(RuntimeError::UnknownTask(id))?;
        let awaiting = self
            .tasks
            .get(&id)
            .is_some_and(|t| matches!(t.state, TaskState::AwaitingApproval));
        if !awaiting {
            return Err(RuntimeError::NotAwaitingApproval(id, status));
        }
        if msg.decision.is_ok() && self.shared.census.is_stopping() {
            // Nothing starts while the tree is being stopped: the task
            // stays awaiting approval (the stop cancels it or, on
            // suspend, keeps it so in the journal, to approve once
            // resumed). Saying `Pending` would promise a run.
            return Err(self.shared.stopped_error());
        }
        self.emit(|| Event::ApprovalDecided {
            task_id: id,
            approved: msg.decision.is_ok(),
        });
        match msg.decision {
            Ok(()) => {
                if let Some(own) = self.tasks.get_mut(&id) {
                    own.state = TaskState::Waiting;
                }
                self.shared.registry.set_status(id, TaskStatus::Pending);
                self.launch(id, ctx);
            }
            Err(reason) => self.finish_task(
                id,
                TaskOutcome::Failed {
                    error: format!("rejected: {reason}"),
                },
                ctx,
            ),
        }
        Ok(self.shared.registry.status(id).unwrap_or(status))
    }
}

impl<R: Role> Handler<CancelTask> for AgentActor<R> {
    type Result = Result<TaskStatus, RuntimeError>;

    fn handle(&mut self, msg: CancelTask, ctx: &mut Context<Self>) -> Self::Result {
        let _guard = self.span.clone().entered();
        let was_running = self.tasks.get(&msg.task_id).is_some_and(OwnTask::is_open);
        let status = self.cancel_tree(msg.task_id, &msg.reason)?;
        if was_running {
            // The model did not ask for this: tell it.
            let source = self
                .shared
                .registry
                .source(msg.task_id)
                .unwrap_or_else(|| AgentName::new("unknown"));
            self.turns.enqueue(Message::TaskResult {
                task_id: msg.task_id,
                source,
                outcome: TaskOutcome::Cancelled { reason: msg.reason },
            });
            self.advance(ctx);
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{Limits, TaskId};
    use baton_llm::ScriptedModel;
    use tracing_subscriber::layer::SubscriberExt;

    /// A layer that wants every span, so spans are really recorded.
    struct Listening;
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Listening {}

    #[test]
    fn a_worker_is_built_under_its_parents_spans_even_after_they_were_dropped() {
        let subscriber = tracing_subscriber::registry().with(Listening);
        tracing::subscriber::with_default(subscriber, || {
            let parent = tracing::info_span!("agent");
            let turn = tracing::info_span!("turn");
            let agent = Agent::builder("worker").model(ScriptedModel::new()).build();
            let shared = Arc::new(super::super::Shared::new(Limits::default(), 16, 0, None));
            let seed = WorkerSeed {
                agent,
                prompt: "p".into(),
                worker: Worker {
                    task_id: TaskId::new(1),
                    parent: None,
                    depth: 1,
                    attempt: 1,
                    report_to: None,
                    parent_span: None,
                    started_by: None,
                },
                parent_span: parent.clone(),
                started_by: turn.clone(),
                enlisted: shared.census.enlist(),
                shared,
                timeout: None,
            };
            let (parent_id, turn_id) = (parent.id(), turn.id());
            // The delegating agent stopped before the worker's arbiter got
            // to the seed: only the seed holds the spans now.
            drop((parent, turn));
            let actor = seed.build();
            assert_eq!(actor.role.parent_span, parent_id);
            assert_eq!(actor.role.started_by, turn_id);
            assert!(
                actor.span.id().is_some(),
                "the worker's own span is recorded"
            );
        });
    }
}

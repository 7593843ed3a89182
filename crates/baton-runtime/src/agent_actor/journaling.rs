//! Durability: what an agent writes to the conversation's journal, and how
//! a conversation picks up from a journal's replay.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix::{ActorContext, ActorFuture, AsyncContext, Context};
use baton_core::journal::retry_pause;
use baton_core::{
    CallId, DynTool, Event, JournalError, JournalRecord, TaskId, TaskKind, TaskOutcome, TaskStatus,
    ToolError, ToolOutput,
};
use futures::future::BoxFuture;

use super::tasks::{task_answer, OwnTask, TaskState, TaskWork};
use super::{find_tool, AgentActor};
use crate::role::Role;
use crate::turn_loop::TurnLoop;

/// How many buffered records go to the journal at once at most (see
/// `journal_detached`).
const JOURNAL_SLICE: usize = 1024;

/// Results whose `TaskFinished` records are on their way to the journal:
/// a result enters history only once its record is durable. Remote tasks
/// wait here too: one is published only once its record is durable (see
/// [`Publish`]).
///
/// One [`WhenDurable`] future serves them all: the results ended while the
/// agent handled a burst of messages go to the journal in one append, and
/// every result whose append is durable is folded in one go (one turn
/// reads them all), rather than a future, a wake-up and a turn per result.
///
/// If an append fails, its results are not folded. The journal keeps its
/// records (a failed append is not withdrawn, see [`baton_core::Journal`]),
/// so they are not sent again: the results wait until a later append
/// succeeds, which makes everything appended before it durable. After a
/// pause (`retry_pause`: 200 ms, doubling up to 5 s) an append goes out for that, empty
/// if nothing else waits. Results that end meanwhile wait behind them, so
/// history never shows a result the journal does not have, and results are
/// folded in the order they ended.
#[derive(Default)]
pub(super) struct Concluding {
    /// Results ended (and remote tasks launched) since the last append, in
    /// order.
    unsealed: VecDeque<Waiting>,
    /// Their `TaskFinished` records, kept apart from the journal buffer so
    /// that the append that makes them durable is the one that carries them.
    records: VecDeque<JournalRecord>,
    /// Appends in flight, oldest first, each with the results it makes
    /// durable: everything appended before it is durable when it is.
    in_flight: VecDeque<(Durable, Vec<Waiting>)>,
    /// Results whose append failed, in order: their records are with the
    /// journal, so the next append that succeeds makes them durable.
    stalled: Vec<Waiting>,
    /// Whether the [`WhenDurable`] future is running.
    running: bool,
    /// The pause before the next try after a failed append; `None` once an
    /// append succeeded.
    retry: Option<Duration>,
    /// Whether a retry is scheduled (no append goes out until then).
    waiting_to_retry: bool,
}

/// An append's future: resolves once its records are durable.
pub(crate) type Durable = BoxFuture<'static, Result<(), JournalError>>;

/// Waits until the records of the append `first` is the future of are
/// durable: until it succeeds or, after it failed, until an empty append
/// made after a pause (200 ms, doubling up to 5 s) succeeds. The journal
/// keeps a failed append's records ahead of later ones, so an empty append
/// that succeeds has made them durable; they are never sent twice. A
/// journal closed for good ([`JournalError::is_closed`]) is the error: no
/// later append would succeed.
pub(crate) async fn until_durable(
    journal: &dyn baton_core::Journal,
    first: Durable,
    what: &str,
) -> Result<(), JournalError> {
    let mut durable = first;
    let mut pause = retry_pause(None);
    while let Err(error) = durable.await {
        if error.is_closed() {
            tracing::error!(%error, "the journal is closed; {what} is not durable");
            return Err(error);
        }
        tracing::error!(
            %error,
            retry_in_ms = super::duration_ms(pause),
            "journal append failed; {what} waits until its record is durable"
        );
        tokio::time::sleep(pause).await;
        pause = retry_pause(Some(pause));
        durable = journal.append(Vec::new());
    }
    Ok(())
}

/// What waits for the journal.
enum Waiting {
    /// A result, to fold once its record is durable.
    Result(Ended),
    /// A remote task, to publish once its record is durable.
    Publish(Publish),
}

/// A remote task's attempt, handed to its executor only once everything
/// journaled before it is durable (its `TaskCreated` or `TaskStarted`
/// included): a published task outlives this process, so a crash in
/// between would otherwise leave work running that the resumed
/// conversation knows nothing of. If the journal fails, it waits as
/// results do; if the attempt ended meanwhile (cancelled, timed out), it
/// is not published.
pub(super) struct Publish {
    pub(super) attempt: u32,
    pub(super) executor: Arc<dyn crate::remote::RemoteExecutor>,
    pub(super) task: crate::remote::RemoteTask,
    pub(super) report: actix::Recipient<crate::messages::TaskFinished>,
}

/// A task's result, waiting for its record to be durable.
struct Ended {
    id: TaskId,
    outcome: TaskOutcome,
    /// Where the task ended (its `task_result` span): the result is folded
    /// inside it, so the turn that reads it follows from it.
    span: tracing::Span,
}

/// The future that appends the results' records and folds the results once
/// durable; spawned when a result waits and none runs, done when none waits.
/// The actor polls it after each burst of messages it handles.
struct WhenDurable;

impl<R: Role> ActorFuture<AgentActor<R>> for WhenDurable {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut AgentActor<R>,
        ctx: &mut Context<AgentActor<R>>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        loop {
            let concluding = &mut act.concluding;
            // New results, or (once the pause is over) stalled ones with
            // no append in flight that could make them durable.
            let due = !concluding.unsealed.is_empty()
                || (!concluding.stalled.is_empty() && concluding.in_flight.is_empty());
            if due && !concluding.waiting_to_retry {
                let results: Vec<Waiting> = concluding.unsealed.drain(..).collect();
                // Whatever else waits goes first, in the order it was made.
                let mut records = std::mem::take(&mut act.journal_buffer);
                records.extend(act.concluding.records.drain(..));
                let durable = act
                    .journal(records)
                    .unwrap_or_else(|| Box::pin(futures::future::ready(Ok(()))));
                act.ends_handed_over();
                act.concluding.in_flight.push_back((durable, results));
            }
            let mut folded = false;
            let mut failed: Option<JournalError> = None;
            while let Some((durable, _)) = act.concluding.in_flight.front_mut() {
                let Poll::Ready(result) = durable.as_mut().poll(task) else {
                    break;
                };
                let Some((_, results)) = act.concluding.in_flight.pop_front() else {
                    break;
                };
                if let Err(error) = result {
                    act.concluding.stalled.extend(results);
                    failed.get_or_insert(error);
                    continue;
                }
                failed = None;
                // The journal works: a later failure is a new outage, whose
                // first pause is the shortest (also when this success came
                // while a retry was scheduled).
                act.concluding.retry = None;
                // Durable too: the results of failed appends before it.
                let stalled = std::mem::take(&mut act.concluding.stalled);
                for waiting in stalled.into_iter().chain(results) {
                    match waiting {
                        Waiting::Result(ended) => {
                            let _guard = ended.span.entered();
                            folded |= act.fold_result(ended.id, ended.outcome);
                        }
                        Waiting::Publish(publish) => act.publish(publish),
                    }
                }
            }
            if let Some(error) = failed {
                if error.is_closed() {
                    act.journal_closed(&error, ctx);
                    act.concluding.running = false;
                    return Poll::Ready(());
                }
                act.retry_later(&error, ctx);
            }
            if folded {
                // Folding may have ended more tasks: go round again.
                act.advance(ctx);
                continue;
            }
            if act.concluding.in_flight.is_empty() {
                act.concluding.running = false;
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
    }
}

impl<R: Role> AgentActor<R> {
    /// Journals a task's outcome and folds the result into the agent's
    /// history once the record is durable (see [`Concluding`]).
    ///
    /// From now on the outcome is decided: a cancel that comes before the
    /// fold leaves the task alone (in the registry too, for cancels from
    /// above), so the registry ends up saying what the log says.
    pub(super) fn conclude_when_durable(
        &mut self,
        id: TaskId,
        outcome: TaskOutcome,
        ctx: &mut Context<Self>,
    ) {
        if !self.shared.registry.decide(id) {
            // Ended already (cancelled with a subtree above it): so it
            // stays, and this agent, its owner, journals that end.
            if let Some(own) = self.tasks.remove(&id).filter(OwnTask::is_open) {
                self.end_from_above(id, own.attempt);
            }
            return self.advance(ctx);
        }
        if let Some(own) = self.tasks.get_mut(&id) {
            own.state = TaskState::Ended(TaskStatus::from(&outcome));
        }
        let record = self.finished_record(id, &outcome);
        self.concluding.records.push_back(record);
        self.concluding.unsealed.push_back(Waiting::Result(Ended {
            id,
            outcome,
            span: tracing::Span::current(),
        }));
        self.when_durable(ctx);
    }

    /// Publishes a remote task once everything journaled before it is
    /// durable (see [`Publish`]).
    pub(super) fn publish_when_durable(&mut self, publish: Publish, ctx: &mut Context<Self>) {
        self.concluding
            .unsealed
            .push_back(Waiting::Publish(publish));
        self.when_durable(ctx);
    }

    /// Hands a remote task to its executor, unless its attempt has ended
    /// (here, or in the registry: cancelled with a subtree above it), or
    /// the tree is being stopped.
    fn publish(&mut self, publish: Publish) {
        if self.shared.census.is_stopping() {
            // Handed out now, it would start after the stop (its record
            // became durable between the stop's start and this agent's
            // `Shutdown`, which is on its way). It stays as the stop
            // leaves it: cancelled on shutdown; on suspend, running in
            // the journal, so a resumed conversation dispatches it then,
            // once.
            tracing::debug!(task_id = %publish.task.task_id, "the tree is stopping: the remote task is not published");
            return;
        }
        let id = publish.task.task_id;
        let current = self.tasks.get(&id).is_some_and(|t| {
            t.attempt == publish.attempt && matches!(t.state, TaskState::Remote(_))
        }) && !self.ended_above(id);
        if current {
            publish.executor.dispatch(publish.task, publish.report);
        }
    }

    fn finished_record(&self, id: TaskId, outcome: &TaskOutcome) -> JournalRecord {
        JournalRecord::TaskFinished {
            task_id: id,
            outcome: outcome.clone(),
            attempts: self.tasks.get(&id).map(|t| t.attempt),
        }
    }

    /// On stop: the records of results still waiting to be folded go to the
    /// journal with the rest, so a resumed conversation folds them, and the
    /// registry records their outcomes as the log will have them (they are
    /// not cancelled).
    pub(super) fn seal_waiting_results(&mut self) {
        if self.shared.journal_closed.get().is_some() {
            // Their records will never be durable: they did not happen.
            self.concluding = Concluding::default();
            return;
        }
        self.journal_buffer
            .extend(self.concluding.records.drain(..));
        let concluding = &mut self.concluding;
        let waiting: Vec<Waiting> = concluding
            .stalled
            .drain(..)
            .chain(concluding.in_flight.drain(..).flat_map(|(_, w)| w))
            .chain(concluding.unsealed.drain(..))
            .collect();
        for waiting in waiting {
            let Waiting::Result(Ended { id, outcome, .. }) = waiting else {
                continue;
            };
            self.tasks.remove(&id);
            if self.shared.registry.finish(id, outcome.clone()) {
                self.emit(|| Event::TaskFinished {
                    task_id: id,
                    outcome,
                });
            }
        }
    }

    /// The journal is closed for good: nothing more can be made durable, so
    /// the agent stops, as a crash would leave it: its tasks are stopped,
    /// not ended, and what waits for the journal stays unfolded (a resumed
    /// conversation would find those tasks running and start them again).
    /// A worker tells its parent, which stops the same way (no retry), and
    /// the first agent to find out also tells the conversation directly
    /// (see [`super::Shared::close_journal`]), so the conversation stops
    /// even if that report is ignored. Its API then answers with this
    /// error ([`crate::RuntimeError::Journal`]).
    pub(super) fn journal_closed(&mut self, error: &JournalError, ctx: &mut Context<Self>) {
        // Nothing in the tree starts new work from now on.
        self.shared.close_journal(error);
        let reason = super::journal_closed_reason(error);
        self.role.failed(&reason);
        self.abort_in_flight(ctx);
        // As a crash would leave them: nothing more can be journaled, so
        // the tasks are stopped, not ended (the log has them running).
        self.suspending = true;
        self.suspend_all(&reason);
        ctx.stop();
    }

    /// Starts the [`WhenDurable`] future unless it runs.
    fn when_durable(&mut self, ctx: &mut Context<Self>) {
        if !self.concluding.running {
            self.concluding.running = true;
            ctx.spawn(WhenDurable);
        }
    }

    /// An append failed: its results wait (in `stalled`) for a later append
    /// to succeed; unless one is in flight or a try is scheduled, one goes
    /// out after a pause.
    fn retry_later(&mut self, error: &JournalError, ctx: &mut Context<Self>) {
        if self.concluding.stalled.is_empty() || self.concluding.waiting_to_retry {
            return;
        }
        let pause = retry_pause(self.concluding.retry);
        tracing::error!(
            %error,
            waiting = self.concluding.stalled.len(),
            retry_in_ms = super::duration_ms(pause),
            "journal append failed; results and remote tasks wait until their records are durable"
        );
        self.concluding.retry = Some(pause);
        self.concluding.waiting_to_retry = true;
        ctx.run_later(pause, |act, ctx| {
            act.concluding.waiting_to_retry = false;
            act.when_durable(ctx);
        });
    }

    /// Replaces the fresh state with one read back from a journal.
    pub(crate) fn resume_from(&mut self, replay: baton_core::Replay) {
        if !replay.history.is_empty() {
            let journaled = replay.history.len();
            // A call whose task was created before the stop is answered
            // with that task, as it would have been: the task goes on.
            let created: HashMap<CallId, String> = replay
                .tasks
                .iter()
                .filter(|(r, _)| r.parent.is_none())
                .filter_map(|(r, _)| {
                    let status = match r.status {
                        s if s.is_terminal() => s,
                        TaskStatus::AwaitingApproval => TaskStatus::AwaitingApproval,
                        _ => TaskStatus::Pending,
                    };
                    Some((r.call.clone()?, task_answer(r.id, status)))
                })
                .collect();
            let (turns, _) = TurnLoop::resume(replay.history, &created);
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

    /// Hands records to the journal without waiting for them. A long burst
    /// (a turn creating thousands of tasks) goes out in slices of
    /// [`JOURNAL_SLICE`] records, so the store writes the first while the
    /// agent builds the next.
    pub(super) fn journal_detached(&mut self, records: Vec<JournalRecord>) {
        if self.shared.journal.is_some() {
            self.journal_buffer.extend(records);
            if self.journal_buffer.len() >= JOURNAL_SLICE {
                self.flush_journal();
            }
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
        self.ends_handed_over();
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
    /// it was launched: a sub-agent built on another thread may not have
    /// told the registry yet), and a background tool's arguments. A task
    /// that an agent above has cancelled already (with a subtree, on
    /// another thread) is journaled as created, not ended: its end is
    /// journaled after it, by this agent (see `end_from_above`).
    pub(super) fn journal_created(&mut self, id: TaskId) {
        if self.shared.journal.is_none() {
            return;
        }
        let (Some(mut task), Some(own)) = (self.shared.registry.get(id), self.tasks.get(&id))
        else {
            return;
        };
        if task.status.is_terminal() {
            task.status = match own.state {
                TaskState::AwaitingApproval => TaskStatus::AwaitingApproval,
                _ => TaskStatus::Pending,
            };
            task.finished_ms = None;
            task.outcome = None;
        }
        task.attempts = task.attempts.max(own.attempt);
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
        // The workers start together at the end, after every record of the
        // resume (each restart's `TaskStarted`) is handed to the journal.
        self.defer_starts = true;
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
                        attempts: Some(record.attempts),
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
        self.defer_starts = false;
        self.start_deferred();
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

//! [`AgentActor`]: the actor that runs one agent's model/tool loop.
//!
//! The conversation is an [`OrchestratorActor`] (an `AgentActor<Root>`);
//! each delegated subtask runs in a [`ModelActor`] (an `AgentActor<Worker>`).
//! Both handle one mailbox message at a time and never await a model or a
//! tool inside a handler: requests run as spawned futures whose results come
//! back as [`ModelTurnDone`], [`InlineToolDone`] and
//! [`TaskFinished`](crate::messages::TaskFinished) messages. The history
//! rules live in [`TurnLoop`]; the handlers here are short and start or stop
//! work.
//!
//! This file holds the actor and its turns; `tasks.rs` the tasks it creates
//! and supervises (attempts, retries, approvals, cancellation);
//! `journaling.rs` what it writes to the journal and how it resumes.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Recipient, ResponseFuture,
    SpawnHandle, WrapFuture,
};
use baton_core::{
    AgentName, CallId, DynTool, Event, EventBus, Journal, Limits, Message, TaskId, TaskKind,
    TaskRecord, TaskRegistry, TaskStatus, ToolCall, ToolError, ToolOutput,
};
use baton_llm::ChatRequest;
use dashmap::DashMap;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

mod census;
mod journaling;
mod tasks;

pub(crate) use census::{Census, Enlisted};

pub(crate) use journaling::{until_durable, Durable};

use tasks::{task_answer, OwnTask, TaskWork};

use crate::agent::Agent;
use crate::arbiter_pool::{ArbiterPool, StartBatch};
use crate::messages::{
    AttemptTimedOut, CancelTask, Decide, GetHistory, InlineToolDone, ModelTurnDone, Shutdown,
    SlotGranted, TurnError, UserInput, WhenSettled,
};
use crate::role::{Role, Root, Worker};
use crate::task_tools::{self, TaskToolCall};
use crate::telemetry;
use crate::turn_loop::{error_answer, ok_answer, Phase, TurnLoop};

/// The conversation actor: owns the conversation's history.
pub type OrchestratorActor = AgentActor<Root>;

/// A worker agent running one delegated task.
pub type ModelActor = AgentActor<Worker>;

/// What to do with user input that arrives while a turn is in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InputPolicy {
    /// Keep it for the next turn (folded into history after the current
    /// turn's messages).
    #[default]
    Queue,
    /// Abandon the turn in flight (abort the model request, answer open tool
    /// calls as interrupted) and start again with the new input.
    Interrupt,
}

/// Where to send a task's cancellation or approval: the agent that owns it.
#[derive(Clone)]
pub(crate) struct Owner {
    pub(crate) cancel: Recipient<CancelTask>,
    pub(crate) decide: Recipient<Decide>,
}

/// The state every agent in one tree shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) registry: TaskRegistry,
    pub(crate) events: EventBus,
    pub(crate) limits: Limits,
    /// Slots of the tree's concurrency budget; `None` when unlimited.
    pub(crate) slots: Option<Arc<Semaphore>>,
    pub(crate) tokens_used: Arc<AtomicU64>,
    /// Where to reach each agent that has created tasks, by the task it
    /// runs as (`None`: the conversation): a task's owner is the agent
    /// running its parent task. One entry per agent, not per task.
    pub(crate) owners: Arc<DashMap<Option<TaskId>, Arc<Owner>, IdHasher>>,
    /// The tree's agents: which exist (seeds on their way to their thread
    /// included), which run, and whether the tree is stopping.
    pub(crate) census: Arc<Census>,
    /// The threads workers run on; `None`: the conversation's own thread.
    pub(crate) arbiters: Option<Arc<ArbiterPool>>,
    /// Where durable records go, if the conversation has a journal.
    pub(crate) journal: Option<Arc<dyn Journal>>,
    /// Set when the journal turned out closed for good: the conversation
    /// stopped, and this is why. Set through [`Shared::close_journal`].
    pub(crate) journal_closed: Arc<std::sync::OnceLock<baton_core::JournalError>>,
    /// Ends of tasks cancelled with a subtree above them whose owners have
    /// not journaled them yet: what `settled` waits for besides the
    /// conversation itself.
    pub(crate) ends_from_above: Arc<tasks::EndsFromAbove>,
    /// The conversation's actor (set as it is made; weak, so the tree does
    /// not keep it alive): where an agent that finds the journal closed
    /// sends the stop, rather than relying on its parent's report.
    pub(crate) root: Arc<std::sync::OnceLock<actix::WeakRecipient<Shutdown>>>,
}

impl Shared {
    /// Why the conversation no longer answers: its journal closed for
    /// good, or it was stopped.
    pub(crate) fn stopped_error(&self) -> crate::RuntimeError {
        self.journal_closed
            .get()
            .map_or(crate::RuntimeError::Stopped, |e| e.clone().into())
    }

    /// The journal is closed for good: nothing in the tree starts new work
    /// from now on, and the conversation stops, as a crash would leave it
    /// (its tasks suspended, not ended). The first to find out (an agent,
    /// or the queue of user inputs) records why and tells the conversation
    /// directly: a worker's report to its parent may be ignored (its task
    /// was cancelled meanwhile), and the conversation must stop all the
    /// same, or the tree would sit still, every agent refusing to start
    /// work, and `settled` would never answer.
    pub(crate) fn close_journal(&self, error: &baton_core::JournalError) {
        self.census.begin_stopping();
        if self.journal_closed.set(error.clone()).is_err() {
            // Someone found out first, and told the conversation.
            return;
        }
        tracing::error!(
            %error,
            "the journal is closed for good; the conversation stops, as nothing more can be made durable"
        );
        if let Some(root) = self.root.get().and_then(actix::WeakRecipient::upgrade) {
            // (The conversation itself, when it is the one that found
            // out, is stopping already: this changes nothing then.)
            root.do_send(Shutdown {
                reason: journal_closed_reason(error),
                suspend: true,
            });
        }
    }

    pub(crate) fn new(
        limits: Limits,
        event_capacity: usize,
        worker_threads: usize,
        journal: Option<Arc<dyn Journal>>,
    ) -> Self {
        let slots = (limits.max_concurrent != u32::MAX)
            .then(|| Arc::new(Semaphore::new(limits.max_concurrent as usize)));
        Self {
            registry: TaskRegistry::new(),
            events: EventBus::new(event_capacity),
            limits,
            slots,
            tokens_used: Arc::default(),
            owners: Arc::default(),
            census: Arc::default(),
            arbiters: ArbiterPool::new(worker_threads).map(Arc::new),
            journal,
            journal_closed: Arc::default(),
            ends_from_above: Arc::default(),
            root: Arc::default(),
        }
    }
}

/// Why the tasks of a conversation whose journal closed were stopped.
pub(crate) fn journal_closed_reason(error: &baton_core::JournalError) -> String {
    format!("the conversation's journal is closed ({})", error.message())
}

/// This agent's slot in the tree's concurrency budget.
enum Slot {
    /// The conversation itself, or no budget: no slot needed.
    NotNeeded,
    Free,
    Requested,
    Held(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// How one tool call of a model reply is handled.
enum CallPlan {
    /// Answered at once (task tools, unknown tools, invalid arguments,
    /// background tools).
    Answer(Message),
    /// Run concurrently with the turn's other inline calls.
    Inline(BoxFuture<'static, Result<ToolOutput, ToolError>>),
}

/// The hasher of the maps keyed by task id: ids are small integers made by
/// the registry, not attacker-chosen keys, so a fast hash will do.
pub(crate) type IdHasher = foldhash::fast::RandomState;

/// The actor running one agent; see the module docs.
pub struct AgentActor<R: Role> {
    agent: Agent,
    role: R,
    shared: Arc<Shared>,
    policy: InputPolicy,
    turns: TurnLoop,
    model_request: Option<SpawnHandle>,
    tool_calls: Vec<JoinHandle<()>>,
    tasks: HashMap<TaskId, OwnTask, IdHasher>,
    created: u32,
    slot: Slot,
    started: bool,
    attempt_timeout: Option<Duration>,
    span: tracing::Span,
    turn_span: tracing::Span,
    /// Spans of task reports handled since the last turn began: the next
    /// turn, which reads their results, follows from them.
    result_spans: Vec<tracing::Span>,
    /// How many history messages are in the journal (the conversation only).
    journaled: usize,
    /// Tasks read back from a journal, to pick up when the actor starts.
    resumed_tasks: Vec<(TaskRecord, Option<String>)>,
    /// Records waiting to go to the journal in one append.
    journal_buffer: Vec<baton_core::JournalRecord>,
    /// How many of them end tasks cancelled from above (see
    /// `tasks::EndsFromAbove`): counted as journaled once handed over.
    ends_buffered: usize,
    /// Results waiting for their records to be durable.
    concluding: journaling::Concluding,
    /// This agent's addresses as its tasks need them, made once (an actix
    /// address allocates) and shared by every task it creates.
    handles: Option<Handles>,
    /// The calls of the current reply not dispatched yet.
    dispatching: Option<Dispatch>,
    /// Workers launched during a dispatch batch (or a resume), started
    /// together at its end (one message per arbiter), once its records are
    /// handed to the journal (see `start_deferred`).
    starts: StartBatch<ModelActor, tasks::WorkerSeed>,
    /// Whether launches wait in `starts` rather than starting at once.
    defer_starts: bool,
    /// Set when the agent is being suspended: on stop its tasks are left
    /// unfinished rather than cancelled.
    suspending: bool,
    /// This agent's place in the tree's census, left once it has stopped.
    enlisted: Option<Enlisted>,
}

/// How many calls of one model reply are dispatched before the actor
/// yields to its mailbox and to the other actors of its thread.
const DISPATCH_BATCH: usize = 256;

/// The rest of a model reply's calls, dispatched a batch at a time.
struct Dispatch {
    turn: u64,
    calls: std::iter::Enumerate<std::vec::IntoIter<ToolCall>>,
}

/// The addresses of an agent that its tasks need: where to cancel or
/// approve them (also listed in `Shared::owners`), and where their workers
/// report.
#[derive(Clone)]
pub(crate) struct Handles {
    pub(crate) owner: Arc<Owner>,
    pub(crate) report: Arc<Recipient<crate::messages::TaskFinished>>,
}

impl<R: Role> AgentActor<R> {
    /// The actor for `agent`, counted in its tree's census by `enlisted`
    /// (made when the agent was decided on: for a worker, with its seed).
    pub(crate) fn new(
        agent: Agent,
        role: R,
        shared: Arc<Shared>,
        policy: InputPolicy,
        attempt_timeout: Option<Duration>,
        enlisted: Enlisted,
    ) -> Self {
        let spec = &agent.spec;
        let (parent_span, started_by) = role.spans();
        let span = telemetry::agent_span(
            parent_span,
            started_by,
            &spec.name,
            role.task(),
            role.parent(),
            role.depth(),
        );
        let slot = if role.task().is_some() && shared.slots.is_some() {
            Slot::Free
        } else {
            Slot::NotNeeded
        };
        Self {
            turns: TurnLoop::new(spec.system_prompt.as_deref()),
            agent,
            role,
            shared,
            policy,
            model_request: None,
            tool_calls: Vec::new(),
            tasks: HashMap::default(),
            created: 0,
            slot,
            started: false,
            attempt_timeout,
            span,
            turn_span: tracing::Span::none(),
            result_spans: Vec::new(),
            journaled: 0,
            resumed_tasks: Vec::new(),
            journal_buffer: Vec::new(),
            ends_buffered: 0,
            concluding: Default::default(),
            handles: None,
            dispatching: None,
            starts: StartBatch::default(),
            defer_starts: false,
            suspending: false,
            enlisted: Some(enlisted),
        }
    }

    /// The addresses this agent's tasks keep, made on first use; the
    /// agent is then listed in `Shared::owners` (where to cancel or approve
    /// its tasks) until it stops.
    pub(crate) fn handles(&mut self, ctx: &mut Context<Self>) -> &Handles {
        let (owners, task) = (&self.shared.owners, self.role.task());
        self.handles.get_or_insert_with(|| {
            let addr = ctx.address();
            let owner = Arc::new(Owner {
                cancel: addr.clone().recipient(),
                decide: addr.clone().recipient(),
            });
            owners.insert(task, Arc::clone(&owner));
            Handles {
                owner,
                report: Arc::new(addr.recipient()),
            }
        })
    }

    fn name(&self) -> AgentName {
        self.agent.spec.name.clone()
    }

    /// Publishes the event `make` builds, building it only if someone
    /// listens: with no subscriber an event costs nothing.
    fn emit(&self, make: impl FnOnce() -> Event) {
        if self.shared.events.is_observed() {
            self.shared.events.publish(make());
        }
    }

    /// Starts the next turn if idle with queued input; otherwise, if idle,
    /// announces it and, when no task is running either, tells the role.
    fn advance(&mut self, ctx: &mut Context<Self>) {
        self.flush_journal();
        if !self.turns.is_idle() {
            return;
        }
        if self.turns.has_queued() {
            match self.slot {
                Slot::Free => self.request_slot(ctx),
                Slot::Requested => {}
                Slot::NotNeeded | Slot::Held(_) => self.start_turn(ctx),
            }
            return;
        }
        self.journal_history();
        self.emit(|| Event::Idle {
            agent: self.name(),
            task: self.role.task(),
            running_tasks: self.tasks.len(),
        });
        if self.tasks.is_empty() {
            if self
                .role
                .settled(self.turns.history().last_assistant_text())
            {
                ctx.stop();
            }
        } else if matches!(self.slot, Slot::Held(_)) {
            // Waiting only for its own tasks: give the slot to them.
            self.slot = Slot::Free;
        }
    }

    /// Asks for a slot in the tree's concurrency budget; `SlotGranted`
    /// arrives when one is free.
    fn request_slot(&mut self, ctx: &mut Context<Self>) {
        let Some(slots) = self.shared.slots.clone() else {
            self.slot = Slot::NotNeeded;
            return self.advance(ctx);
        };
        self.slot = Slot::Requested;
        let me = ctx.address();
        actix::spawn(async move {
            if let Ok(permit) = slots.acquire_owned().await {
                me.do_send(SlotGranted { permit });
            }
        });
    }

    /// A worker's attempt begins running: mark it, and start its clock.
    fn mark_started(&mut self, ctx: &mut Context<Self>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(task_id) = self.role.task() {
            if let Some(attempt) = self
                .shared
                .registry
                .set_status(task_id, TaskStatus::Running)
            {
                self.emit(|| Event::TaskStarted { task_id, attempt });
            }
        }
        if let Some(limit) = self.attempt_timeout {
            let after_ms = duration_ms(limit);
            ctx.notify_later(AttemptTimedOut { after_ms }, limit);
        }
    }

    fn start_turn(&mut self, ctx: &mut Context<Self>) {
        if self.shared.census.is_stopping() {
            // The tree is being stopped: no new model request (the agent's
            // `Shutdown` is on its way).
            return;
        }
        let Some(turn) = self.turns.begin_turn() else {
            return;
        };
        self.turn_span = telemetry::turn_span(&self.span, turn, self.result_spans.drain(..));
        self.journal_history();
        self.emit(|| Event::TurnStarted {
            agent: self.name(),
            task: self.role.task(),
            turn,
        });
        let used = self.shared.tokens_used.load(Ordering::Relaxed);
        if let Err(exceeded) = self.shared.limits.check_tokens(used) {
            self.refuse(exceeded);
            // Fail the turn without a request, through the usual path.
            ctx.address().do_send(ModelTurnDone {
                turn,
                result: Err(TurnError::Budget(exceeded)),
            });
            return;
        }
        let request = ChatRequest {
            agent: self.name(),
            messages: self.turns.history().snapshot(),
            tools: Arc::clone(&self.agent.spec.offered),
        };
        let model = Arc::clone(&self.agent.spec.model);
        let work = async move {
            match std::panic::catch_unwind(AssertUnwindSafe(|| model.complete(request))) {
                Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(reply) => reply.map_err(TurnError::from),
                    Err(panic) => Err(TurnError::Panicked(panic_message(panic.as_ref()))),
                },
                Err(panic) => Err(TurnError::Panicked(panic_message(panic.as_ref()))),
            }
        };
        // The request runs in the actor's own context (no task, address or
        // mailbox message of its own); stopping the actor drops it.
        let request = work
            .instrument(self.turn_span.clone())
            .into_actor(self)
            .map(move |result, act, ctx| act.model_turn_done(turn, result, ctx));
        self.model_request = Some(ctx.spawn(request));
    }

    /// Handles every call of a model reply: answers what can be answered at
    /// once, and starts the inline tools concurrently. A reply with many
    /// calls is handled [`DISPATCH_BATCH`] calls at a time, yielding to the
    /// mailbox and the thread's other actors in between: a reply that
    /// delegates 100,000 subtasks neither stalls the mailbox (cancels,
    /// approvals, user input under [`InputPolicy::Interrupt`]) nor holds
    /// back the sub-agents it has started.
    fn dispatch_calls(&mut self, turn: u64, calls: Vec<ToolCall>, ctx: &mut Context<Self>) {
        // The calls are in the journal before any of their tasks.
        self.journal_history();
        self.dispatching = Some(Dispatch {
            turn,
            calls: calls.into_iter().enumerate(),
        });
        self.dispatch_batch(ctx);
    }

    /// Dispatches the next batch of the reply's calls; schedules the rest.
    fn dispatch_batch(&mut self, ctx: &mut Context<Self>) {
        let Some(mut dispatch) = self.dispatching.take() else {
            return;
        };
        let current = dispatch.turn == self.turns.turn()
            && matches!(self.turns.phase(), Phase::RunningTools { .. });
        if !current {
            return;
        }
        let turn = dispatch.turn;
        let mut all_answered = false;
        self.defer_starts = true;
        for (index, call) in dispatch.calls.by_ref().take(DISPATCH_BATCH) {
            self.emit(|| Event::ToolCallStarted {
                agent: self.name(),
                task: self.role.task(),
                call_id: call.id.clone(),
                tool: call.name.clone(),
                arguments: call.arguments.clone(),
            });
            match self.plan_call(&call, ctx) {
                CallPlan::Answer(answer) => {
                    all_answered = self.record_answer(turn, index, answer);
                }
                CallPlan::Inline(fut) => self.spawn_inline(turn, index, call, fut, ctx),
            }
        }
        self.defer_starts = false;
        // The batch's records (its tasks' `TaskCreated`) go to the journal
        // before its workers start.
        self.start_deferred();
        if dispatch.calls.len() > 0 {
            self.dispatching = Some(dispatch);
            let next = tokio::task::yield_now()
                .into_actor(self)
                .map(|(), act, ctx| act.dispatch_batch(ctx));
            ctx.spawn(next);
        } else if all_answered {
            self.after_tools(ctx);
        }
    }

    fn plan_call(&mut self, call: &ToolCall, ctx: &mut Context<Self>) -> CallPlan {
        if let Some(parsed) =
            task_tools::parse(&call.name, &call.arguments, &self.agent.spec.delegate_names)
        {
            let answer = parsed.and_then(|c| self.run_task_tool(c, &call.id, ctx));
            return CallPlan::Answer(match answer {
                Ok(text) => ok_answer(call, text),
                Err(e) => error_answer(call, &e),
            });
        }
        let spec = &self.agent.spec;
        if let Some(tool) = find_tool(&spec.inline_tools, &call.name) {
            return match Arc::clone(tool).prepare(&call.arguments) {
                Ok(fut) => CallPlan::Inline(fut),
                Err(e) => CallPlan::Answer(error_answer(call, &e)),
            };
        }
        if let Some(tool) = find_tool(&spec.background_tools, &call.name) {
            let tool = Arc::clone(tool);
            // Validate the arguments now, so the model hears of bad ones at once.
            let answer = Arc::clone(&tool).prepare(&call.arguments).and_then(|_| {
                self.new_task(
                    TaskKind::Tool {
                        tool: call.name.clone(),
                    },
                    TaskWork::Tool {
                        tool,
                        arguments: call.arguments.clone(),
                    },
                    &call.id,
                    ctx,
                )
            });
            return CallPlan::Answer(match answer {
                Ok(text) => ok_answer(call, text),
                Err(e) => error_answer(call, &e),
            });
        }
        let available: Vec<&str> = self
            .agent
            .spec
            .offered
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        CallPlan::Answer(error_answer(
            call,
            &ToolError::UnknownTool {
                name: call.name.clone(),
                available: available.join(", "),
            },
        ))
    }

    fn run_task_tool(
        &mut self,
        call: TaskToolCall,
        call_id: &CallId,
        ctx: &mut Context<Self>,
    ) -> Result<String, ToolError> {
        match call {
            TaskToolCall::Create { agent, prompt } => self.delegate(agent, prompt, call_id, ctx),
            TaskToolCall::Check(id) => task_tools::check_task(&self.shared.registry, id),
            TaskToolCall::CheckAll => Ok(task_tools::check_all_tasks(
                &self.shared.registry,
                self.role.task(),
            )),
            TaskToolCall::Cancel(id) => {
                let reason = format!("cancelled by {}", self.agent.spec.name);
                match self.cancel_tree(id, &reason) {
                    Ok(status) => Ok(task_answer(id, status)),
                    Err(e) => Err(ToolError::Failed(e.to_string())),
                }
            }
        }
    }

    fn spawn_inline(
        &mut self,
        turn: u64,
        index: usize,
        call: ToolCall,
        fut: BoxFuture<'static, Result<ToolOutput, ToolError>>,
        ctx: &mut Context<Self>,
    ) {
        if self.shared.census.is_stopping() {
            // The tree is being stopped: no new tool call (the call stays
            // unanswered; the agent's `Shutdown` is on its way).
            return;
        }
        let timeout = self.agent.spec.tool_timeout;
        let me = ctx.address();
        let work = async move {
            let result =
                match tokio::time::timeout(timeout, AssertUnwindSafe(fut).catch_unwind()).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(panic)) => Err(ToolError::Panicked {
                        tool: call.name.clone(),
                        message: panic_message(panic.as_ref()),
                    }),
                    Err(_) => Err(ToolError::TimedOut {
                        tool: call.name.clone(),
                        after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    }),
                };
            let answer = match result {
                Ok(output) => ok_answer(&call, output.0),
                Err(e) => error_answer(&call, &e),
            };
            me.do_send(InlineToolDone {
                turn,
                index,
                answer,
            });
        };
        let span = tracing::info_span!(parent: &self.turn_span, "tool", turn, index);
        self.tool_calls.push(actix::spawn(work.instrument(span)));
    }

    /// Records one answer; returns `true` when it was the turn's last.
    fn record_answer(&mut self, turn: u64, index: usize, answer: Message) -> bool {
        if let Message::Tool {
            call_id,
            name,
            content,
            is_error,
        } = &answer
        {
            self.emit(|| Event::ToolCallFinished {
                agent: self.name(),
                task: self.role.task(),
                call_id: call_id.clone(),
                tool: name.clone(),
                ok: !is_error,
                output: content.clone(),
            });
        }
        self.turns.answer(turn, index, answer)
    }

    /// Every call of the turn is answered: ask the model again.
    fn after_tools(&mut self, ctx: &mut Context<Self>) {
        self.tool_calls.clear();
        self.start_turn(ctx);
    }

    fn abort_in_flight(&mut self, ctx: &mut Context<Self>) {
        // Calls not dispatched yet are answered by whoever ends the turn.
        self.dispatching = None;
        if let Some(request) = self.model_request.take() {
            ctx.cancel_future(request);
        }
        for call in self.tool_calls.drain(..) {
            call.abort();
        }
    }
}

fn find_tool<'a>(tools: &'a [Arc<dyn DynTool>], name: &str) -> Option<&'a Arc<dyn DynTool>> {
    tools.iter().find(|t| t.tool_name() == name)
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned())
}

impl<R: Role> Actor for AgentActor<R> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let _guard = self.span.clone().entered();
        if self.role.task().is_some() && self.shared.census.is_stopping() {
            // Built after the tree began stopping (its seed was on its way
            // to this thread then, or supervision restarted it since): it
            // does no work and stops at once, leaving its task as the stop
            // does (cancelled by its parent on shutdown, still running in
            // the journal on suspend). It must not report.
            tracing::debug!("the tree is stopping: the agent does not start");
            self.role.detach();
            ctx.stop();
            return;
        }
        if let Some(enlisted) = &mut self.enlisted {
            enlisted.started();
        }
        tracing::debug!("agent started");
        if matches!(self.slot, Slot::NotNeeded) {
            self.mark_started(ctx);
        }
        self.resume_tasks(ctx);
        self.advance(ctx);
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        let _guard = self.span.clone().entered();
        if self.role.task().is_none() {
            // The conversation stopped (also when its journal closed): so
            // does the whole tree, and nothing in it starts new work; no
            // `settled` waits for the tree's journal any more.
            self.shared.census.begin_stopping();
            self.shared.ends_from_above.close();
        }
        self.abort_in_flight(ctx);
        // First the results that ended but wait to be folded: they are
        // the truth about their tasks, which `cancel_all` would otherwise
        // journal as cancelled first.
        self.seal_waiting_results();
        if self.suspending {
            self.suspend_all(&format!("{} was suspended", self.agent.spec.name));
        } else if !self.tasks.is_empty() {
            self.cancel_all(&format!("{} stopped", self.agent.spec.name));
        }
        self.flush_journal();
        if let Some(handles) = &self.handles {
            // Only this agent's own entry: a later attempt of the same task
            // may have listed itself already.
            self.shared
                .owners
                .remove_if(&self.role.task(), |_, o| Arc::ptr_eq(o, &handles.owner));
        }
        tracing::debug!("agent stopped");
        // Last: everything this agent journals is handed over by now, so
        // once the census is empty the journal gets nothing more from it.
        drop(self.enlisted.take());
    }
}

impl<R: Role> Drop for AgentActor<R> {
    fn drop(&mut self) {
        // An agent dropped without stopping (its thread panicked) journals
        // nothing more: nothing is to wait for the ends from above it had.
        let open = |(id, own): (&TaskId, &OwnTask)| own.is_open().then_some(*id);
        let unjournaled = if self.shared.journal.is_some() {
            self.tasks
                .iter()
                .filter_map(open)
                .filter(|id| self.ended_above(*id))
                .count()
        } else {
            0
        };
        self.shared
            .ends_from_above
            .journaled(unjournaled + std::mem::take(&mut self.ends_buffered));
    }
}

impl<R: Role> Handler<UserInput> for AgentActor<R> {
    type Result = ();

    fn handle(&mut self, msg: UserInput, ctx: &mut Context<Self>) {
        let _guard = self.span.clone().entered();
        self.emit(|| Event::UserMessage {
            text: msg.text.clone(),
        });
        self.turns.enqueue(Message::user(msg.text));
        if self.policy == InputPolicy::Interrupt && !self.turns.is_idle() {
            self.abort_in_flight(ctx);
            if let Some(turn) = self.turns.interrupt() {
                self.emit(|| Event::TurnInterrupted {
                    agent: self.name(),
                    task: self.role.task(),
                    turn,
                });
            }
        }
        self.advance(ctx);
    }
}

impl<R: Role> Handler<ModelTurnDone> for AgentActor<R> {
    type Result = ();

    fn handle(&mut self, msg: ModelTurnDone, ctx: &mut Context<Self>) {
        self.model_turn_done(msg.turn, msg.result, ctx);
    }
}

impl<R: Role> AgentActor<R> {
    /// A model request finished: the reply of turn `turn`, or why there is none.
    fn model_turn_done(
        &mut self,
        turn: u64,
        result: Result<baton_llm::ChatResponse, TurnError>,
        ctx: &mut Context<Self>,
    ) {
        let _guard = self.span.clone().entered();
        let msg = ModelTurnDone { turn, result };
        match msg.result {
            Ok(reply) => {
                let usage = reply.usage;
                self.shared
                    .tokens_used
                    .fetch_add(usage.total(), Ordering::Relaxed);
                if let Some(task_id) = self.role.task().filter(|_| usage.total() > 0) {
                    self.shared.registry.add_tokens(task_id, usage.total());
                }
                // Only a listener needs the text apart from history.
                let text = if self.shared.events.is_observed() {
                    reply.content.clone()
                } else {
                    None
                };
                let Some(calls) = self.turns.accept_reply(msg.turn, reply) else {
                    return;
                };
                self.model_request = None;
                self.emit(|| Event::TurnFinished {
                    agent: self.name(),
                    task: self.role.task(),
                    turn: msg.turn,
                    usage,
                });
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    self.emit(|| Event::AssistantMessage {
                        agent: self.name(),
                        task: self.role.task(),
                        text,
                    });
                }
                if calls.is_empty() {
                    self.advance(ctx);
                } else {
                    self.dispatch_calls(msg.turn, calls, ctx);
                }
            }
            Err(error) => {
                if !self.turns.fail_turn(msg.turn) {
                    return;
                }
                self.model_request = None;
                let error = error.to_string();
                tracing::warn!(%error, turn = msg.turn, "model request failed");
                self.emit(|| Event::TurnFailed {
                    agent: self.name(),
                    task: self.role.task(),
                    turn: msg.turn,
                    error: error.clone(),
                });
                if self.role.failed(&error) {
                    ctx.stop();
                } else {
                    self.advance(ctx);
                }
            }
        }
    }
}

impl<R: Role> Handler<InlineToolDone> for AgentActor<R> {
    type Result = ();

    fn handle(&mut self, msg: InlineToolDone, ctx: &mut Context<Self>) {
        let _guard = self.span.clone().entered();
        if msg.turn == self.turns.turn() && self.record_answer(msg.turn, msg.index, msg.answer) {
            self.after_tools(ctx);
        }
    }
}

impl<R: Role> Handler<SlotGranted> for AgentActor<R> {
    type Result = ();

    fn handle(&mut self, msg: SlotGranted, ctx: &mut Context<Self>) {
        let _guard = self.span.clone().entered();
        if self.shared.census.is_stopping() {
            // The tree is being stopped: the attempt does not begin (no
            // `TaskStarted`, no clock, no turn). The slot goes back; the
            // agent's `Shutdown` is on its way.
            return;
        }
        self.slot = Slot::Held(msg.permit);
        self.mark_started(ctx);
        if self.turns.is_idle() && self.turns.has_queued() {
            self.start_turn(ctx);
        } else {
            self.advance(ctx);
        }
    }
}

impl<R: Role> Handler<AttemptTimedOut> for AgentActor<R> {
    type Result = ();

    fn handle(&mut self, msg: AttemptTimedOut, ctx: &mut Context<Self>) {
        let _guard = self.span.clone().entered();
        tracing::warn!(after_ms = msg.after_ms, "attempt timed out");
        if self.role.timed_out(msg.after_ms) {
            ctx.stop();
        }
    }
}

impl<R: Role> Handler<GetHistory> for AgentActor<R> {
    type Result = actix::MessageResult<GetHistory>;

    fn handle(&mut self, _msg: GetHistory, _ctx: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.turns.history().clone())
    }
}

impl<R: Role> Handler<Shutdown> for AgentActor<R> {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        let _guard = self.span.clone().entered();
        self.role.detach();
        self.abort_in_flight(ctx);
        if msg.suspend {
            // The results that ended are the truth about their tasks: they
            // go to the journal before the sender hears back (and syncs).
            self.suspending = true;
            self.seal_waiting_results();
            self.suspend_all(&msg.reason);
            self.flush_journal();
        } else {
            self.cancel_all(&msg.reason);
        }
        ctx.stop();
    }
}

impl Handler<WhenSettled> for OrchestratorActor {
    type Result = ResponseFuture<Result<(), crate::RuntimeError>>;

    fn handle(&mut self, _msg: WhenSettled, _ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.turns.is_idle() && !self.turns.has_queued() && self.tasks.is_empty() {
            let _ = tx.send(());
        } else {
            self.role.waiters.push(tx);
        }
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            if rx.await.is_err() {
                // The conversation stopped (shut down, suspended, or its
                // journal closed) before it settled.
                return Err(shared.stopped_error());
            }
            // The ends of cancelled subtrees, journaled by their owners
            // (workers that may not have handled their `Shutdown` yet).
            // If the conversation stops first, it never settled: the log
            // may never hold those ends.
            if !shared.ends_from_above.all_journaled().await {
                return Err(shared.stopped_error());
            }
            // Settled includes durable: an empty append resolves once
            // everything appended before it is in the journal.
            match &shared.journal {
                Some(journal) => {
                    let synced = journal.append(Vec::new());
                    Ok(until_durable(&**journal, synced, "settling").await?)
                }
                None => Ok(()),
            }
        })
    }
}

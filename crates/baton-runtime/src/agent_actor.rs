//! [`AgentActor`]: the actor that runs one agent's model/tool loop.
//!
//! The conversation is an [`OrchestratorActor`] (an `AgentActor<Root>`);
//! each delegated subtask runs in a [`ModelActor`] (an `AgentActor<Worker>`).
//! Both handle one mailbox message at a time and never await a model or a
//! tool inside a handler: requests run as spawned futures whose results come
//! back as [`ModelTurnDone`], [`InlineToolDone`] and [`TaskFinished`]
//! messages. The history rules live in [`TurnLoop`]; the handlers here are
//! short and start or stop work.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, ResponseFuture};
use baton_core::{
    AgentName, DynTool, Event, EventBus, Message, TaskId, TaskKind, TaskOutcome, TaskRegistry,
    TaskStatus, ToolCall, ToolError, ToolSpec,
};
use baton_llm::ChatRequest;
use futures::FutureExt;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::agent::Agent;
use crate::error::RuntimeError;
use crate::messages::{
    CancelTask, GetHistory, InlineToolDone, ModelTurnDone, Shutdown, TaskFinished, TurnError,
    UserInput, WhenSettled,
};
use crate::role::{Role, Root, Worker};
use crate::task_tools::{self, TaskToolCall};
use crate::turn_loop::{error_answer, ok_answer, TurnLoop};

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

/// The state every agent in one tree shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) registry: TaskRegistry,
    pub(crate) events: EventBus,
}

/// A task this agent started and can stop.
enum RunningTask {
    Tool(JoinHandle<()>),
    Worker(Addr<ModelActor>),
}

/// How one tool call of a model reply is handled.
enum CallPlan {
    /// Answered at once (task tools, unknown tools, invalid arguments,
    /// background tools).
    Answer(Message),
    /// Run concurrently with the turn's other inline calls.
    Inline(futures::future::BoxFuture<'static, Result<baton_core::ToolOutput, ToolError>>),
}

/// The actor running one agent; see the module docs.
pub struct AgentActor<R: Role> {
    agent: Agent,
    role: R,
    shared: Shared,
    policy: InputPolicy,
    turns: TurnLoop,
    offered: Arc<Vec<ToolSpec>>,
    delegates: Vec<AgentName>,
    model_request: Option<JoinHandle<()>>,
    tool_calls: Vec<JoinHandle<()>>,
    tasks: HashMap<TaskId, RunningTask>,
    span: tracing::Span,
}

impl<R: Role> AgentActor<R> {
    pub(crate) fn new(agent: Agent, role: R, shared: Shared, policy: InputPolicy) -> Self {
        let spec = &agent.spec;
        let delegates: Vec<AgentName> = spec.delegates.iter().map(|a| a.name().clone()).collect();
        let mut offered: Vec<ToolSpec> = spec
            .inline_tools
            .iter()
            .chain(&spec.background_tools)
            .map(|t| t.spec())
            .collect();
        offered.extend(task_tools::specs(
            &delegates,
            !spec.background_tools.is_empty(),
        ));
        let span = tracing::info_span!(
            "agent",
            agent = %spec.name,
            task_id = role.task().map(|t| t.to_string()),
            parent = role.parent().map(|t| t.to_string()),
            depth = role.depth(),
        );
        Self {
            turns: TurnLoop::new(spec.system_prompt.as_deref()),
            offered: Arc::new(offered),
            delegates,
            agent,
            role,
            shared,
            policy,
            model_request: None,
            tool_calls: Vec::new(),
            tasks: HashMap::new(),
            span,
        }
    }

    fn name(&self) -> AgentName {
        self.agent.spec.name.clone()
    }

    fn emit(&self, event: Event) {
        self.shared.events.publish(event);
    }

    /// Starts the next turn if idle with queued input; otherwise, if idle,
    /// announces it and, when no task is running either, tells the role.
    fn advance(&mut self, ctx: &mut Context<Self>) {
        if !self.turns.is_idle() {
            return;
        }
        if self.turns.has_queued() {
            self.start_turn(ctx);
            return;
        }
        self.emit(Event::Idle {
            agent: self.name(),
            task: self.role.task(),
            running_tasks: self.tasks.len(),
        });
        if self.tasks.is_empty()
            && self
                .role
                .settled(self.turns.history().last_assistant_text())
        {
            ctx.stop();
        }
    }

    fn start_turn(&mut self, ctx: &mut Context<Self>) {
        let Some(turn) = self.turns.begin_turn() else {
            return;
        };
        self.emit(Event::TurnStarted {
            agent: self.name(),
            task: self.role.task(),
            turn,
        });
        let request = ChatRequest {
            agent: self.name(),
            messages: self.turns.history().snapshot(),
            tools: Arc::clone(&self.offered),
        };
        let model = Arc::clone(&self.agent.spec.model);
        let me = ctx.address();
        let work = async move {
            let result =
                match std::panic::catch_unwind(AssertUnwindSafe(|| model.complete(request))) {
                    Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                        Ok(reply) => reply.map_err(TurnError::from),
                        Err(panic) => Err(TurnError::Panicked(panic_message(panic.as_ref()))),
                    },
                    Err(panic) => Err(TurnError::Panicked(panic_message(panic.as_ref()))),
                };
            me.do_send(ModelTurnDone { turn, result });
        };
        self.model_request = Some(actix::spawn(work.instrument(self.span.clone())));
    }

    /// Handles every call of a model reply: answers what can be answered at
    /// once, and starts the inline tools concurrently.
    fn dispatch_calls(&mut self, turn: u64, calls: Vec<ToolCall>, ctx: &mut Context<Self>) {
        let mut all_answered = false;
        for (index, call) in calls.into_iter().enumerate() {
            self.emit(Event::ToolCallStarted {
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
        if all_answered {
            self.after_tools(ctx);
        }
    }

    fn plan_call(&mut self, call: &ToolCall, ctx: &mut Context<Self>) -> CallPlan {
        if let Some(parsed) = task_tools::parse(&call.name, &call.arguments, &self.delegates) {
            let answer = parsed.and_then(|c| self.run_task_tool(c, ctx));
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
            let answer = Arc::clone(tool)
                .prepare(&call.arguments)
                .map(|fut| self.start_background(&call.name, fut, ctx));
            return CallPlan::Answer(match answer {
                Ok(text) => ok_answer(call, text),
                Err(e) => error_answer(call, &e),
            });
        }
        let available: Vec<&str> = self.offered.iter().map(|s| s.name.as_str()).collect();
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
        ctx: &mut Context<Self>,
    ) -> Result<String, ToolError> {
        match call {
            TaskToolCall::Create { agent, prompt } => Ok(self.delegate(agent, prompt, ctx)),
            TaskToolCall::Check(id) => task_tools::check_task(&self.shared.registry, id),
            TaskToolCall::CheckAll => Ok(task_tools::check_all_tasks(
                &self.shared.registry,
                self.role.task(),
            )),
            TaskToolCall::Cancel(id) => {
                let reason = format!("cancelled by {}", self.agent.spec.name);
                match self.cancel(id, &reason) {
                    Ok(status) => {
                        Ok(serde_json::json!({"task_id": id, "status": status}).to_string())
                    }
                    Err(e) => Err(ToolError::Failed(e.to_string())),
                }
            }
        }
    }

    fn create_task(&self, kind: TaskKind) -> TaskId {
        let id = self
            .shared
            .registry
            .create(self.role.task(), self.name(), kind.clone());
        self.emit(Event::TaskCreated {
            task_id: id,
            parent: self.role.task(),
            owner: self.name(),
            kind,
        });
        id
    }

    /// Starts a background tool as a task; returns the call's answer.
    fn start_background(
        &mut self,
        tool: &str,
        fut: futures::future::BoxFuture<'static, Result<baton_core::ToolOutput, ToolError>>,
        ctx: &mut Context<Self>,
    ) -> String {
        let task_id = self.create_task(TaskKind::Tool {
            tool: tool.to_owned(),
        });
        let me = ctx.address();
        let tool = tool.to_owned();
        let work = async move {
            let outcome = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(Ok(output)) => TaskOutcome::Succeeded { output: output.0 },
                Ok(Err(e)) => TaskOutcome::Failed {
                    error: e.to_string(),
                },
                Err(panic) => TaskOutcome::Failed {
                    error: ToolError::Panicked {
                        tool,
                        message: panic_message(panic.as_ref()),
                    }
                    .to_string(),
                },
            };
            me.do_send(TaskFinished { task_id, outcome });
        };
        let span = tracing::info_span!(parent: &self.span, "task", task_id = %task_id);
        let handle = actix::spawn(work.instrument(span));
        self.tasks.insert(task_id, RunningTask::Tool(handle));
        running_answer(task_id)
    }

    /// Delegates `prompt` to a new worker running `agent`; returns the
    /// call's answer.
    fn delegate(&mut self, agent: AgentName, prompt: String, ctx: &mut Context<Self>) -> String {
        let Some(spec) = self
            .agent
            .spec
            .delegates
            .iter()
            .find(|a| *a.name() == agent)
            .cloned()
        else {
            // `task_tools::parse` only lets through names in `delegates`.
            return serde_json::json!({"error": format!("no sub-agent `{agent}`")}).to_string();
        };
        let task_id = self.create_task(TaskKind::Delegation {
            agent,
            prompt: prompt.clone(),
        });
        let worker = Worker {
            task_id,
            parent: self.role.task(),
            depth: self.role.depth() + 1,
            report_to: Some(ctx.address().recipient()),
        };
        let mut actor = ModelActor::new(spec, worker, self.shared.clone(), InputPolicy::Queue);
        actor.turns.enqueue(Message::user(prompt));
        let addr = actor.start();
        self.tasks.insert(task_id, RunningTask::Worker(addr));
        running_answer(task_id)
    }

    fn spawn_inline(
        &mut self,
        turn: u64,
        index: usize,
        call: ToolCall,
        fut: futures::future::BoxFuture<'static, Result<baton_core::ToolOutput, ToolError>>,
        ctx: &mut Context<Self>,
    ) {
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
        let span = tracing::info_span!(parent: &self.span, "tool", turn, index);
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
            self.emit(Event::ToolCallFinished {
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

    fn abort_in_flight(&mut self) {
        if let Some(request) = self.model_request.take() {
            request.abort();
        }
        for call in self.tool_calls.drain(..) {
            call.abort();
        }
    }

    /// Cancels one of this agent's own tasks and everything under it.
    fn cancel(&mut self, id: TaskId, reason: &str) -> Result<TaskStatus, RuntimeError> {
        let Some(record) = self.shared.registry.get(id) else {
            return Err(RuntimeError::UnknownTask(id));
        };
        if record.parent != self.role.task() {
            return Err(RuntimeError::NotOwned(id));
        }
        let Some(running) = self.tasks.remove(&id) else {
            return Ok(record.status);
        };
        let outcome = TaskOutcome::Cancelled {
            reason: reason.to_owned(),
        };
        if self.shared.registry.finish(id, outcome.clone()) {
            self.emit(Event::TaskFinished {
                task_id: id,
                outcome,
            });
        }
        match running {
            RunningTask::Tool(handle) => handle.abort(),
            RunningTask::Worker(addr) => addr.do_send(Shutdown {
                reason: reason.to_owned(),
            }),
        }
        Ok(TaskStatus::Cancelled)
    }

    fn cancel_all(&mut self, reason: &str) {
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let _ = self.cancel(id, reason);
        }
    }
}

fn find_tool<'a>(tools: &'a [Arc<dyn DynTool>], name: &str) -> Option<&'a Arc<dyn DynTool>> {
    tools.iter().find(|t| t.tool_name() == name)
}

fn running_answer(task_id: TaskId) -> String {
    serde_json::json!({"task_id": task_id, "status": "running"}).to_string()
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
        tracing::debug!("agent started");
        if self.turns.has_queued() {
            self.start_turn(ctx);
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let _guard = self.span.clone().entered();
        self.abort_in_flight();
        self.cancel_all(&format!("{} stopped", self.agent.spec.name));
        tracing::debug!("agent stopped");
    }
}

impl<R: Role> Handler<UserInput> for AgentActor<R> {
    type Result = ();

    fn handle(&mut self, msg: UserInput, ctx: &mut Context<Self>) {
        let _guard = self.span.clone().entered();
        self.emit(Event::UserMessage {
            text: msg.text.clone(),
        });
        self.turns.enqueue(Message::user(msg.text));
        if self.policy == InputPolicy::Interrupt && !self.turns.is_idle() {
            self.abort_in_flight();
            if let Some(turn) = self.turns.interrupt() {
                self.emit(Event::TurnInterrupted {
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
        let _guard = self.span.clone().entered();
        match msg.result {
            Ok(reply) => {
                let usage = reply.usage;
                let text = reply.content.clone();
                let Some(calls) = self.turns.accept_reply(msg.turn, reply) else {
                    return;
                };
                self.model_request = None;
                self.emit(Event::TurnFinished {
                    agent: self.name(),
                    task: self.role.task(),
                    turn: msg.turn,
                    usage,
                });
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    self.emit(Event::AssistantMessage {
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
                self.emit(Event::TurnFailed {
                    agent: self.name(),
                    task: self.role.task(),
                    turn: msg.turn,
                    error: error.clone(),
                });
                if self.role.model_failed(&error) {
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

impl<R: Role> Handler<TaskFinished> for AgentActor<R> {
    type Result = ();

    fn handle(&mut self, msg: TaskFinished, ctx: &mut Context<Self>) {
        let _guard = self.span.clone().entered();
        // A task cancelled meanwhile, or a second report, changes nothing.
        if self.tasks.remove(&msg.task_id).is_none()
            || !self
                .shared
                .registry
                .finish(msg.task_id, msg.outcome.clone())
        {
            tracing::debug!(task_id = %msg.task_id, "ignored a report for an ended task");
            return;
        }
        let source = self
            .shared
            .registry
            .get(msg.task_id)
            .map(|r| r.kind.source())
            .unwrap_or_else(|| AgentName::new("unknown"));
        self.emit(Event::TaskFinished {
            task_id: msg.task_id,
            outcome: msg.outcome.clone(),
        });
        self.turns.enqueue(Message::TaskResult {
            task_id: msg.task_id,
            source,
            outcome: msg.outcome,
        });
        self.advance(ctx);
    }
}

impl<R: Role> Handler<CancelTask> for AgentActor<R> {
    type Result = Result<TaskStatus, RuntimeError>;

    fn handle(&mut self, msg: CancelTask, ctx: &mut Context<Self>) -> Self::Result {
        let _guard = self.span.clone().entered();
        let was_running = self.tasks.contains_key(&msg.task_id);
        let status = self.cancel(msg.task_id, &msg.reason)?;
        if was_running {
            // The model did not ask for this: tell it.
            let source = self
                .shared
                .registry
                .get(msg.task_id)
                .map(|r| r.kind.source())
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
        self.abort_in_flight();
        self.cancel_all(&msg.reason);
        ctx.stop();
    }
}

impl Handler<WhenSettled> for OrchestratorActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: WhenSettled, _ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.turns.is_idle() && !self.turns.has_queued() && self.tasks.is_empty() {
            let _ = tx.send(());
        } else {
            self.role.waiters.push(tx);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

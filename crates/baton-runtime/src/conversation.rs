//! [`Orchestrator`] starts a conversation; [`Conversation`] is the handle
//! a program holds to talk to it, watch it and steer its tasks.

use actix::{Actor, Addr, AsyncContext};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use baton_core::{
    EventBus, EventEnvelope, History, Journal, JournalRecord, Replay, TaskId, TaskRecord,
    TaskRegistry, TaskStatus, TaskTree,
};
use tokio::sync::broadcast;

use crate::agent::Agent;
use crate::agent_actor::{until_durable, InputPolicy, OrchestratorActor, Shared};
use crate::error::RuntimeError;
use crate::messages::{CancelTask, Decide, GetHistory, Shutdown, UserInput, WhenSettled};
use crate::role::Root;

/// Starts conversations. Must be called from inside a running actix system
/// (`#[actix::main]`, `actix_rt::System::new().block_on(..)`, or
/// `#[actix_rt::test]`).
///
/// ```
/// use baton_runtime::{Agent, Orchestrator};
/// use baton_llm::{ScriptedModel, ScriptedTurn};
///
/// actix_rt::System::new().block_on(async {
///     let model = ScriptedModel::new().script("assistant", [ScriptedTurn::text("Hello!")]);
///     let convo = Orchestrator::start(Agent::builder("assistant").model(model).build());
///     convo.send_user("Hi").await.unwrap();
///     convo.settled().await.unwrap();
///     let history = convo.history().await.unwrap();
///     assert_eq!(history.last_assistant_text(), Some("Hello!"));
/// });
/// ```
pub struct Orchestrator {
    agent: Agent,
    policy: InputPolicy,
    event_capacity: usize,
    worker_threads: Option<usize>,
    journal: Option<Arc<dyn Journal>>,
    replay: Option<Replay>,
    parent_span: Option<tracing::Span>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("agent", &self.agent)
            .field("policy", &self.policy)
            .field("durable", &self.journal.is_some())
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// Starts a conversation with `agent` and default options.
    pub fn start(agent: Agent) -> Conversation {
        Self::builder(agent).spawn()
    }

    /// Configures a conversation before starting it.
    pub fn builder(agent: Agent) -> Self {
        Self {
            agent,
            policy: InputPolicy::default(),
            event_capacity: EventBus::DEFAULT_CAPACITY,
            worker_threads: None,
            journal: None,
            replay: None,
            parent_span: None,
        }
    }

    /// What happens to user input that arrives mid-turn (default: queue it).
    pub fn input_policy(mut self, policy: InputPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How many events a subscriber may fall behind before it loses the
    /// oldest (default [`EventBus::DEFAULT_CAPACITY`]).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// How many threads (actix arbiters) the tree's sub-agents run on,
    /// round-robin. The default is one per core, or 0 under
    /// [`crate::virtual_time::block_on_paused`]; 0 runs every agent on the
    /// conversation's own thread.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = Some(threads);
        self
    }

    /// Makes the conversation durable: user inputs are acknowledged once
    /// they are in `journal`, task results are in it before history shows
    /// them, and every history message and task is written to it, so the
    /// conversation can be resumed after a crash.
    pub fn journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Starts from a journal's replay instead of from scratch: history,
    /// inputs not yet answered and the task table come back; the
    /// conversation's unfinished tasks start again (those of tools that are
    /// not idempotent end as `Interrupted`, and the model is told).
    pub fn resume(mut self, replay: Replay) -> Self {
        self.replay = Some(replay);
        self
    }

    /// Nests the conversation's spans under `span` (by default the
    /// conversation's span is a root): a request's span in a server, or
    /// on a remote worker the [`crate::telemetry::remote_task_span`] that
    /// continues the delegating process's trace. The conversation keeps
    /// the span open while it runs.
    pub fn parent_span(mut self, span: tracing::Span) -> Self {
        self.parent_span = Some(span);
        self
    }

    /// Starts the conversation actor.
    pub fn spawn(self) -> Conversation {
        let threads = self
            .worker_threads
            .unwrap_or_else(crate::arbiter_pool::default_threads);
        let shared = Arc::new(Shared::new(
            self.agent.spec.limits,
            self.event_capacity,
            threads,
            self.journal,
        ));
        let root = self.agent.name().clone();
        let enlisted = shared.census.enlist();
        let mut actor = OrchestratorActor::new(
            self.agent,
            Root {
                parent_span: self.parent_span,
                ..Root::default()
            },
            Arc::clone(&shared),
            self.policy,
            None,
            enlisted,
        );
        if let Some(replay) = self.replay {
            actor.resume_from(replay);
        }
        let addr = OrchestratorActor::create(|ctx| {
            // Before any agent of the tree runs: where they stop it from.
            let _ = shared.root.set(ctx.address().downgrade().recipient());
            actor
        });
        let inputs = Inputs::start(Arc::clone(&shared), addr.clone()).map(Arc::new);
        Conversation {
            addr,
            shared,
            root,
            inputs,
        }
    }
}

/// A durable conversation's user inputs on their way in: each is journaled,
/// then delivered once durable, strictly in the order they were journaled.
/// (Delivered each on its own, an input whose append failed would arrive
/// after a later one that made it durable: history would then differ from
/// the log, and a resume would lose one input and repeat another.)
struct Inputs {
    /// Appends and queues under one lock, so the queue's order is the
    /// journal's.
    queue: std::sync::Mutex<InputQueue>,
    journal: Arc<dyn Journal>,
    /// How many inputs are journaled and not delivered yet (`settled`
    /// waits for none).
    pending: tokio::sync::watch::Sender<usize>,
}

struct InputQueue {
    tx: tokio::sync::mpsc::UnboundedSender<Input>,
    /// Set when the conversation is stopped on purpose: an input sent
    /// later is refused before it is journaled.
    closed: bool,
}

/// One input: its append's future, its text, and who waits for it.
struct Input {
    durable: crate::agent_actor::Durable,
    text: String,
    delivered: tokio::sync::oneshot::Sender<Result<(), RuntimeError>>,
}

impl Inputs {
    /// Starts the task that delivers the inputs, one after the other.
    fn start(shared: Arc<Shared>, addr: Addr<OrchestratorActor>) -> Option<Self> {
        let journal = Arc::clone(shared.journal.as_ref()?);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Input>();
        let pending = tokio::sync::watch::Sender::new(0usize);
        let delivered = pending.clone();
        let deliverer = Arc::clone(&journal);
        tokio::spawn(async move {
            while let Some(input) = rx.recv().await {
                let result = match until_durable(&*deliverer, input.durable, "a user input").await {
                    // Durable, so accepted: a conversation stopped meanwhile
                    // finds it in its log when resumed.
                    Ok(()) => {
                        let _ = addr.send(UserInput { text: input.text }).await;
                        Ok(())
                    }
                    Err(e) => {
                        // Closed for good: the conversation stops (if no
                        // agent has found out first).
                        shared.close_journal(&e);
                        Err(e.into())
                    }
                };
                delivered.send_modify(|n| *n = n.saturating_sub(1));
                let _ = input.delivered.send(result);
            }
        });
        Some(Self {
            queue: std::sync::Mutex::new(InputQueue { tx, closed: false }),
            journal,
            pending,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InputQueue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Journals `text` and queues it for delivery; the receiver says when
    /// it was delivered (or why not). Refused, and not journaled, once the
    /// conversation was stopped.
    fn send(
        &self,
        text: String,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), RuntimeError>>, RuntimeError> {
        let queue = self.lock();
        if queue.closed {
            return Err(RuntimeError::Stopped);
        }
        let (delivered, done) = tokio::sync::oneshot::channel();
        let durable = self
            .journal
            .append(vec![JournalRecord::UserInput { text: text.clone() }]);
        self.pending.send_modify(|n| *n += 1);
        // A send fails only once the delivering task is gone (the runtime
        // is shutting down): then the dropped sender answers `Stopped`.
        let _ = queue.tx.send(Input {
            durable,
            text,
            delivered,
        });
        Ok(done)
    }

    /// No input is taken from now on (the conversation is being stopped).
    fn close(&self) {
        self.lock().closed = true;
    }

    /// Resolves once every input journaled so far has been delivered.
    async fn drained(&self) {
        let mut pending = self.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }
}

/// The handle to a running conversation. Cheap to clone; every clone talks
/// to the same conversation.
#[derive(Clone)]
pub struct Conversation {
    addr: Addr<OrchestratorActor>,
    shared: Arc<Shared>,
    root: baton_core::AgentName,
    /// With a journal: where inputs are journaled and delivered in order.
    inputs: Option<Arc<Inputs>>,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("agent", &self.root)
            .finish_non_exhaustive()
    }
}

impl Conversation {
    /// A new subscriber to the conversation's events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EventEnvelope> {
        self.shared.events.subscribe()
    }

    /// Says something to the conversation. Returns once the input is in the
    /// conversation's mailbox; the agent answers in its own time.
    ///
    /// With a journal, the input is journaled first and delivered once its
    /// record is durable. A journal never withdraws a record (see
    /// [`Journal`]), so the input is accepted as soon as it is handed over:
    /// if the journal fails, this waits (trying again after 200 ms,
    /// doubling up to 5 s) until the record is durable, and the input is
    /// delivered then even if this future was dropped meanwhile. (Failing
    /// here would leave the input in the log but not in the conversation,
    /// or have it sent twice by a caller trying again.) Inputs are
    /// delivered in the order they were journaled, also when sent at once
    /// from several tasks. Only a journal closed for good fails it:
    /// [`RuntimeError::Journal`], and the input is not delivered; and once
    /// the conversation was shut down or suspended, an input is refused
    /// ([`RuntimeError::Stopped`]) before it is journaled. (One journaled
    /// before is accepted: a conversation resumed from the log gets it.)
    pub async fn send_user(&self, text: impl Into<String>) -> Result<(), RuntimeError> {
        let text = text.into();
        let Some(inputs) = &self.inputs else {
            self.addr.send(UserInput { text }).await?;
            return Ok(());
        };
        if let Some(error) = self.shared.journal_closed.get() {
            return Err(error.clone().into());
        }
        inputs
            .send(text)?
            .await
            .unwrap_or(Err(RuntimeError::Stopped))
    }

    /// One task's record, read from the registry without a mailbox round
    /// trip: it answers at once even while the conversation is busy.
    pub fn check_task(&self, id: TaskId) -> Option<TaskRecord> {
        self.shared.registry.get(id)
    }

    /// Every task of the tree, oldest first (read from the registry).
    pub fn tasks(&self) -> Vec<TaskRecord> {
        self.shared.registry.all()
    }

    /// The shared task registry of this conversation's tree.
    pub fn registry(&self) -> &TaskRegistry {
        &self.shared.registry
    }

    /// A snapshot of the delegation tree, from the registry.
    pub fn tree(&self) -> TaskTree {
        TaskTree::snapshot(self.root.clone(), &self.shared.registry)
    }

    /// How many agents of this conversation's tree are running: started
    /// and not stopped yet, the conversation's own included. A sub-agent
    /// counts once it has started on its thread (not while it is on its
    /// way there). 0 once [`Conversation::shutdown`] or
    /// [`Conversation::suspend`] has returned: they wait for every agent,
    /// those on their way included.
    pub fn live_agents(&self) -> usize {
        self.shared.census.running()
    }

    /// Tokens used by the whole tree so far.
    pub fn tokens_used(&self) -> u64 {
        self.shared.tokens_used.load(Ordering::Relaxed)
    }

    /// Cancels any task of the tree and everything under it, and nothing
    /// else; the agent that created it is told in its next turn. A task that
    /// has already ended keeps its status, which is returned.
    ///
    /// The whole subtree reads cancelled once this returns. With a
    /// journal, each task's end is journaled by the agent that owns it,
    /// after the task's `TaskCreated` (the tasks below, as their agents
    /// stop): [`Conversation::settled`] waits for them.
    pub async fn cancel_task(&self, id: TaskId) -> Result<TaskStatus, RuntimeError> {
        let (status, parent) = self
            .shared
            .registry
            .status_and_parent(id)
            .ok_or(RuntimeError::UnknownTask(id))?;
        let Some(owner) = self.owner(parent, status) else {
            return Ok(status);
        };
        owner
            .cancel
            .send(CancelTask {
                task_id: id,
                reason: "cancelled by the user".into(),
            })
            .await?
    }

    /// Approves a task that waits for approval: it starts running.
    ///
    /// Once the conversation is being stopped (shut down, suspended, or its
    /// journal closed) nothing starts: this fails with
    /// [`RuntimeError::Stopped`] (or [`RuntimeError::Journal`]), and the
    /// task keeps waiting (a suspended conversation keeps it so in its
    /// journal, to approve once resumed).
    pub async fn approve(&self, id: TaskId) -> Result<TaskStatus, RuntimeError> {
        self.decide(id, Ok(())).await
    }

    /// Rejects a task that waits for approval: it fails with `reason`, and
    /// the agent that created it is told.
    pub async fn reject(
        &self,
        id: TaskId,
        reason: impl Into<String>,
    ) -> Result<TaskStatus, RuntimeError> {
        self.decide(id, Err(reason.into())).await
    }

    async fn decide(
        &self,
        id: TaskId,
        decision: Result<(), String>,
    ) -> Result<TaskStatus, RuntimeError> {
        let (status, parent) = self
            .shared
            .registry
            .status_and_parent(id)
            .ok_or(RuntimeError::UnknownTask(id))?;
        let Some(owner) = self.owner(parent, status) else {
            if status == TaskStatus::AwaitingApproval && self.shared.census.is_stopping() {
                // Its owner has stopped with the tree (on suspend the task
                // waits in the journal): the conversation is why.
                return Err(self.shared.stopped_error());
            }
            return Err(RuntimeError::NotAwaitingApproval(id, status));
        };
        owner
            .decide
            .send(Decide {
                task_id: id,
                decision,
            })
            .await
            .map_err(|_| self.shared.stopped_error())?
    }

    /// The agent that owns a task not ended yet: the one running its
    /// `parent` task (the conversation for `None`).
    fn owner(
        &self,
        parent: Option<TaskId>,
        status: TaskStatus,
    ) -> Option<Arc<crate::agent_actor::Owner>> {
        if status.is_terminal() {
            return None;
        }
        self.shared.owners.get(&parent).map(|o| o.clone())
    }

    /// A snapshot of the conversation's history.
    pub async fn history(&self) -> Result<History, RuntimeError> {
        Ok(self.addr.send(GetHistory).await?)
    }

    /// Resolves when nothing is in flight, nothing is queued and no task is
    /// running, and, for a durable conversation, everything is in its
    /// journal (the ends of a cancelled subtree too, which the agents
    /// below journal as they stop).
    ///
    /// Fails if the conversation stops before it settled (the ends of a
    /// cancelled subtree not journaled yet included): with
    /// [`RuntimeError::Journal`] if the journal turned out closed for good
    /// (the conversation stopped then), [`RuntimeError::Stopped`] otherwise.
    pub async fn settled(&self) -> Result<(), RuntimeError> {
        if let Some(inputs) = &self.inputs {
            // Inputs sent before this call count: once they are delivered.
            inputs.drained().await;
        }
        match self.addr.send(WhenSettled).await {
            Ok(result) => result,
            Err(_) => Err(self.shared.stopped_error()),
        }
    }

    /// Stops the conversation: aborts model and tool calls and cancels every
    /// task in its tree (journaled, with a journal). Resolves once every
    /// agent of the tree has stopped, so nothing of the conversation runs
    /// or writes to its journal any more: the sub-agents on other threads
    /// too, and those still on their way to their thread, which start no
    /// work (no model request, no tool call) and whose tasks are cancelled
    /// like the rest. (A sub-agent whose thread is busy in a blocking tool
    /// call stops once that call returns.) Remote tasks are told to stop;
    /// they run elsewhere, so there is nothing to wait for.
    ///
    /// Fails if the conversation had stopped already (it still waits for
    /// its tree): with [`RuntimeError::Journal`] if it stopped because its
    /// journal closed for good, [`RuntimeError::Stopped`] otherwise.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        self.stop("the conversation was shut down", false).await
    }

    /// Takes no more input and stops the conversation's actor, cancelling or
    /// suspending its tasks; resolves once the whole tree has stopped.
    async fn stop(&self, reason: &str, suspend: bool) -> Result<(), RuntimeError> {
        if let Some(inputs) = &self.inputs {
            inputs.close();
        }
        // First, so that no agent starts new work while the stop goes down
        // the tree, and a worker built from now on stops at once.
        self.shared.census.begin_stopping();
        let sent = self
            .addr
            .send(Shutdown {
                reason: reason.to_owned(),
                suspend,
            })
            .await;
        // Each agent stops its children as it stops (those on other
        // threads, or not built yet, in their own time): wait for them all.
        // Awaiting (not blocking) is what lets agents on this thread stop.
        self.shared.census.all_stopped().await;
        // It had stopped already: say why (its journal closed, if so).
        sent.map_err(|_| self.shared.stopped_error())
    }

    /// Stops the conversation but keeps its work for later, as a crash
    /// would, only cleanly: model and tool calls are aborted and sub-agents
    /// stopped, but no task is cancelled. The results that ended are
    /// journaled, and the journal still has the other tasks running, so a
    /// conversation resumed from it ([`Orchestrator::resume`]) starts them
    /// again (tools declared not idempotent end `Interrupted`); remote
    /// tasks go on where they run.
    ///
    /// Resolves once every agent of the tree has stopped (as for
    /// [`Conversation::shutdown`]: sub-agents on other threads too, and
    /// those still on their way to their thread, which start no work and
    /// whose tasks stay running in the journal) and, after that,
    /// everything they journaled is durable: once it returns, the journal
    /// gets nothing more from this conversation, and resuming from it (or
    /// reading it with `baton log`) is safe.
    ///
    /// Fails as [`Conversation::shutdown`] does if the conversation had
    /// stopped already, and with [`RuntimeError::Journal`] if its journal
    /// is closed for good (what it journaled may not be durable).
    ///
    /// Without a journal there is nothing to resume from: it is
    /// [`Conversation::shutdown`].
    pub async fn suspend(&self) -> Result<(), RuntimeError> {
        let Some(journal) = &self.shared.journal else {
            return self.shutdown().await;
        };
        self.stop("the conversation was suspended", true).await?;
        let synced = journal.append(Vec::new());
        Ok(until_durable(&**journal, synced, "suspending").await?)
    }
}

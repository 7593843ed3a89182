//! [`Orchestrator`] starts a conversation; [`Conversation`] is the handle
//! a program holds to talk to it, watch it and steer its tasks.

use actix::{Actor, Addr};
use baton_core::{EventBus, EventEnvelope, History, TaskId, TaskRecord, TaskRegistry, TaskStatus};
use tokio::sync::broadcast;

use crate::agent::Agent;
use crate::agent_actor::{InputPolicy, OrchestratorActor, Shared};
use crate::error::RuntimeError;
use crate::messages::{CancelTask, GetHistory, Shutdown, UserInput, WhenSettled};
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
#[derive(Debug)]
pub struct Orchestrator {
    agent: Agent,
    policy: InputPolicy,
    event_capacity: usize,
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

    /// Starts the conversation actor.
    pub fn spawn(self) -> Conversation {
        let shared = Shared {
            registry: TaskRegistry::new(),
            events: EventBus::new(self.event_capacity),
        };
        let actor =
            OrchestratorActor::new(self.agent, Root::default(), shared.clone(), self.policy);
        Conversation {
            addr: actor.start(),
            shared,
        }
    }
}

/// The handle to a running conversation. Cheap to clone; every clone talks
/// to the same conversation.
#[derive(Debug, Clone)]
pub struct Conversation {
    addr: Addr<OrchestratorActor>,
    shared: Shared,
}

impl Conversation {
    /// A new subscriber to the conversation's events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EventEnvelope> {
        self.shared.events.subscribe()
    }

    /// Says something to the conversation. Returns once the input is in the
    /// conversation's mailbox; the agent answers in its own time.
    pub async fn send_user(&self, text: impl Into<String>) -> Result<(), RuntimeError> {
        self.addr.send(UserInput { text: text.into() }).await?;
        Ok(())
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

    /// Cancels one of the conversation's own tasks (and everything it
    /// started); the model is told in its next turn.
    pub async fn cancel_task(&self, id: TaskId) -> Result<TaskStatus, RuntimeError> {
        self.addr
            .send(CancelTask {
                task_id: id,
                reason: "cancelled by the user".into(),
            })
            .await?
    }

    /// A snapshot of the conversation's history.
    pub async fn history(&self) -> Result<History, RuntimeError> {
        Ok(self.addr.send(GetHistory).await?)
    }

    /// Resolves when nothing is in flight, nothing is queued and no task is
    /// running.
    pub async fn settled(&self) -> Result<(), RuntimeError> {
        Ok(self.addr.send(WhenSettled).await?)
    }

    /// Stops the conversation: aborts model and tool calls and cancels every
    /// task in its tree.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        self.addr
            .send(Shutdown {
                reason: "the conversation was shut down".into(),
            })
            .await?;
        Ok(())
    }
}

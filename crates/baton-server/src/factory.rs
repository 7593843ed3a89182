//! [`ConversationFactory`]: the agents a server starts conversations with.

use std::fmt;
use std::sync::Arc;

use baton_core::AgentName;
use baton_runtime::{Agent, Orchestrator};

type Build = dyn Fn() -> Orchestrator + Send + Sync;

/// The agents a client may start a conversation with, by name; the first
/// one added is the default.
///
/// ```
/// use baton_runtime::Agent;
/// use baton_llm::{ScriptedModel, ScriptedTurn};
/// use baton_server::ConversationFactory;
///
/// let model = ScriptedModel::from_fn(|_| ScriptedTurn::text("Hello!"));
/// let factory = ConversationFactory::from_agents([
///     Agent::builder("assistant").model(model).build(),
/// ]);
/// assert_eq!(factory.names()[0].as_str(), "assistant");
/// ```
#[derive(Clone, Default)]
pub struct ConversationFactory {
    entries: Vec<(AgentName, Arc<Build>)>,
}

impl ConversationFactory {
    /// An empty factory; add agents with [`Self::agent`] or [`Self::with`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Every agent of `agents`, each started with default options; the
    /// first is the default.
    pub fn from_agents(agents: impl IntoIterator<Item = Agent>) -> Self {
        agents.into_iter().fold(Self::new(), Self::agent)
    }

    /// Offers `agent`: each new conversation is `Orchestrator::builder(agent)`
    /// with default options. The agent (and its model) is shared by every
    /// conversation started from it.
    pub fn agent(self, agent: Agent) -> Self {
        let name = agent.name().clone();
        self.with(name, move || Orchestrator::builder(agent.clone()))
    }

    /// Offers a conversation called `name`, built by `build` each time one
    /// starts (e.g. to give each conversation its own model or journal).
    /// `build` runs on the server's conversation thread.
    pub fn with(
        mut self,
        name: impl Into<AgentName>,
        build: impl Fn() -> Orchestrator + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, Arc::new(build)));
        self
    }

    /// The agents offered, the default first.
    pub fn names(&self) -> Vec<AgentName> {
        self.entries.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The builder for `name`, or the default's for `None`.
    pub(crate) fn get(
        &self,
        name: Option<&str>,
    ) -> Option<(AgentName, Arc<dyn Fn() -> Orchestrator + Send + Sync>)> {
        let entry = match name {
            None => self.entries.first(),
            Some(name) => self.entries.iter().find(|(n, _)| n.as_str() == name),
        }?;
        Some((entry.0.clone(), entry.1.clone()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for ConversationFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConversationFactory")
            .field("agents", &self.names())
            .finish()
    }
}

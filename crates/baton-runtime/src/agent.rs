//! [`Agent`]: what an agent is (name, model, prompt, tools, sub-agents),
//! built with [`AgentBuilder`]. An `Agent` is a cheap-to-clone description;
//! the actors that run it are started by the runtime.

use std::sync::Arc;
use std::time::Duration;

use baton_core::{AgentName, DynTool, Limits, Tool, ToolSpec};
use baton_llm::{ChatModel, ChatRequest, ChatResponse, LlmError};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::remote::RemoteExecutor;
use crate::supervision::Supervision;

/// How long an inline tool call may run before it is answered with a
/// timeout error, unless [`AgentBuilder::tool_timeout`] says otherwise.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct AgentSpec {
    pub(crate) name: AgentName,
    pub(crate) model: Arc<dyn ChatModel>,
    pub(crate) system_prompt: Option<String>,
    pub(crate) inline_tools: Vec<Arc<dyn DynTool>>,
    pub(crate) background_tools: Vec<Arc<dyn DynTool>>,
    pub(crate) delegates: Vec<Agent>,
    pub(crate) tool_timeout: Duration,
    pub(crate) limits: Limits,
    pub(crate) supervision: Supervision,
    pub(crate) needs_approval: Vec<String>,
    /// The names of `delegates`, as `create_task` offers them.
    pub(crate) delegate_names: Vec<AgentName>,
    /// Every tool the model is offered, built once (schemas are derived
    /// here, not per actor or per turn).
    pub(crate) offered: Arc<Vec<ToolSpec>>,
    /// Where this agent runs when delegated to, if not in this process.
    pub(crate) remote: Option<Arc<dyn RemoteExecutor>>,
}

impl AgentSpec {
    pub(crate) fn needs_approval(&self, name: &str) -> bool {
        self.needs_approval.iter().any(|n| n == name)
    }
}

/// A description of one agent: its name, model, system prompt, tools and
/// the sub-agents it may delegate to. Cheap to clone.
///
/// ```
/// use baton_runtime::Agent;
/// use baton_llm::{ScriptedModel, ScriptedTurn};
///
/// let model = ScriptedModel::new().script("assistant", [ScriptedTurn::text("Hi!")]);
/// let agent = Agent::builder("assistant")
///     .model(model)
///     .system_prompt("You are helpful.")
///     .build();
/// assert_eq!(agent.name().as_str(), "assistant");
/// ```
#[derive(Clone)]
pub struct Agent {
    pub(crate) spec: Arc<AgentSpec>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.spec.name)
            .field("model", &self.spec.model.name())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts describing an agent called `name`.
    pub fn builder(name: impl Into<AgentName>) -> AgentBuilder {
        AgentBuilder {
            name: name.into(),
            model: None,
            system_prompt: None,
            inline_tools: Vec::new(),
            background_tools: Vec::new(),
            delegates: Vec::new(),
            tool_timeout: DEFAULT_TOOL_TIMEOUT,
            limits: Limits::default(),
            supervision: Supervision::default(),
            needs_approval: Vec::new(),
            remote: None,
        }
    }

    /// The agent's name.
    pub fn name(&self) -> &AgentName {
        &self.spec.name
    }
}

/// Builds an [`Agent`]; see [`Agent::builder`].
pub struct AgentBuilder {
    name: AgentName,
    model: Option<Arc<dyn ChatModel>>,
    system_prompt: Option<String>,
    inline_tools: Vec<Arc<dyn DynTool>>,
    background_tools: Vec<Arc<dyn DynTool>>,
    delegates: Vec<Agent>,
    tool_timeout: Duration,
    limits: Limits,
    supervision: Supervision,
    needs_approval: Vec<String>,
    remote: Option<Arc<dyn RemoteExecutor>>,
}

impl AgentBuilder {
    /// The model this agent talks to.
    pub fn model(mut self, model: impl ChatModel) -> Self {
        self.model = Some(Arc::new(model));
        self
    }

    /// The model, already shared.
    pub fn shared_model(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.model = Some(model);
        self
    }

    /// The system prompt, the first message of the agent's history.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// An inline tool: all inline calls of one turn run concurrently, and
    /// their results answer the calls before the next model request.
    pub fn tool(mut self, tool: impl Tool) -> Self {
        self.inline_tools.push(Arc::new(tool));
        self
    }

    /// A background tool: a call is answered at once with a task id, the
    /// work runs as a task, and its result joins the conversation later.
    pub fn background_tool(mut self, tool: impl Tool) -> Self {
        self.background_tools.push(Arc::new(tool));
        self
    }

    /// An inline tool given as a trait object (for tools whose name and
    /// schema are only known at run time, such as a scenario's simulated
    /// tools).
    pub fn dyn_tool(mut self, tool: Arc<dyn DynTool>) -> Self {
        self.inline_tools.push(tool);
        self
    }

    /// A background tool given as a trait object.
    pub fn dyn_background_tool(mut self, tool: Arc<dyn DynTool>) -> Self {
        self.background_tools.push(tool);
        self
    }

    /// The sub-agents this agent may delegate to with `create_task`.
    pub fn delegates_to(mut self, agents: impl IntoIterator<Item = Agent>) -> Self {
        self.delegates.extend(agents);
        self
    }

    /// How long one inline tool call may run (default
    /// [`DEFAULT_TOOL_TIMEOUT`]); past it the call is answered with an error.
    pub fn tool_timeout(mut self, timeout: Duration) -> Self {
        self.tool_timeout = timeout;
        self
    }

    /// The budgets of the tree. They are read from the conversation's own
    /// agent and apply to its whole tree; on a sub-agent they are ignored.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How this agent supervises the tasks it creates: timeout, retries and
    /// backoff (default: one attempt, no time limit).
    pub fn supervision(mut self, supervision: Supervision) -> Self {
        self.supervision = supervision;
        self
    }

    /// Makes calls of the background tool or delegations to the sub-agent
    /// called `name` wait for approval (`Conversation::approve` /
    /// `Conversation::reject`) before they run. The task waits as
    /// `AwaitingApproval`; every other branch runs on.
    pub fn require_approval(mut self, name: impl Into<String>) -> Self {
        self.needs_approval.push(name.into());
        self
    }

    /// Runs this agent elsewhere when it is delegated to: its tasks go to
    /// `executor` (e.g. workers over NATS) instead of a local actor. Agents
    /// that delegate to it are unchanged; local and remote sub-agents mix.
    pub fn remote(mut self, executor: Arc<dyn RemoteExecutor>) -> Self {
        self.remote = Some(executor);
        self
    }

    /// Finishes the description. An agent built without a model answers
    /// every turn with an error saying so.
    pub fn build(self) -> Agent {
        let name = self.name;
        let model = self.model.unwrap_or_else(|| {
            Arc::new(MissingModel {
                agent: name.clone(),
            })
        });
        let delegate_names: Vec<AgentName> =
            self.delegates.iter().map(|a| a.name().clone()).collect();
        let mut offered: Vec<ToolSpec> = self
            .inline_tools
            .iter()
            .chain(&self.background_tools)
            .map(|t| t.spec())
            .collect();
        offered.extend(crate::task_tools::specs(
            &delegate_names,
            !self.background_tools.is_empty(),
        ));
        Agent {
            spec: Arc::new(AgentSpec {
                delegate_names,
                offered: Arc::new(offered),
                name,
                model,
                system_prompt: self.system_prompt,
                inline_tools: self.inline_tools,
                background_tools: self.background_tools,
                delegates: self.delegates,
                tool_timeout: self.tool_timeout,
                limits: self.limits,
                supervision: self.supervision,
                needs_approval: self.needs_approval,
                remote: self.remote,
            }),
        }
    }
}

/// The model of an agent built without one: every request fails clearly.
struct MissingModel {
    agent: AgentName,
}

impl ChatModel for MissingModel {
    fn name(&self) -> &str {
        "none"
    }

    fn complete(
        &self,
        _request: ChatRequest,
    ) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        let message = format!(
            "agent `{}` has no model: call `.model(..)` on its builder",
            self.agent
        );
        futures::future::ready(Err(LlmError::InvalidResponse {
            provider: "none".into(),
            message,
        }))
        .boxed()
    }
}

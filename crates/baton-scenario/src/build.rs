//! Turning a scenario's agent definitions into runtime [`Agent`]s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{DynTool, Limits};
use baton_llm::ChatModel;
use baton_runtime::{Agent, RemoteExecutor, Supervision};

use crate::error::ScenarioError;
use crate::load::LoadedScenario;
use crate::model::ScenarioModel;
use crate::simulated_tool::SimulatedTool;
use crate::spec::{AgentDef, LimitsDef, SupervisionDef};

/// Which model the agents use.
#[derive(Clone, Default)]
pub enum ModelChoice {
    /// Each agent's own `model` (the scripted turns unless it names one).
    #[default]
    AsWritten,
    /// One model for every agent (`--model`).
    Override(Arc<dyn ChatModel>),
}

impl std::fmt::Debug for ModelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelChoice::AsWritten => f.write_str("AsWritten"),
            ModelChoice::Override(m) => write!(f, "Override({})", m.name()),
        }
    }
}

impl ModelChoice {
    /// The model a model string names (`openai:gpt-4o-mini`, ...).
    pub fn from_spec(spec: &str) -> Result<Self, ScenarioError> {
        baton_llm::model_from_str(spec)
            .map(ModelChoice::Override)
            .map_err(|e| ScenarioError::Model {
                spec: spec.to_owned(),
                reason: e.to_string(),
            })
    }
}

/// Where delegated agents run when not in this process: their tasks go to
/// `executor` (e.g. NATS workers serving the same agent file).
#[derive(Clone)]
pub struct Remote {
    /// Runs the remote agents' tasks.
    pub executor: Arc<dyn RemoteExecutor>,
    /// The agents that run remotely (`None`: every agent delegated to).
    pub agents: Option<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("agents", &self.agents)
            .finish_non_exhaustive()
    }
}

impl Remote {
    fn covers(&self, name: &str) -> bool {
        self.agents
            .as_ref()
            .is_none_or(|agents| agents.contains(name))
    }
}

/// Builds the scenario's root agent, with every agent it delegates to.
pub fn root_agent(scenario: &LoadedScenario, models: &ModelChoice) -> Result<Agent, ScenarioError> {
    agent(scenario, &scenario.root, models)
}

/// Builds the agent `name` of `scenario`, with the agents it delegates to.
pub fn agent(
    scenario: &LoadedScenario,
    name: &str,
    models: &ModelChoice,
) -> Result<Agent, ScenarioError> {
    agent_with(scenario, name, models, None)
}

/// Builds the agent `name` of `scenario`; the agents it delegates to run
/// through `remote` where it covers them (the agent itself runs here).
pub fn agent_with(
    scenario: &LoadedScenario,
    name: &str,
    models: &ModelChoice,
    remote: Option<&Remote>,
) -> Result<Agent, ScenarioError> {
    let spec = &scenario.spec;
    let scripted: Arc<dyn ChatModel> = Arc::new(
        ScenarioModel::new(
            spec.agents
                .iter()
                .map(|(name, def)| (name.clone(), def.turns.clone()))
                .collect(),
        )
        .repeating_last_turn(
            spec.agents
                .iter()
                .filter(|(_, def)| def.repeat_last_turn)
                .map(|(name, _)| name.clone()),
        ),
    );
    let tools: BTreeMap<&str, Arc<dyn DynTool>> = spec
        .tools
        .iter()
        .map(|(name, def)| {
            let tool: Arc<dyn DynTool> = Arc::new(SimulatedTool::new(
                name.clone(),
                def.clone(),
                spec.scenario.seed,
            ));
            (name.as_str(), tool)
        })
        .collect();
    let mut built = BTreeMap::new();
    let context = Context {
        scenario,
        models,
        scripted: &scripted,
        tools: &tools,
        remote,
    };
    context.build(name, true, &mut built)
}

/// What building every agent of a scenario shares.
struct Context<'a> {
    scenario: &'a LoadedScenario,
    models: &'a ModelChoice,
    scripted: &'a Arc<dyn ChatModel>,
    tools: &'a BTreeMap<&'a str, Arc<dyn DynTool>>,
    remote: Option<&'a Remote>,
}

impl Context<'_> {
    fn build(
        &self,
        name: &str,
        top: bool,
        built: &mut BTreeMap<String, Agent>,
    ) -> Result<Agent, ScenarioError> {
        let Context {
            scenario,
            models,
            scripted,
            tools,
            remote,
        } = self;
        if let Some(agent) = built.get(name) {
            return Ok(agent.clone());
        }
        let def: &AgentDef =
            scenario
                .spec
                .agents
                .get(name)
                .ok_or_else(|| ScenarioError::Model {
                    spec: name.to_owned(),
                    reason: "no such agent".to_owned(),
                })?;
        let model = match (models, def.model.as_deref()) {
            (ModelChoice::Override(model), _) => model.clone(),
            (ModelChoice::AsWritten, None | Some("scripted")) => (*scripted).clone(),
            (ModelChoice::AsWritten, Some(spec)) => {
                baton_llm::model_from_str(spec).map_err(|e| ScenarioError::Model {
                    spec: spec.to_owned(),
                    reason: e.to_string(),
                })?
            }
        };
        let mut builder = Agent::builder(name).shared_model(model);
        if let Some(system) = &def.system {
            builder = builder.system_prompt(system.clone());
        }
        for tool_name in &def.tools {
            let tool_name = tool_name.get_ref().as_str();
            let Some(tool) = tools.get(tool_name) else {
                continue; // the loader refused unknown tools already
            };
            let background = scenario
                .spec
                .tools
                .get(tool_name)
                .is_some_and(|t| t.background);
            builder = if background {
                builder.dyn_background_tool(tool.clone())
            } else {
                builder.dyn_tool(tool.clone())
            };
        }
        let mut delegates = Vec::new();
        for delegate in &def.delegates_to {
            delegates.push(self.build(delegate.get_ref(), false, built)?);
        }
        if !delegates.is_empty() {
            builder = builder.delegates_to(delegates);
        }
        for gated in &def.require_approval {
            builder = builder.require_approval(gated.clone());
        }
        if let Some(limits) = def.limits {
            builder = builder.limits(limits_from(limits));
        }
        if let Some(supervision) = def.supervision {
            builder = builder.supervision(supervision_from(supervision));
        }
        if let Some(ms) = def.tool_timeout_ms {
            builder = builder.tool_timeout(Duration::from_millis(ms));
        }
        if let Some(remote) = remote.filter(|r| !top && r.covers(name)) {
            builder = builder.remote(remote.executor.clone());
        }
        let agent = builder.build();
        built.insert(name.to_owned(), agent.clone());
        Ok(agent)
    }
}

/// The runtime's [`Limits`], with the fields a scenario sets.
pub fn limits_from(def: LimitsDef) -> Limits {
    let default = Limits::default();
    Limits {
        max_depth: def.max_depth.unwrap_or(default.max_depth),
        max_children: def.max_children.unwrap_or(default.max_children),
        max_concurrent: def.max_concurrent.unwrap_or(default.max_concurrent),
        max_tokens: def.max_tokens.unwrap_or(default.max_tokens),
    }
}

/// The runtime's [`Supervision`] a scenario describes.
pub fn supervision_from(def: SupervisionDef) -> Supervision {
    let mut supervision = Supervision::retry(def.retries);
    if let Some(ms) = def.backoff_ms {
        supervision = supervision.backoff_ms(ms);
    }
    match (def.timeout_ms, def.timeout_s) {
        (Some(ms), _) => supervision.timeout(Duration::from_millis(ms)),
        (None, Some(s)) => supervision.timeout_s(s),
        (None, None) => supervision,
    }
}

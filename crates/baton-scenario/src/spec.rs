//! The scenario file format: plain serde types, read from TOML.
//!
//! Every struct denies unknown keys, so a typo is an error with its line
//! and column rather than a setting silently ignored. Names that refer to
//! other parts of the file (tools, agents) keep their source span, so the
//! checks in [`crate::load`] can point at them too.
//!
//! The JSON Schema in `docs/scenario.schema.json` is generated from these
//! types ([`crate::schema::scenario_schema`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A whole scenario: agents, their tools, a script of what happens when,
/// and what should come of it.
///
/// An agent file (for `baton chat` or `baton serve`) is a scenario with only
/// `[agents]` and `[tools]`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, description, root agent and run settings.
    #[serde(default)]
    pub scenario: ScenarioMeta,
    /// The agents, by name.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentDef>,
    /// Simulated tools, by name.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolDef>,
    /// What happens, and when (virtual time under the paused clock).
    #[serde(default)]
    #[schemars(with = "Vec<ScriptStep>")]
    pub script: Vec<Spanned<ScriptStep>>,
    /// What the run must produce, checked by `baton test`.
    #[serde(default)]
    pub expect: Option<Expectations>,
}

impl Scenario {
    /// The agents some agent delegates to, by name.
    pub fn delegated_agents(&self) -> std::collections::BTreeSet<&str> {
        self.agents
            .values()
            .flat_map(|a| a.delegates_to.iter().map(|d| d.get_ref().as_str()))
            .collect()
    }
}

/// The `[scenario]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioMeta {
    /// A short name (defaults to the file name).
    #[serde(default)]
    pub name: Option<String>,
    /// What the scenario shows.
    #[serde(default)]
    pub description: Option<String>,
    /// The agent the user talks to. Defaults to the one agent no other
    /// agent delegates to.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub root: Option<Spanned<String>>,
    /// Seed for simulated latencies and failure rates (default 0).
    #[serde(default)]
    pub seed: u64,
    /// What a user message does while the agent is busy: `queue` (default:
    /// it waits for the turn to end) or `interrupt` (the turn is abandoned).
    #[serde(default)]
    pub input_policy: InputPolicyDef,
}

/// How user input that arrives during a turn is handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputPolicyDef {
    /// Queue it until the turn ends.
    #[default]
    Queue,
    /// Abandon the running turn and answer the new input.
    Interrupt,
}

/// One agent: `[agents.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    /// The system prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// `scripted` (default: the `turns` below) or a model string such as
    /// `openai:gpt-4o-mini`.
    #[serde(default)]
    pub model: Option<String>,
    /// Tools this agent may call, by name (from `[tools]`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub tools: Vec<Spanned<String>>,
    /// Agents this agent may delegate to with `create_task`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub delegates_to: Vec<Spanned<String>>,
    /// Tools or agents whose tasks wait for a person's approval.
    #[serde(default)]
    pub require_approval: Vec<String>,
    /// Budgets for the tree under this agent.
    #[serde(default)]
    pub limits: Option<LimitsDef>,
    /// How this agent supervises the tasks it starts.
    #[serde(default)]
    pub supervision: Option<SupervisionDef>,
    /// How long an inline tool call may run, in milliseconds.
    #[serde(default)]
    pub tool_timeout_ms: Option<u64>,
    /// The scripted model's replies, in order, for every instance of this
    /// agent (each instance follows the script from its own first turn).
    #[serde(default)]
    pub turns: Vec<TurnDef>,
    /// When the turns run out, answer with the last one again (for agent
    /// files used interactively) instead of failing the turn.
    #[serde(default)]
    pub repeat_last_turn: bool,
}

/// Budgets: `limits = { max_depth = 3, ... }`. Unset fields keep the
/// runtime's defaults.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsDef {
    /// How deep the delegation tree may grow.
    pub max_depth: Option<u32>,
    /// How many tasks one agent may start.
    pub max_children: Option<u32>,
    /// How many tasks may run at once in the tree (the rest wait, Pending).
    pub max_concurrent: Option<u32>,
    /// How many tokens the tree may use.
    pub max_tokens: Option<u64>,
}

/// Supervision: `supervision = { retries = 3, backoff_ms = 200, timeout_s = 120 }`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupervisionDef {
    /// Retries after a failed attempt (0: none).
    #[serde(default)]
    pub retries: u32,
    /// The first backoff, in milliseconds (doubling each retry).
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    /// The time limit of each attempt, in seconds.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// The time limit of each attempt, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// One scripted model reply.
///
/// Text and argument strings are templates: `{input}` is the latest user
/// message the agent received (a sub-agent's task prompt), `{results}` the
/// tool and task results since its previous reply, joined with `; `, and
/// `{all_results}` every task result it has received.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TurnDef {
    /// The reply text.
    #[serde(default)]
    pub text: Option<String>,
    /// Tool calls, in order.
    #[serde(default)]
    pub calls: Vec<CallDef>,
    /// How long the model takes to answer, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Token usage reported for this reply.
    #[serde(default)]
    pub usage: Option<UsageDef>,
    /// The request fails with this message instead of answering.
    #[serde(default)]
    pub fail: Option<String>,
}

/// One scripted tool call: `{ tool = "get_weather", args = { city = "Paris" } }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallDef {
    /// The tool (or `create_task`, `check_task`, ...).
    #[schemars(with = "String")]
    pub tool: Spanned<String>,
    /// The arguments.
    #[serde(default = "empty_object")]
    pub args: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Token usage of one scripted reply.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageDef {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt: u64,
    /// Completion tokens.
    #[serde(default)]
    pub completion: u64,
}

/// A simulated tool: `[tools.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolDef {
    /// What it does, for the model.
    #[serde(default)]
    pub description: Option<String>,
    /// Its parameters: name → type (`string`, `integer`, `number`,
    /// `boolean`). All are required.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamType>,
    /// How long a call takes: milliseconds, or `{ min_ms, max_ms }` drawn
    /// from the scenario's seed.
    #[serde(default)]
    pub latency: Option<LatencyDef>,
    /// The result: a template over the arguments (`"Sunny in {city}"`).
    #[serde(default)]
    pub result: Option<String>,
    /// The chance (0 to 1) that a call fails, drawn from the seed.
    #[serde(default)]
    pub fail_rate: f64,
    /// Calls with the same arguments that fail, counted from 1 (`[1, 2]`:
    /// the first two attempts fail, the third succeeds).
    #[serde(default)]
    pub fail_on_attempts: Vec<u32>,
    /// Run in the background: the model gets a task id at once and the
    /// result joins the conversation when it lands.
    #[serde(default)]
    pub background: bool,
    /// Whether running it twice is harmless (default true).
    #[serde(default = "yes")]
    pub idempotent: bool,
}

fn yes() -> bool {
    true
}

/// A tool parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// A JSON string.
    String,
    /// A JSON integer.
    Integer,
    /// A JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
}

/// A simulated latency: fixed milliseconds, or a range.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LatencyDef {
    /// Always this many milliseconds.
    Fixed(u64),
    /// Uniform in `[min_ms, max_ms]`, drawn from the scenario's seed.
    Range {
        /// The shortest.
        min_ms: u64,
        /// The longest.
        max_ms: u64,
    },
}

/// One step of the script: `[[script]]` with `at_ms` and one action.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptStep {
    /// When, in milliseconds from the start of the run.
    #[serde(default)]
    pub at_ms: u64,
    /// The user says this.
    #[serde(default)]
    pub user: Option<String>,
    /// Cancel this task (`task-3`).
    #[serde(default)]
    pub cancel: Option<String>,
    /// Approve this task, waiting for approval.
    #[serde(default)]
    pub approve: Option<String>,
    /// Reject this task, waiting for approval.
    #[serde(default)]
    pub reject: Option<String>,
}

/// What a run must produce: `[expect]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Texts the final answer contains.
    #[serde(default)]
    pub answer_contains: Vec<String>,
    /// A regular expression the final answer matches.
    #[serde(default)]
    pub answer_matches: Option<String>,
    /// The tree's shape, as `lead(researcher(fetcher), researcher)`.
    #[serde(default)]
    pub tree: Option<String>,
    /// How many tasks end in each status (`succeeded = 3`).
    #[serde(default)]
    pub statuses: BTreeMap<String, usize>,
    /// The status of given tasks (`"task-2" = "cancelled"`).
    #[serde(default)]
    pub tasks: BTreeMap<String, String>,
    /// The longest the run may take, in virtual milliseconds.
    #[serde(default)]
    pub max_duration_ms: Option<u64>,
    /// How many model calls the run makes, in all.
    #[serde(default)]
    pub model_calls: Option<usize>,
    /// How many model calls each agent makes.
    #[serde(default)]
    pub model_calls_by_agent: BTreeMap<String, usize>,
}

//! Reading a scenario: TOML parsing, then the checks serde cannot make
//! (names that refer to nothing, delegation cycles, bad templates), each
//! reported with the line and column it is about.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use baton_core::TaskStatus;
use toml::Spanned;

use crate::error::ScenarioError;
use crate::spec::{AgentDef, Scenario, TurnDef};
use crate::template;

/// The tools every agent has from the runtime, which scripted turns may call.
pub const TASK_TOOLS: [&str; 4] = [
    "create_task",
    "check_task",
    "check_all_tasks",
    "cancel_task",
];

/// A scenario that parsed and passed every check, with its name and root
/// agent settled.
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    /// The scenario's name (`[scenario] name`, or the file stem).
    pub name: String,
    /// Where it came from (a path, for messages).
    pub origin: String,
    /// The agent the user talks to.
    pub root: String,
    /// The parsed file.
    pub spec: Scenario,
}

impl LoadedScenario {
    /// Reads and checks the scenario file at `path`.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".to_owned());
        Self::parse(&text, &path.display().to_string(), &stem)
    }

    /// Parses and checks scenario `text`; `origin` names it in errors and
    /// `default_name` is its name unless the file gives one.
    pub fn parse(text: &str, origin: &str, default_name: &str) -> Result<Self, ScenarioError> {
        let spec: Scenario = toml::from_str(text).map_err(|e| {
            ScenarioError::at(
                origin,
                text,
                e.span().unwrap_or(0..0),
                e.message().trim_end().to_owned(),
            )
        })?;
        let checker = Checker { origin, text };
        let root = checker.check(&spec)?;
        Ok(Self {
            name: spec
                .scenario
                .name
                .clone()
                .unwrap_or_else(|| default_name.to_owned()),
            origin: origin.to_owned(),
            root,
            spec,
        })
    }
}

struct Checker<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Checker<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        ScenarioError::at(self.origin, self.text, span, message.into())
    }

    /// The span of `key` at the start of a line (`[agents.lead]`), for
    /// messages about a table that has no spanned value of its own.
    fn table_span(&self, header: &str) -> Range<usize> {
        self.text
            .find(header)
            .map(|start| start..start + header.len())
            .unwrap_or(0..0)
    }

    fn check(&self, spec: &Scenario) -> Result<String, ScenarioError> {
        if spec.agents.is_empty() {
            return Err(self.error(
                0..0,
                "the scenario has no agents: add an [agents.NAME] table",
            ));
        }
        for (name, tool) in &spec.tools {
            let span = self.table_span(&format!("[tools.{name}]"));
            if !(0.0..=1.0).contains(&tool.fail_rate) {
                return Err(self.error(
                    span,
                    format!("tool `{name}`: fail_rate must be between 0 and 1"),
                ));
            }
            if let Some(crate::spec::LatencyDef::Range { min_ms, max_ms }) = tool.latency {
                if min_ms > max_ms {
                    return Err(self.error(
                        span,
                        format!(
                            "tool `{name}`: latency min_ms ({min_ms}) is above max_ms ({max_ms})"
                        ),
                    ));
                }
            }
            if let Some(result) = &tool.result {
                let allowed: Vec<&str> = tool.parameters.keys().map(String::as_str).collect();
                if let Err(unknown) = template::check(result, &allowed) {
                    return Err(self.error(
                        span,
                        format!(
                            "tool `{name}`: the result template uses `{{{unknown}}}`, which is not a parameter (parameters: {})",
                            list(allowed.iter().copied())
                        ),
                    ));
                }
            }
        }
        for (name, agent) in &spec.agents {
            self.check_agent(spec, name, agent)?;
        }
        self.check_cycles(spec)?;
        let root = self.root(spec)?;
        self.check_script(spec)?;
        self.check_expectations(spec)?;
        Ok(root)
    }

    fn check_agent(
        &self,
        spec: &Scenario,
        name: &str,
        agent: &AgentDef,
    ) -> Result<(), ScenarioError> {
        for tool in &agent.tools {
            if !spec.tools.contains_key(tool.get_ref()) {
                return Err(self.error(
                    tool.span(),
                    format!(
                        "agent `{name}` names the tool `{}`, which is not defined; tools: {}",
                        tool.get_ref(),
                        list(spec.tools.keys().map(String::as_str))
                    ),
                ));
            }
        }
        for delegate in &agent.delegates_to {
            if !spec.agents.contains_key(delegate.get_ref()) {
                return Err(self.error(
                    delegate.span(),
                    format!(
                        "agent `{name}` delegates to `{}`, which is not defined; agents: {}",
                        delegate.get_ref(),
                        list(spec.agents.keys().map(String::as_str))
                    ),
                ));
            }
        }
        let scripted = agent.model.as_deref().is_none_or(|m| m == "scripted");
        let span = self.table_span(&format!("[agents.{name}]"));
        if let Some(model) = agent.model.as_deref().filter(|_| !scripted) {
            if let Err(e) = baton_llm::ModelSpec::parse(model) {
                return Err(self.error(span, format!("agent `{name}`: {e}")));
            }
        }
        if scripted && agent.turns.is_empty() {
            return Err(self.error(
                span,
                format!(
                    "agent `{name}` uses the scripted model but has no turns: add [[agents.{name}.turns]] or set model"
                ),
            ));
        }
        for (i, turn) in agent.turns.iter().enumerate() {
            self.check_turn(name, i + 1, turn, span.clone())?;
        }
        Ok(())
    }

    fn check_turn(
        &self,
        agent: &str,
        n: usize,
        turn: &TurnDef,
        span: Range<usize>,
    ) -> Result<(), ScenarioError> {
        let allowed = template::TURN_VARIABLES;
        let mut texts: Vec<&str> = turn.text.iter().map(String::as_str).collect();
        let mut arg_strings = Vec::new();
        for call in &turn.calls {
            template::strings_in(&call.args, &mut arg_strings);
        }
        texts.extend(arg_strings.iter().map(String::as_str));
        for text in texts {
            if let Err(unknown) = template::check(text, &allowed) {
                return Err(self.error(
                    span,
                    format!(
                        "agent `{agent}`, turn {n}: unknown template variable `{{{unknown}}}` (known: {})",
                        list(allowed.iter().copied())
                    ),
                ));
            }
        }
        if turn.fail.is_some() && (turn.text.is_some() || !turn.calls.is_empty()) {
            return Err(self.error(
                span,
                format!(
                    "agent `{agent}`, turn {n}: a turn with `fail` cannot also have text or calls"
                ),
            ));
        }
        if turn.fail.is_none() && turn.text.is_none() && turn.calls.is_empty() {
            return Err(self.error(
                span,
                format!("agent `{agent}`, turn {n}: a turn needs text, calls or fail"),
            ));
        }
        Ok(())
    }

    fn check_cycles(&self, spec: &Scenario) -> Result<(), ScenarioError> {
        // Depth-first search; `path` is the chain from the start to `name`.
        fn visit<'s>(
            spec: &'s Scenario,
            name: &'s str,
            path: &mut Vec<&'s str>,
            done: &mut BTreeSet<&'s str>,
        ) -> Option<(Vec<&'s str>, &'s Spanned<String>)> {
            if done.contains(name) {
                return None;
            }
            path.push(name);
            let agent = spec.agents.get(name)?;
            for delegate in &agent.delegates_to {
                let next = delegate.get_ref().as_str();
                if let Some(at) = path.iter().position(|p| *p == next) {
                    let mut cycle = path[at..].to_vec();
                    cycle.push(next);
                    return Some((cycle, delegate));
                }
                if let Some(found) = visit(spec, next, path, done) {
                    return Some(found);
                }
            }
            path.pop();
            done.insert(name);
            None
        }
        let mut done = BTreeSet::new();
        for name in spec.agents.keys() {
            if let Some((cycle, edge)) = visit(spec, name, &mut Vec::new(), &mut done) {
                return Err(self.error(
                    edge.span(),
                    format!("delegation cycle: {}", cycle.join(" → ")),
                ));
            }
        }
        Ok(())
    }

    fn root(&self, spec: &Scenario) -> Result<String, ScenarioError> {
        if let Some(root) = &spec.scenario.root {
            if !spec.agents.contains_key(root.get_ref()) {
                return Err(self.error(
                    root.span(),
                    format!(
                        "the root agent `{}` is not defined; agents: {}",
                        root.get_ref(),
                        list(spec.agents.keys().map(String::as_str))
                    ),
                ));
            }
            return Ok(root.get_ref().clone());
        }
        let delegated = spec.delegated_agents();
        let tops: Vec<&str> = spec
            .agents
            .keys()
            .map(String::as_str)
            .filter(|name| !delegated.contains(name))
            .collect();
        match tops.as_slice() {
            [one] => Ok((*one).to_owned()),
            _ => Err(self.error(
                0..0,
                format!(
                    "cannot tell which agent the user talks to ({}): set `root` in [scenario]",
                    list(tops.iter().copied())
                ),
            )),
        }
    }

    fn check_script(&self, spec: &Scenario) -> Result<(), ScenarioError> {
        let mut last = 0;
        for step in &spec.script {
            let s = step.get_ref();
            let actions = [
                s.user.is_some(),
                s.cancel.is_some(),
                s.approve.is_some(),
                s.reject.is_some(),
            ]
            .iter()
            .filter(|a| **a)
            .count();
            if actions != 1 {
                return Err(self.error(
                    step.span(),
                    "a script step needs exactly one of user, cancel, approve or reject",
                ));
            }
            for id in [&s.cancel, &s.approve, &s.reject].into_iter().flatten() {
                if id.parse::<baton_core::TaskId>().is_err() {
                    return Err(self.error(
                        step.span(),
                        format!("`{id}` is not a task id (task ids read `task-3`)"),
                    ));
                }
            }
            if s.at_ms < last {
                return Err(self.error(
                    step.span(),
                    format!(
                        "script steps must be in time order: at_ms {} comes after {last}",
                        s.at_ms
                    ),
                ));
            }
            last = s.at_ms;
        }
        Ok(())
    }

    fn check_expectations(&self, spec: &Scenario) -> Result<(), ScenarioError> {
        let Some(expect) = &spec.expect else {
            return Ok(());
        };
        let span = self.table_span("[expect]");
        for status in expect.statuses.keys().chain(expect.tasks.values()) {
            if parse_status(status).is_none() {
                return Err(self.error(
                    span,
                    format!(
                        "`{status}` is not a task status; statuses: {}",
                        list(STATUS_WORDS.iter().copied())
                    ),
                ));
            }
        }
        for id in expect.tasks.keys() {
            if id.parse::<baton_core::TaskId>().is_err() {
                return Err(self.error(
                    span,
                    format!("`{id}` is not a task id (task ids read `task-3`)"),
                ));
            }
        }
        if let Some(pattern) = &expect.answer_matches {
            if let Err(e) = regex::Regex::new(pattern) {
                return Err(self.error(
                    span,
                    format!("answer_matches is not a valid regular expression: {e}"),
                ));
            }
        }
        for agent in expect.model_calls_by_agent.keys() {
            if !spec.agents.contains_key(agent) {
                return Err(self.error(
                    span,
                    format!("model_calls_by_agent names `{agent}`, which is not an agent"),
                ));
            }
        }
        Ok(())
    }
}

const STATUS_WORDS: [&str; 8] = [
    "pending",
    "running",
    "awaiting_approval",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "interrupted",
];

/// The [`TaskStatus`] a status word names (`succeeded`, `timed_out`, ...).
pub fn parse_status(word: &str) -> Option<TaskStatus> {
    serde_json::from_value(serde_json::Value::String(word.to_owned())).ok()
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

/// Counts how many tasks end in each status word, for expectations.
pub fn status_counts<'a>(
    statuses: impl Iterator<Item = TaskStatus> + 'a,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for status in statuses {
        *counts.entry(status.as_str().to_owned()).or_insert(0) += 1;
    }
    counts
}

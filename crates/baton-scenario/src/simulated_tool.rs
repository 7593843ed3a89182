//! [`SimulatedTool`]: a tool defined in a scenario file, with a latency, a
//! templated result and injected failures.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{DynTool, ToolError, ToolOutput, ToolSpec};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::spec::{LatencyDef, ParamType, ToolDef};
use crate::template;

/// A scenario's simulated tool.
#[derive(Debug)]
pub struct SimulatedTool {
    name: String,
    def: ToolDef,
    seed: u64,
    /// Calls so far per argument text, so `fail_on_attempts` counts the
    /// attempts of one call (a retried task calls again with the same
    /// arguments).
    attempts: Mutex<HashMap<String, u32>>,
}

impl SimulatedTool {
    /// The tool `name` as `def` describes it; `seed` drives its latencies
    /// and random failures.
    pub fn new(name: impl Into<String>, def: ToolDef, seed: u64) -> Self {
        Self {
            name: name.into(),
            def,
            seed,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    fn parse_args(
        &self,
        arguments: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ToolError> {
        let invalid = |reason: String| ToolError::InvalidArguments {
            tool: self.name.clone(),
            reason,
        };
        let value: serde_json::Value = serde_json::from_str(if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        })
        .map_err(|e| invalid(e.to_string()))?;
        let serde_json::Value::Object(args) = value else {
            return Err(invalid("expected a JSON object".to_owned()));
        };
        for (name, ty) in &self.def.parameters {
            match args.get(name) {
                None => return Err(invalid(format!("missing field `{name}`"))),
                Some(v) if !type_matches(*ty, v) => {
                    return Err(invalid(format!("`{name}` must be a {}", type_word(*ty))))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = args.keys().find(|k| !self.def.parameters.contains_key(*k)) {
            return Err(invalid(format!(
                "unknown field `{extra}`; expected: {}",
                self.def
                    .parameters
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(args)
    }

    /// The attempt number of this call (1 for the first call with these
    /// arguments).
    fn next_attempt(&self, key: &str) -> u32 {
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = attempts.entry(key.to_owned()).or_insert(0);
        *n += 1;
        *n
    }

    /// What a call with `args` on `attempt` does: its latency, and its result
    /// or failure. Plain and deterministic, so it is tested without actors.
    pub fn outcome(
        &self,
        args: &serde_json::Map<String, serde_json::Value>,
        attempt: u32,
    ) -> (Duration, Result<ToolOutput, ToolError>) {
        let key = serde_json::Value::Object(args.clone()).to_string();
        let mut hasher = fnv::FnvHasher::with_key(self.seed);
        (&self.name, &key, attempt).hash(&mut hasher);
        let mut rng = fastrand::Rng::with_seed(hasher.finish());
        let latency = match self.def.latency {
            None => Duration::ZERO,
            Some(LatencyDef::Fixed(ms)) => Duration::from_millis(ms),
            Some(LatencyDef::Range { min_ms, max_ms }) => {
                Duration::from_millis(rng.u64(min_ms..=max_ms))
            }
        };
        let fails = self.def.fail_on_attempts.contains(&attempt)
            || (self.def.fail_rate > 0.0 && rng.f64() < self.def.fail_rate);
        if fails {
            return (
                latency,
                Err(ToolError::Failed(format!(
                    "`{}` failed (simulated failure, attempt {attempt})",
                    self.name
                ))),
            );
        }
        let values: BTreeMap<&str, String> = args
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.as_str(), text)
            })
            .collect();
        let output = match &self.def.result {
            Some(result) => template::render(result, &values),
            None => format!("{} done: {key}", self.name),
        };
        (latency, Ok(ToolOutput(output)))
    }
}

fn type_matches(ty: ParamType, value: &serde_json::Value) -> bool {
    match ty {
        ParamType::String => value.is_string(),
        ParamType::Integer => value.is_i64() || value.is_u64(),
        ParamType::Number => value.is_number(),
        ParamType::Boolean => value.is_boolean(),
    }
}

fn type_word(ty: ParamType) -> &'static str {
    match ty {
        ParamType::String => "string",
        ParamType::Integer => "integer",
        ParamType::Number => "number",
        ParamType::Boolean => "boolean",
    }
}

impl DynTool for SimulatedTool {
    fn spec(&self) -> ToolSpec {
        let properties: serde_json::Map<String, serde_json::Value> = self
            .def
            .parameters
            .iter()
            .map(|(name, ty)| (name.clone(), serde_json::json!({ "type": type_word(*ty) })))
            .collect();
        ToolSpec {
            name: self.name.clone(),
            description: self
                .def
                .description
                .clone()
                .unwrap_or_else(|| format!("The simulated tool `{}`.", self.name)),
            parameters: serde_json::json!({
                "type": "object",
                "properties": properties,
                "required": self.def.parameters.keys().collect::<Vec<_>>(),
                "additionalProperties": false,
            }),
        }
    }

    fn tool_name(&self) -> &str {
        &self.name
    }

    fn is_idempotent(&self) -> bool {
        self.def.idempotent
    }

    fn prepare(
        self: Arc<Self>,
        arguments: &str,
    ) -> Result<BoxFuture<'static, Result<ToolOutput, ToolError>>, ToolError> {
        let args = self.parse_args(arguments)?;
        Ok(async move {
            let key = serde_json::Value::Object(args.clone()).to_string();
            let attempt = self.next_attempt(&key);
            let (latency, result) = self.outcome(&args, attempt);
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            result
        }
        .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(def: &str) -> Arc<SimulatedTool> {
        let def: ToolDef = toml::from_str(def).unwrap_or_else(|e| panic!("{e}"));
        Arc::new(SimulatedTool::new("get_weather", def, 7))
    }

    fn args(json: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn result_is_the_template_over_the_arguments() {
        let t = tool(
            "parameters = { city = \"string\" }\nresult = \"Sunny in {city}\"\nlatency = 1000",
        );
        let (latency, result) = t.outcome(&args(r#"{"city":"Paris"}"#), 1);
        assert_eq!(latency, Duration::from_secs(1));
        assert_eq!(result.map(|o| o.0), Ok("Sunny in Paris".to_owned()));
    }

    #[test]
    fn fails_on_the_attempts_it_names() {
        let t = tool("fail_on_attempts = [1, 2]");
        let a = args("{}");
        assert!(t.outcome(&a, 1).1.is_err());
        assert!(t.outcome(&a, 2).1.is_err());
        assert!(t.outcome(&a, 3).1.is_ok());
    }

    #[test]
    fn latency_range_is_seeded_and_within_bounds() {
        let t = tool("latency = { min_ms = 100, max_ms = 200 }");
        let a = args("{}");
        let first = t.outcome(&a, 1).0;
        assert_eq!(first, t.outcome(&a, 1).0, "same seed, same draw");
        assert!((100..=200).contains(&(first.as_millis() as u64)));
    }

    #[test]
    fn fail_rate_fails_about_that_share_of_calls() {
        let t = tool("fail_rate = 0.5");
        let failures = (1..=1000)
            .filter(|i| t.outcome(&args(&format!(r#"{{"i":{i}}}"#)), 1).1.is_err())
            .count();
        assert!((400..600).contains(&failures), "{failures} of 1000 failed");
    }

    #[test]
    fn bad_arguments_are_tool_errors_the_model_can_read() {
        let t = tool("parameters = { city = \"string\" }");
        for (bad, says) in [
            ("{", "EOF"),
            (r#"{"city": 3}"#, "`city` must be a string"),
            ("{}", "missing field `city`"),
            (r#"{"city":"x","zip":1}"#, "unknown field `zip`"),
        ] {
            let err = match t.clone().prepare(bad) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{bad} should be refused"),
            };
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}

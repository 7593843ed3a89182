//! # baton-scenario
//!
//! Scenario files: agents, simulated tools, a script of user inputs, and
//! expectations, written in TOML and played by the baton runtime on a
//! paused clock (so a scenario of slow tools finishes at once and reports
//! virtual time) or on the real one.
//!
//! * [`spec`]: the file format, as serde types (and the JSON Schema, from
//!   [`schema`]).
//! * [`load`]: parsing and checking, with errors that name the line and
//!   column ([`ScenarioError`]).
//! * [`model`]: [`ScenarioModel`], the scripted model that replies from
//!   each agent's turns.
//! * [`simulated_tool`]: [`SimulatedTool`], tools with latencies, templated
//!   results and injected failures.
//! * [`build`]: runtime agents from the definitions.
//! * [`runner`]: playing a scenario ([`run`]) into a [`RunReport`].
//! * [`expect`]: checking a report against `[expect]`.
//! * [`timeline`]: what ran when, in parallel, and the critical path.
//!
//! ```
//! use baton_scenario::{expect, run, LoadedScenario, RunOptions};
//!
//! let scenario = LoadedScenario::parse(r#"
//!     [agents.assistant]
//!     tools = ["get_weather"]
//!     turns = [
//!         { calls = [{ tool = "get_weather", args = { city = "Paris" } },
//!                    { tool = "get_weather", args = { city = "Oslo" } }] },
//!         { text = "Weather: {results}" },
//!     ]
//!
//!     [tools.get_weather]
//!     parameters = { city = "string" }
//!     latency = 1000
//!     result = "sunny in {city}"
//!
//!     [[script]]
//!     user = "Weather in Paris and Oslo?"
//!
//!     [expect]
//!     answer_contains = ["sunny in Paris", "sunny in Oslo"]
//!     max_duration_ms = 1000
//! "#, "weather.toml", "weather")?;
//!
//! let report = run(&scenario, RunOptions::default())?;
//! let failures = expect::check(&report, scenario.spec.expect.as_ref().unwrap());
//! assert!(failures.is_empty(), "{failures:?}");
//! # Ok::<(), baton_scenario::ScenarioError>(())
//! ```

pub mod build;
pub mod error;
pub mod expect;
pub mod load;
pub mod model;
pub mod runner;
pub mod schema;
pub mod simulated_tool;
pub mod spec;
pub mod template;
pub mod timeline;

pub use build::{agent, agent_with, root_agent, ModelChoice, Remote};
pub use error::ScenarioError;
pub use load::LoadedScenario;
pub use model::ScenarioModel;
pub use runner::{play, run, ConnectRemote, EventCollector, EventSink, RunOptions, RunReport};
pub use simulated_tool::SimulatedTool;
pub use spec::Scenario;
pub use timeline::Timeline;

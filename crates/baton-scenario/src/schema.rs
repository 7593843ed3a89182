//! The JSON Schema of the scenario format, generated from [`Scenario`].

use crate::spec::Scenario;

/// The JSON Schema (draft 2020-12) of a scenario file, as pretty JSON.
/// `docs/scenario.schema.json` holds its output; a test keeps it current.
pub fn scenario_schema() -> String {
    let schema = schemars::schema_for!(Scenario);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_else(|e| {
        // A schema is plain JSON data; serializing it cannot fail.
        format!("{{\"error\": \"{e}\"}}")
    });
    text.push('\n');
    text
}

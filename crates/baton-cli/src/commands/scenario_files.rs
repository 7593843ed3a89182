//! Finding and loading scenario files for `run`, `test` and `validate`.

use std::path::{Path, PathBuf};

use baton_scenario::{LoadedScenario, ModelChoice, ScenarioError};

/// The scenario files `paths` name: files as given, directories expanded
/// to the `*.toml` files they hold, sorted.
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| anyhow::anyhow!("cannot read the directory {}: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            if found.is_empty() {
                anyhow::bail!("{} holds no .toml scenario files", path.display());
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Loads one scenario file.
pub fn load(path: &Path) -> Result<LoadedScenario, ScenarioError> {
    LoadedScenario::from_path(path)
}

/// Checks that `scenario` defines the agent `name`.
pub fn require_agent(scenario: &LoadedScenario, name: &str) -> anyhow::Result<()> {
    if scenario.spec.agents.contains_key(name) {
        return Ok(());
    }
    let names: Vec<&str> = scenario.spec.agents.keys().map(String::as_str).collect();
    anyhow::bail!(
        "{} has no agent `{name}`; agents: {}",
        scenario.origin,
        names.join(", ")
    )
}

/// The agents' model: `--model SPEC` for every agent, else each agent's own.
pub fn models(spec: Option<&str>) -> anyhow::Result<ModelChoice> {
    Ok(match spec {
        Some(spec) => ModelChoice::from_spec(spec)?,
        None => ModelChoice::AsWritten,
    })
}

//! Malformed scenarios are refused with the right message and position.

use baton_scenario::{LoadedScenario, ScenarioError};

const AGENT: &str = "[agents.a]\nturns = [{ text = \"hi\" }]\n";

fn refuse(text: &str) -> (usize, usize, String) {
    match LoadedScenario::parse(text, "bad.toml", "bad") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e @ ScenarioError::Invalid { .. }) => {
            let (line, column) = e.position().unwrap_or_else(|| panic!("no position: {e}"));
            (line, column, e.to_string())
        }
        Err(other) => panic!("not an Invalid error: {other}"),
    }
}

#[test]
fn bad_toml_names_the_line() {
    let (line, _, message) = refuse(&format!("{AGENT}\n[scenario\nname = 1\n"));
    assert_eq!(line, 4, "{message}");
    assert!(message.starts_with("bad.toml:4:"), "{message}");
}

#[test]
fn an_unknown_key_is_an_error_at_that_key() {
    let (line, column, message) = refuse(&format!("{AGENT}sytem = \"typo\"\n"));
    assert_eq!((line, column), (3, 1), "{message}");
    assert!(message.contains("unknown field `sytem`"), "{message}");
    assert!(message.contains("3 | sytem = \"typo\""), "{message}");
}

#[test]
fn a_wrong_type_is_an_error_at_the_value() {
    let text = "[agents.a]\nturns = [{ text = \"hi\" }]\n\n[tools.t]\nlatency = \"slow\"\n";
    let (line, _, message) = refuse(text);
    assert_eq!(line, 5, "{message}");
}

#[test]
fn a_wrong_type_in_expectations_names_its_line() {
    let text = format!("{AGENT}[expect]\nmodel_calls = \"two\"\n");
    let (line, column, message) = refuse(&text);
    assert_eq!((line, column), (4, 15), "{message}");
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn an_unknown_agent_in_delegates_to_points_at_the_name() {
    let text = "[agents.lead]\ndelegates_to = [\"helper\", \"fetchr\"]\nturns = [{ text = \"hi\" }]\n\n[agents.helper]\nturns = [{ text = \"hi\" }]\n";
    let (line, column, message) = refuse(text);
    assert_eq!((line, column), (2, 27), "{message}");
    assert!(
        message.contains("delegates to `fetchr`, which is not defined; agents: helper, lead"),
        "{message}"
    );
}

#[test]
fn a_delegation_cycle_is_refused_with_its_path() {
    let text = "[agents.a]\ndelegates_to = [\"b\"]\nturns = [{ text = \"hi\" }]\n\n[agents.b]\ndelegates_to = [\"a\"]\nturns = [{ text = \"hi\" }]\n";
    let (line, _, message) = refuse(text);
    assert_eq!(line, 6, "{message}");
    assert!(message.contains("delegation cycle: a → b → a"), "{message}");
}

#[test]
fn an_unknown_tool_points_at_the_name() {
    let text = "[agents.a]\ntools = [\"get_wether\"]\nturns = [{ text = \"hi\" }]\n\n[tools.get_weather]\n";
    let (line, column, message) = refuse(text);
    assert_eq!((line, column), (2, 10), "{message}");
    assert!(message.contains("tools: get_weather"), "{message}");
}

#[test]
fn a_result_template_over_an_unknown_parameter_is_refused() {
    let text =
        format!("{AGENT}[tools.t]\nparameters = {{ city = \"string\" }}\nresult = \"{{town}}\"\n");
    let (line, _, message) = refuse(&text);
    assert_eq!(line, 3, "{message}");
    assert!(
        message.contains("`{town}`, which is not a parameter"),
        "{message}"
    );
}

#[test]
fn a_script_step_needs_exactly_one_action() {
    let text = format!("{AGENT}[[script]]\nat_ms = 5\nuser = \"hi\"\ncancel = \"task-1\"\n");
    let (line, _, message) = refuse(&text);
    assert_eq!(line, 3, "the step's [[script]] header: {message}");
    assert!(message.contains("exactly one of user, cancel"), "{message}");
}

#[test]
fn script_steps_out_of_order_are_refused() {
    let text = format!(
        "{AGENT}[[script]]\nat_ms = 500\nuser = \"a\"\n[[script]]\nat_ms = 100\nuser = \"b\"\n"
    );
    let (line, _, message) = refuse(&text);
    assert_eq!(line, 6, "{message}");
    assert!(message.contains("in time order"), "{message}");
}

#[test]
fn a_scripted_agent_without_turns_is_refused() {
    let (_, _, message) = refuse("[agents.a]\nsystem = \"x\"\n");
    assert!(message.contains("has no turns"), "{message}");
}

#[test]
fn an_unknown_status_in_expectations_is_refused() {
    let (_, _, message) = refuse(&format!("{AGENT}[expect]\nstatuses = {{ done = 1 }}\n"));
    assert!(message.contains("`done` is not a task status"), "{message}");
}

#[test]
fn two_top_agents_need_a_root() {
    let text = format!("{AGENT}[agents.b]\nturns = [{{ text = \"hi\" }}]\n");
    let (_, _, message) = refuse(&text);
    assert!(message.contains("set `root` in [scenario]"), "{message}");
    let ok = LoadedScenario::parse(
        &format!("[scenario]\nroot = \"b\"\n{text}"),
        "ok.toml",
        "ok",
    );
    assert_eq!(ok.map(|s| s.root).ok().as_deref(), Some("b"));
}

#[test]
fn the_example_scenarios_all_load() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/scenarios");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if let Err(e) = LoadedScenario::from_path(&path) {
            panic!("{e}");
        }
        count += 1;
    }
    assert!(count >= 6, "only {count} example scenarios");
}

//! `{name}` templates in tool results and scripted turns.

use std::collections::BTreeMap;

/// The variables a scripted turn's text and arguments may use.
pub const TURN_VARIABLES: [&str; 3] = ["input", "results", "all_results"];

/// The names of the `{…}` placeholders in `template`, in order.
fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template.split('{').skip(1).filter_map(|rest| {
        let end = rest.find('}')?;
        let name = &rest[..end];
        let is_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        is_name.then_some(name)
    })
}

/// Checks that every placeholder is one of `allowed`; returns the first
/// that is not.
pub fn check(template: &str, allowed: &[&str]) -> Result<(), String> {
    match placeholders(template).find(|name| !allowed.contains(name)) {
        Some(unknown) => Err(unknown.to_owned()),
        None => Ok(()),
    }
}

/// Replaces each `{name}` whose name is in `values`; other text is kept.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find('}')
            .and_then(|end| Some((end, values.get(&after[..end])?)))
        {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Renders every string inside a JSON value.
pub fn render_json(
    value: &serde_json::Value,
    values: &BTreeMap<&str, String>,
) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) => serde_json::Value::String(render(s, values)),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| render_json(v, values)).collect())
        }
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_json(v, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Collects every string inside a JSON value.
pub fn strings_in(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings_in(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| strings_in(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_names_and_keeps_the_rest() {
        let values = BTreeMap::from([("city", "Paris".to_owned())]);
        assert_eq!(
            render("Sunny in {city} {x} {", &values),
            "Sunny in Paris {x} {"
        );
    }

    #[test]
    fn check_reports_the_first_unknown_name() {
        assert_eq!(check("{a} {b} {c}", &["a", "c"]), Err("b".to_owned()));
        assert_eq!(check("{a} and { not a name }", &["a"]), Ok(()));
    }
}

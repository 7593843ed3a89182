//! [`ScenarioError`]: what went wrong reading or playing a scenario.

use std::ops::Range;

/// Why a scenario could not be read or played.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid scenario; the message names the place.
    #[error("{origin}:{line}:{column}: {message}\n{snippet}")]
    Invalid {
        /// The file.
        origin: String,
        /// The line, from 1.
        line: usize,
        /// The column, from 1.
        column: usize,
        /// What is wrong.
        message: String,
        /// The offending line with a caret under the place.
        snippet: String,
    },
    /// A model string could not be turned into a model.
    #[error("model `{spec}`: {reason}")]
    Model {
        /// The model string.
        spec: String,
        /// Why.
        reason: String,
    },
    /// The remote workers could not be reached.
    #[error("remote workers: {0}")]
    Remote(String),
    /// The runtime failed while playing the scenario.
    #[error("the run failed: {0}")]
    Runtime(#[from] baton_runtime::RuntimeError),
}

impl ScenarioError {
    /// An [`ScenarioError::Invalid`] about the bytes `span` of `text`.
    pub fn at(origin: &str, text: &str, span: Range<usize>, message: String) -> Self {
        let start = span.start.min(text.len());
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..start].chars().count() + 1;
        let line_text = text[line_start..].lines().next().unwrap_or("");
        let width = text[start..span.end.clamp(start, text.len())]
            .lines()
            .next()
            .map_or(1, |s| s.chars().count().max(1));
        let gutter = " ".repeat(line.to_string().len());
        let snippet = format!(
            "{gutter} |\n{line} | {line_text}\n{gutter} | {}{}",
            " ".repeat(column - 1),
            "^".repeat(width)
        );
        ScenarioError::Invalid {
            origin: origin.to_owned(),
            line,
            column,
            message,
            snippet,
        }
    }

    /// The line and column an [`ScenarioError::Invalid`] points at.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ScenarioError::Invalid { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_and_snippet_point_at_the_span() {
        let text = "a = 1\nbad = \"x\"\n";
        let err = ScenarioError::at("f.toml", text, 6..9, "unknown key".into());
        assert_eq!(err.position(), Some((2, 1)));
        let shown = err.to_string();
        assert!(shown.starts_with("f.toml:2:1: unknown key"), "{shown}");
        assert!(shown.contains("2 | bad = \"x\"\n  | ^^^"), "{shown}");
    }
}

//! Checking a run against its scenario's `[expect]` table.

use std::time::Duration;

use crate::load::{parse_status, status_counts};
use crate::runner::RunReport;
use crate::spec::Expectations;

/// One expectation a run did not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which expectation (`tree`, `answer_contains`, ...).
    pub expectation: String,
    /// What the scenario expected.
    pub expected: String,
    /// What the run produced.
    pub actual: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "expectation `{}` failed", self.expectation)?;
        for line in self.expected.lines() {
            writeln!(f, "  - {line}")?;
        }
        for line in self.actual.lines() {
            writeln!(f, "  + {line}")?;
        }
        Ok(())
    }
}

/// Every expectation `report` fails (empty: the run passes).
pub fn check(report: &RunReport, expect: &Expectations) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut fail = |expectation: &str, expected: String, actual: String| {
        failures.push(Failure {
            expectation: expectation.to_owned(),
            expected,
            actual,
        })
    };
    if !report.settled {
        fail(
            "settled",
            "the run settles".to_owned(),
            report.problems.last().cloned().unwrap_or_default(),
        );
    }
    let answer = report.answer().unwrap_or("");
    for needle in &expect.answer_contains {
        if !answer.contains(needle.as_str()) {
            fail(
                "answer_contains",
                format!("an answer containing {needle:?}"),
                answer.to_owned(),
            );
        }
    }
    if let Some(pattern) = &expect.answer_matches {
        let matches = regex::Regex::new(pattern).is_ok_and(|re| re.is_match(answer));
        if !matches {
            fail(
                "answer_matches",
                format!("an answer matching /{pattern}/"),
                answer.to_owned(),
            );
        }
    }
    if let Some(shape) = &expect.tree {
        let actual = report.tree.shape();
        if normalize(&actual) != normalize(shape) {
            fail("tree", shape.clone(), actual);
        }
    }
    if !expect.statuses.is_empty() {
        let actual = status_counts(report.tasks.iter().map(|t| t.status));
        let mut expected = expect.statuses.clone();
        expected.retain(|_, n| *n > 0);
        if actual != expected {
            fail("statuses", counts(&expected), counts(&actual));
        }
    }
    for (id, status) in &expect.tasks {
        let actual = report
            .tasks
            .iter()
            .find(|t| t.id.to_string() == *id)
            .map_or("(no such task)", |t| t.status.as_str());
        if parse_status(status).map(|s| s.as_str()) != Some(actual) {
            fail(&format!("tasks.{id}"), status.clone(), actual.to_owned());
        }
    }
    if let Some(max) = expect.max_duration_ms {
        if report.elapsed > Duration::from_millis(max) {
            fail(
                "max_duration_ms",
                format!("at most {max} ms"),
                format!("{} ms", report.elapsed.as_millis()),
            );
        }
    }
    let calls = report.model_calls();
    if let Some(expected) = expect.model_calls {
        let actual: usize = calls.values().sum();
        if actual != expected {
            fail(
                "model_calls",
                expected.to_string(),
                format!("{actual} ({})", counts(&calls)),
            );
        }
    }
    for (agent, expected) in &expect.model_calls_by_agent {
        let actual = calls.get(agent).copied().unwrap_or(0);
        if actual != *expected {
            fail(
                &format!("model_calls_by_agent.{agent}"),
                expected.to_string(),
                actual.to_string(),
            );
        }
    }
    failures
}

fn normalize(shape: &str) -> String {
    shape.chars().filter(|c| !c.is_whitespace()).collect()
}

fn counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

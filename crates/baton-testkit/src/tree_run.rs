//! [`TreeRun`]: play a tree on a paused clock, then assert on what happened.

use std::time::Duration;

use baton_core::{EventEnvelope, History, TaskStatus, TaskTree};
use baton_runtime::virtual_time::block_on_paused;
use baton_runtime::{Agent, Orchestrator, RuntimeError};
use tokio::time::Instant;

/// A finished run of one conversation: its tree, history, events and the
/// virtual time from the first input until everything settled.
///
/// ```
/// use baton_llm::{ScriptedModel, ScriptedTurn};
/// use baton_runtime::Agent;
/// use baton_testkit::TreeRun;
/// use serde_json::json;
/// use std::time::Duration;
///
/// let model = ScriptedModel::new()
///     .script("lead", [
///         ScriptedTurn::call("create_task", json!({"agent": "helper", "prompt": "p"})),
///         ScriptedTurn::text("delegated"),
///         ScriptedTurn::text("done"),
///     ])
///     .script("helper", [ScriptedTurn::text("helped").after(Duration::from_secs(2))]);
/// let helper = Agent::builder("helper").model(model.clone()).build();
/// let lead = Agent::builder("lead").model(model).delegates_to([helper]).build();
///
/// let run = TreeRun::paused(lead, ["go"]).unwrap();
/// run.tree().assert_shape("lead(helper)");
/// run.tree().assert_all(baton_core::TaskStatus::Succeeded);
/// run.assert_finished_within(Duration::from_secs(2));
/// assert_eq!(run.answer(), Some("done"));
/// ```
#[derive(Debug, Clone)]
pub struct TreeRun {
    tree: TaskTree,
    history: History,
    events: Vec<EventEnvelope>,
    lagged: u64,
    elapsed: Duration,
}

impl TreeRun {
    /// Starts a conversation with `agent` on a fresh paused clock, sends each
    /// of `inputs` in turn (each once the previous one has settled), and
    /// returns when the whole tree has settled.
    pub fn paused<I, S>(agent: Agent, inputs: I) -> Result<Self, RuntimeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let inputs: Vec<String> = inputs.into_iter().map(Into::into).collect();
        block_on_paused(async move {
            let convo = Orchestrator::builder(agent).worker_threads(0).spawn();
            let mut rx = convo.subscribe();
            let start = Instant::now();
            for input in inputs {
                convo.send_user(input).await?;
                convo.settled().await?;
            }
            let elapsed = start.elapsed();
            let history = convo.history().await?;
            let tree = convo.tree();
            convo.shutdown().await?;
            let mut events = Vec::new();
            let mut lagged = 0;
            loop {
                match rx.try_recv() {
                    Ok(e) => events.push(e),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => lagged += n,
                    Err(_) => break,
                }
            }
            Ok(Self {
                tree,
                history,
                events,
                lagged,
                elapsed,
            })
        })
    }

    /// The tree as it was when the run settled.
    pub fn tree(&self) -> TreeAssert<'_> {
        TreeAssert(&self.tree)
    }

    /// The conversation's history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The conversation's last answer.
    pub fn answer(&self) -> Option<&str> {
        self.history.last_assistant_text()
    }

    /// Every event of the run, in order. Panics if the run produced more
    /// events than the bus buffers (the test would miss some).
    pub fn events(&self) -> &[EventEnvelope] {
        assert_eq!(
            self.lagged, 0,
            "{} events were lost; raise the event capacity",
            self.lagged
        );
        &self.events
    }

    /// The virtual time from the first input until the tree settled.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Asserts the run settled within `limit` of virtual time.
    #[track_caller]
    pub fn assert_finished_within(&self, limit: Duration) {
        assert!(
            self.elapsed <= limit,
            "the run took {:?} of virtual time, more than {limit:?}",
            self.elapsed
        );
    }
}

/// Assertions over a [`TaskTree`].
#[derive(Debug, Clone, Copy)]
pub struct TreeAssert<'a>(&'a TaskTree);

impl TreeAssert<'_> {
    /// The tree itself.
    pub fn get(&self) -> &TaskTree {
        self.0
    }

    /// Asserts the tree's shape, e.g. `lead(researcher(fetcher, fetcher))`
    /// (whitespace is ignored); on failure, shows the rendered tree.
    #[track_caller]
    pub fn assert_shape(&self, expected: &str) {
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        let actual = self.0.shape();
        assert_eq!(
            squash(&actual),
            squash(expected),
            "tree shape differs; the tree is:\n{}",
            self.0.render()
        );
    }

    /// Asserts every task of the tree ended with `status`.
    #[track_caller]
    pub fn assert_all(&self, status: TaskStatus) {
        let wrong: Vec<String> = self
            .0
            .walk()
            .into_iter()
            .filter(|(_, n)| n.record.status != status)
            .map(|(_, n)| {
                format!(
                    "{} {} is {}",
                    n.record.id,
                    n.record.kind.source(),
                    n.record.status.as_str()
                )
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "expected every task {}, but {}; the tree is:\n{}",
            status.as_str(),
            wrong.join(", "),
            self.0.render()
        );
    }

    /// How many tasks of the tree ended with `status`.
    pub fn count(&self, status: TaskStatus) -> usize {
        self.0
            .walk()
            .into_iter()
            .filter(|(_, n)| n.record.status == status)
            .count()
    }
}

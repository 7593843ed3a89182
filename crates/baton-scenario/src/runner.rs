//! Playing a scenario: start the conversation, act out the script at its
//! virtual times, wait until everything settles, and report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{
    Event, EventEnvelope, History, Journal, Message, Replay, TaskId, TaskRecord, TaskTree,
};
use baton_runtime::virtual_time::block_on_paused;
use baton_runtime::{Conversation, InputPolicy, Orchestrator};
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

use crate::build::{agent_with, ModelChoice, Remote};
use crate::error::ScenarioError;
use crate::load::LoadedScenario;
use crate::spec::{InputPolicyDef, ScriptStep};

/// How long a run may take before it is stopped as stuck (virtual time on
/// the paused clock), unless [`RunOptions::deadline`] says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3600);

/// Connects the executor of remote agents, inside the run's runtime (the
/// executor's background work must live there).
pub type ConnectRemote =
    Box<dyn FnOnce() -> futures::future::BoxFuture<'static, Result<Remote, String>> + Send>;

/// A callback that sees every event as it happens.
pub type EventSink = Box<dyn FnMut(&EventEnvelope) + Send>;

/// How to play a scenario.
pub struct RunOptions {
    /// The agents' model(s).
    pub models: ModelChoice,
    /// Run on the real clock instead of the paused one.
    pub real_time: bool,
    /// Stop a run that has not settled after this long.
    pub deadline: Duration,
    /// Write the conversation to this journal.
    pub journal: Option<Arc<dyn Journal>>,
    /// Carry on from a stored conversation: script inputs already in it
    /// are not sent again.
    pub resume: Option<Replay>,
    /// Sees every event as it happens (for live views and `--json`).
    pub on_event: Option<EventSink>,
    /// Runs delegated agents on remote workers (`baton run --nats`).
    pub remote: Option<ConnectRemote>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            models: ModelChoice::AsWritten,
            real_time: false,
            deadline: DEFAULT_DEADLINE,
            journal: None,
            resume: None,
            on_event: None,
            remote: None,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("models", &self.models)
            .field("real_time", &self.real_time)
            .field("deadline", &self.deadline)
            .field("journal", &self.journal.is_some())
            .field("resume", &self.resume.is_some())
            .field("remote", &self.remote.is_some())
            .finish_non_exhaustive()
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The scenario's name.
    pub name: String,
    /// The root agent's history at the end.
    pub history: History,
    /// The task tree at the end.
    pub tree: TaskTree,
    /// Every task's record at the end.
    pub tasks: Vec<TaskRecord>,
    /// Every event, in order.
    pub events: Vec<EventEnvelope>,
    /// Events the collector missed (it fell behind the bus).
    pub lagged: u64,
    /// From the first step until everything settled (virtual time on the
    /// paused clock).
    pub elapsed: Duration,
    /// Whether everything settled before the deadline.
    pub settled: bool,
    /// Script steps the runtime refused (cancelling an unknown task...).
    pub problems: Vec<String>,
}

impl RunReport {
    /// The conversation's final answer.
    pub fn answer(&self) -> Option<&str> {
        self.history.last_assistant_text()
    }

    /// Model calls per agent.
    pub fn model_calls(&self) -> BTreeMap<String, usize> {
        let mut calls = BTreeMap::new();
        for envelope in &self.events {
            if let Event::TurnStarted { agent, .. } = &envelope.event {
                *calls.entry(agent.as_str().to_owned()).or_insert(0) += 1;
            }
        }
        calls
    }
}

/// Plays `scenario`: on a paused clock (it finishes at once and reports
/// virtual time) unless `options.real_time`.
pub fn run(scenario: &LoadedScenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    if options.real_time {
        actix_rt::System::new().block_on(play(scenario, options))
    } else {
        block_on_paused(play(scenario, options))
    }
}

/// Plays `scenario` inside a running actix system.
pub async fn play(
    scenario: &LoadedScenario,
    mut options: RunOptions,
) -> Result<RunReport, ScenarioError> {
    let remote = match options.remote.take() {
        Some(connect) => Some(connect().await.map_err(ScenarioError::Remote)?),
        None => None,
    };
    let root = agent_with(scenario, &scenario.root, &options.models, remote.as_ref())?;
    let policy = match scenario.spec.scenario.input_policy {
        InputPolicyDef::Queue => InputPolicy::Queue,
        InputPolicyDef::Interrupt => InputPolicy::Interrupt,
    };
    let mut builder = Orchestrator::builder(root)
        .input_policy(policy)
        .event_capacity(1 << 16);
    let mut already_said = 0;
    if let Some(journal) = options.journal.take() {
        builder = builder.journal(journal);
    }
    if let Some(replay) = options.resume.take() {
        already_said = replay
            .history
            .iter()
            .chain(&replay.pending_inputs)
            .filter(|m| matches!(m, Message::User { .. }))
            .count();
        builder = builder.resume(replay);
    }
    let convo = builder.spawn();
    let collector = EventCollector::start(convo.subscribe(), options.on_event.take());

    let start = Instant::now();
    let mut problems = Vec::new();
    let script = async {
        let mut users = 0;
        for step in &scenario.spec.script {
            let step = step.get_ref();
            if step.user.is_some() {
                users += 1;
                if users <= already_said {
                    continue;
                }
            }
            tokio::time::sleep_until(start + Duration::from_millis(step.at_ms)).await;
            if let Err(problem) = act(&convo, step).await {
                problems.push(problem);
            }
        }
        convo.settled().await
    };
    let settled = match tokio::time::timeout(options.deadline, script).await {
        Ok(result) => {
            result?;
            true
        }
        Err(_) => false,
    };
    let elapsed = start.elapsed();
    let history = convo.history().await?;
    let tree = convo.tree();
    let tasks = convo.tasks();
    convo.shutdown().await?;
    if !settled {
        problems.push(format!(
            "the run did not settle within {:?}; still open: {}",
            options.deadline,
            open_tasks(&tasks)
        ));
    }
    let (events, lagged) = collector.finish().await;
    Ok(RunReport {
        name: scenario.name.clone(),
        history,
        tree,
        tasks,
        events,
        lagged,
        elapsed,
        settled,
        problems,
    })
}

fn open_tasks(tasks: &[TaskRecord]) -> String {
    let open: Vec<String> = tasks
        .iter()
        .filter(|t| !t.status.is_terminal())
        .map(|t| format!("{} ({})", t.id, t.status.as_str()))
        .collect();
    if open.is_empty() {
        "no task (the conversation itself is busy)".to_owned()
    } else {
        open.join(", ")
    }
}

/// Performs one script step; a refusal is described, not fatal.
async fn act(convo: &Conversation, step: &ScriptStep) -> Result<(), String> {
    let task = |id: &str| id.parse::<TaskId>().map_err(|e| format!("{id}: {e}"));
    let outcome = if let Some(text) = &step.user {
        convo.send_user(text.clone()).await.map(|_| ())
    } else if let Some(id) = &step.cancel {
        convo.cancel_task(task(id)?).await.map(|_| ())
    } else if let Some(id) = &step.approve {
        convo.approve(task(id)?).await.map(|_| ())
    } else if let Some(id) = &step.reject {
        convo
            .reject(task(id)?, "rejected by the script")
            .await
            .map(|_| ())
    } else {
        Ok(())
    };
    outcome.map_err(|e| format!("at {} ms: {e}", step.at_ms))
}

/// Reads a conversation's events on their own task, so a long run never
/// lags the bus: each event goes to an optional sink as it happens and is
/// kept for the report.
pub struct EventCollector {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<(Vec<EventEnvelope>, u64)>,
}

impl EventCollector {
    /// Starts reading `rx`, passing each event to `sink`.
    pub fn start(mut rx: broadcast::Receiver<EventEnvelope>, mut sink: Option<EventSink>) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut lagged = 0;
            let mut keep = |e: EventEnvelope, out: &mut Vec<EventEnvelope>| {
                if let Some(sink) = sink.as_mut() {
                    sink(&e);
                }
                out.push(e);
            };
            loop {
                tokio::select! {
                    biased;
                    received = rx.recv() => match received {
                        Ok(e) => keep(e, &mut out),
                        Err(broadcast::error::RecvError::Lagged(n)) => lagged += n,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = &mut stopped => {
                        loop {
                            match rx.try_recv() {
                                Ok(e) => keep(e, &mut out),
                                Err(broadcast::error::TryRecvError::Lagged(n)) => lagged += n,
                                Err(_) => break,
                            }
                        }
                        break;
                    }
                }
            }
            (out, lagged)
        });
        Self { stop, done }
    }

    /// Stops reading once the events already sent are read; returns them
    /// and how many were lost to lag.
    pub async fn finish(self) -> (Vec<EventEnvelope>, u64) {
        let _ = self.stop.send(());
        self.done.await.unwrap_or_default()
    }
}

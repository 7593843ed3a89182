//! Tools and helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use baton::core::Journal as _;
use baton::{Event, EventEnvelope, History, Message, Tool, ToolError, ToolOutput};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::broadcast;

#[derive(Deserialize, JsonSchema)]
pub struct CityArgs {
    /// The city.
    pub city: String,
}

/// A weather lookup that takes one (virtual) second.
pub struct GetWeather;

impl Tool for GetWeather {
    type Args = CityArgs;
    fn name(&self) -> &str {
        "get_weather"
    }
    fn description(&self) -> &str {
        "Current weather in a city."
    }
    async fn call(&self, args: CityArgs) -> Result<ToolOutput, ToolError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(format!("sunny in {}", args.city).into())
    }
}

#[derive(Deserialize, JsonSchema)]
pub struct TopicArgs {
    /// The topic.
    pub topic: String,
}

/// A research job that takes `secs` (virtual) seconds.
pub struct DeepResearch {
    pub secs: u64,
}

impl Tool for DeepResearch {
    type Args = TopicArgs;
    fn name(&self) -> &str {
        "deep_research"
    }
    fn description(&self) -> &str {
        "Researches a topic in depth. Slow."
    }
    async fn call(&self, args: TopicArgs) -> Result<ToolOutput, ToolError> {
        tokio::time::sleep(Duration::from_secs(self.secs)).await;
        Ok(format!("report on {}", args.topic).into())
    }
}

#[derive(Deserialize, JsonSchema)]
pub struct NoArgs {}

/// A tool that panics.
pub struct Panicky;

impl Tool for Panicky {
    type Args = NoArgs;
    fn name(&self) -> &str {
        "panicky"
    }
    fn description(&self) -> &str {
        "Always panics."
    }
    async fn call(&self, _args: NoArgs) -> Result<ToolOutput, ToolError> {
        panic!("tool exploded")
    }
}

/// A tool that never finishes.
pub struct Forever;

impl Tool for Forever {
    type Args = NoArgs;
    fn name(&self) -> &str {
        "forever"
    }
    fn description(&self) -> &str {
        "Never finishes."
    }
    async fn call(&self, _args: NoArgs) -> Result<ToolOutput, ToolError> {
        futures::future::pending().await
    }
}

/// A tool that blocks its thread until released: it holds an arbiter
/// still, so whatever else is on that arbiter waits. Only its first call
/// says it holds the thread; once the release is dropped, every call
/// returns at once.
pub struct HoldThread {
    holding: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl HoldThread {
    /// The tool, what says that its first call holds the thread (see
    /// [`held`]), and what releases it (send, or drop for good).
    pub fn new() -> (
        Self,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (holding_tx, holding) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let tool = Self {
            holding: std::sync::Mutex::new(Some(holding_tx)),
            release: std::sync::Mutex::new(release_rx),
        };
        (tool, holding, release)
    }
}

impl Tool for HoldThread {
    type Args = NoArgs;
    fn name(&self) -> &str {
        "hold_thread"
    }
    fn description(&self) -> &str {
        "Blocks its thread until released."
    }
    async fn call(&self, _args: NoArgs) -> Result<ToolOutput, ToolError> {
        if let Some(holding) = self.holding.lock().unwrap().take() {
            let _ = holding.send(());
        }
        let _ = self.release.lock().unwrap().recv();
        Ok("released".into())
    }
}

/// Resolves once a [`HoldThread`] holds its thread.
pub async fn held(holding: std::sync::mpsc::Receiver<()>) {
    tokio::task::spawn_blocking(move || holding.recv())
        .await
        .unwrap()
        .expect("the thread is held");
}

/// How many requests `agent` sent to a recording scripted model.
pub fn requests_of(model: &baton::ScriptedModel, agent: &str) -> usize {
    model
        .requests()
        .iter()
        .filter(|r| r.agent.as_str() == agent)
        .count()
}

/// Waits for the first event that matches `pred` (the bus must not lag).
pub async fn wait_for(
    rx: &mut broadcast::Receiver<EventEnvelope>,
    pred: impl Fn(&Event) -> bool,
) -> EventEnvelope {
    loop {
        let e = rx.recv().await.expect("the event bus is open");
        if pred(&e.event) {
            return e;
        }
    }
}

/// A background tool that takes `takes` and fails on its first `failures`
/// calls (counted in `calls`), then answers "finally".
pub struct Flaky {
    pub calls: std::sync::Arc<std::sync::atomic::AtomicU32>,
    pub failures: u32,
    pub takes: Duration,
}

impl Tool for Flaky {
    type Args = NoArgs;
    fn name(&self) -> &str {
        "flaky"
    }
    fn description(&self) -> &str {
        "Fails at first."
    }
    async fn call(&self, _args: NoArgs) -> Result<ToolOutput, ToolError> {
        if !self.takes.is_zero() {
            tokio::time::sleep(self.takes).await;
        }
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n <= self.failures {
            return Err(ToolError::Failed(format!("call {n} failed")));
        }
        Ok("finally".into())
    }
}

/// Every event received so far, without waiting.
pub fn drain(rx: &mut broadcast::Receiver<EventEnvelope>) -> Vec<EventEnvelope> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// The events that match `pred`.
pub fn matching(events: &[EventEnvelope], pred: impl Fn(&Event) -> bool) -> Vec<EventEnvelope> {
    events.iter().filter(|e| pred(&e.event)).cloned().collect()
}

/// The text of every message of `history` that has text, in order.
pub fn texts(history: &History) -> Vec<String> {
    history
        .messages()
        .iter()
        .filter_map(Message::text)
        .collect()
}

/// The error tool answers of `history`, in order.
pub fn tool_errors(history: &History) -> Vec<String> {
    history
        .messages()
        .iter()
        .filter_map(|m| match m {
            Message::Tool {
                content,
                is_error: true,
                ..
            } => Some(content.clone()),
            _ => None,
        })
        .collect()
}

/// How many task results a history holds.
pub fn results_in(history: &History) -> usize {
    history
        .messages()
        .iter()
        .filter(|m| matches!(m, Message::TaskResult { .. }))
        .count()
}

/// A conversation of `agent` that journals to `journal`.
pub fn durable(
    agent: baton::Agent,
    journal: &(impl baton::core::Journal + Clone),
) -> baton::Conversation {
    baton::Orchestrator::builder(agent)
        .journal(std::sync::Arc::new(journal.clone()))
        .spawn()
}

/// A model that answers each user message with "re: " and the message.
pub fn echo_model() -> baton::ScriptedModel {
    baton::ScriptedModel::from_fn(|req| match req.messages.last() {
        Some(Message::User { content }) => baton::ScriptedTurn::text(format!("re: {content}")),
        _ => baton::ScriptedTurn::text("?"),
    })
}

/// A remote executor that notes each task it is handed, and whether the
/// task's creation was durable in `journal` at that moment; each task
/// succeeds a second later.
pub struct Noting {
    journal: Unreliable,
    pub dispatched: std::sync::Mutex<Vec<(baton::TaskId, bool)>>,
}

impl Noting {
    pub fn new(journal: &Unreliable) -> Self {
        Self {
            journal: journal.clone(),
            dispatched: Default::default(),
        }
    }

    /// The tasks handed out so far, in order.
    pub fn dispatched(&self) -> Vec<baton::TaskId> {
        let dispatched = self.dispatched.lock().unwrap();
        dispatched.iter().map(|(id, _)| *id).collect()
    }
}

impl baton::runtime::RemoteExecutor for Noting {
    fn dispatch(
        &self,
        task: baton::runtime::RemoteTask,
        report: actix::Recipient<baton::runtime::messages::TaskFinished>,
    ) {
        let durable = self.journal.durable().iter().any(|r| {
            matches!(r, baton::core::JournalRecord::TaskCreated { task: t, .. } if t.id == task.task_id)
        });
        self.dispatched
            .lock()
            .unwrap()
            .push((task.task_id, durable));
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            report.do_send(baton::runtime::messages::TaskFinished {
                task_id: task.task_id,
                attempt: task.attempt,
                outcome: baton::TaskOutcome::Succeeded {
                    output: "ran remotely".into(),
                },
            });
        });
    }

    fn cancel(&self, _task_id: baton::TaskId) {}
}

/// A journal over a [`baton::core::MemoryJournal`] (its durable part) whose
/// appends can be made to fail or be held back, keeping the `Journal`
/// contract: the records of a failed or held append are not withdrawn but
/// become durable, in order, with the next append that succeeds (or when
/// held appends are released).
#[derive(Clone, Default)]
pub struct Unreliable {
    durable: baton::core::MemoryJournal,
    state: std::sync::Arc<std::sync::Mutex<UnreliableState>>,
}

#[derive(Default)]
struct UnreliableState {
    /// Records handed over and not durable yet, in order.
    queued: Vec<baton::core::JournalRecord>,
    /// Whether appends fail (all of them, until `recover`).
    down: bool,
    /// Whether the journal is closed for good (every append fails so).
    closed: bool,
    /// How many appends still fail once armed.
    failures: u32,
    /// Whether `failures` counts (armed by the first result's record).
    armed: bool,
    /// Appends refused so far.
    refused: u32,
    /// Whether appends are held back (until `release`).
    holding: bool,
    /// Whether only appends carrying a `TaskFinished` record are held.
    holding_results: bool,
    /// The held appends' answers, oldest first.
    held: Vec<futures::channel::oneshot::Sender<Result<(), baton::core::JournalError>>>,
}

impl Unreliable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails the first `n` appends from the first one carrying a
    /// `TaskFinished` record on, like a disk filling up.
    pub fn failing_from_first_result(n: u32) -> Self {
        let journal = Self::new();
        journal.lock().failures = n;
        journal
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UnreliableState> {
        self.state.lock().unwrap()
    }

    /// The durable records, in order.
    pub fn durable(&self) -> Vec<baton::core::JournalRecord> {
        self.durable.records()
    }

    /// From now on every append fails.
    pub fn go_down(&self) {
        self.lock().down = true;
    }

    /// From now on every append fails as a journal closed for good does
    /// (a store whose writer died): what waits is never durable, and the
    /// appends held back fail so now.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.holding = false;
        state.holding_results = false;
        let held = std::mem::take(&mut state.held);
        state.refused += u32::try_from(held.len()).unwrap();
        for held in held {
            let _ = held.send(Err(closed_error()));
        }
    }

    /// Appends succeed again (what waits goes with the next one).
    pub fn recover(&self) {
        self.lock().down = false;
    }

    /// From now on appends are held back: they resolve, and their records
    /// become durable, at `release`.
    pub fn hold(&self) {
        self.lock().holding = true;
    }

    /// Writes what waits and resolves the held appends.
    pub fn release(&self) {
        let mut state = self.lock();
        state.holding = false;
        state.holding_results = false;
        let queued = std::mem::take(&mut state.queued);
        drop(self.durable.append(queued));
        for held in state.held.drain(..) {
            let _ = held.send(Ok(()));
        }
    }

    /// From now on the appends carrying a `TaskFinished` record are held
    /// back (others go through), until `answer_oldest` or `release`.
    pub fn hold_results(&self) {
        let mut state = self.lock();
        state.holding = true;
        state.holding_results = true;
    }

    /// Answers the oldest held append: it succeeds (and what waits becomes
    /// durable) if `durable`, fails otherwise (its records wait).
    pub fn answer_oldest(&self, durable: bool) {
        let mut state = self.lock();
        if state.held.is_empty() {
            return;
        }
        let answer = if durable {
            let queued = std::mem::take(&mut state.queued);
            drop(self.durable.append(queued));
            Ok(())
        } else {
            state.refused += 1;
            Err(baton::core::JournalError::new("the disk is full"))
        };
        let _ = state.held.remove(0).send(answer);
    }

    /// How many appends failed so far.
    pub fn refused(&self) -> u32 {
        self.lock().refused
    }
}

impl baton::core::Journal for Unreliable {
    fn append(
        &self,
        records: Vec<baton::core::JournalRecord>,
    ) -> futures::future::BoxFuture<'static, Result<(), baton::core::JournalError>> {
        use futures::FutureExt;
        let mut state = self.lock();
        let result = records
            .iter()
            .any(|r| matches!(r, baton::core::JournalRecord::TaskFinished { .. }));
        if result {
            state.armed = true;
        }
        if state.closed {
            state.refused += 1;
            return Box::pin(async { Err(closed_error()) });
        }
        state.queued.extend(records);
        let fail = state.down || (state.armed && state.failures > 0);
        if fail {
            if !state.down {
                state.failures -= 1;
            }
            state.refused += 1;
            return Box::pin(async { Err(baton::core::JournalError::new("the disk is full")) });
        }
        if state.holding && (result || !state.holding_results) {
            let (tx, rx) = futures::channel::oneshot::channel();
            state.held.push(tx);
            // (An answer never sent, the journal dropped, counts as durable.)
            return rx.map(|answer| answer.unwrap_or(Ok(()))).boxed();
        }
        let queued = std::mem::take(&mut state.queued);
        drop(self.durable.append(queued));
        Box::pin(async { Ok(()) })
    }
}

/// The error of a journal closed for good (its store's writer died).
fn closed_error() -> baton::core::JournalError {
    baton::core::JournalError::closed("the store's writer has stopped")
}

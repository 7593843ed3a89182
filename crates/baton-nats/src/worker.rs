//! [`NatsWorker`]: the worker's side. Pulls tasks for its agent kinds, runs
//! each as a local conversation, and reports back.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{
    self, consumer::pull, context::GetStreamErrorKind, AckKind, ErrorCode,
};
use baton_core::{Event, TaskOutcome};
use baton_runtime::{telemetry, Agent, Orchestrator};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch, Semaphore};

use crate::config::{token, NatsConfig};
use crate::error::NatsError;
use crate::executor::{publish_result, read_entry, to_bytes};
use crate::protocol::{trace_from_headers, RemoteStatus, ResultMessage, TaskEntry, TaskMessage};
use crate::setup::{self, Handles};

/// A live worker, as it registers itself in the worker bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's id.
    pub id: String,
    /// The agent kinds it serves.
    pub agents: Vec<String>,
    /// Tasks it runs now.
    pub running: usize,
    /// Tasks it can run at once.
    #[serde(default)]
    pub capacity: usize,
    /// Tasks it has finished.
    pub completed: u64,
    /// When it last refreshed this entry, in ms since the Unix epoch.
    pub updated_ms: u64,
}

#[derive(Debug, Default)]
struct Stats {
    running: AtomicUsize,
    completed: AtomicU64,
}

/// Runs delegated tasks for some agent kinds, taken from NATS JetStream.
///
/// ```rust,ignore
/// // Served under each agent's name; any number of workers per name.
/// let worker = NatsWorker::builder(NatsConfig::new("nats://127.0.0.1:4222"))
///     .agents(agents)            // Vec<Agent>, e.g. from an agents file
///     .concurrency(16)           // default: config.worker_concurrency
///     .build()?;
/// // Inside an actix system:
/// worker.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await?;
/// // Or from anywhere (plain tokio, sync code): its own thread and actix system.
/// let handle = worker.spawn()?;
/// handle.stop().await?;
/// ```
///
/// Any number of workers may serve the same agent kind: they share one
/// durable consumer, so each delivery goes to one of them. A worker that
/// dies stops acking; after `ack_wait` JetStream delivers the task again,
/// to another worker. While a task runs, the worker sends progress acks so
/// a long task is not redelivered, and watches the task's entry so a
/// cancellation reaches it. A worker registers in the worker bucket and
/// refreshes its entry (running tasks, capacity, completed tasks) every
/// `heartbeat`; [`NatsWorker::list`] reads them.
#[derive(Clone)]
pub struct NatsWorker {
    config: NatsConfig,
    id: String,
    agents: Vec<Agent>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for NatsWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsWorker")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Builds a [`NatsWorker`]; see [`NatsWorker::builder`].
#[derive(Debug)]
pub struct NatsWorkerBuilder {
    config: NatsConfig,
    id: Option<String>,
    agents: Vec<Agent>,
}

impl NatsWorkerBuilder {
    /// Serves `agent` under its name.
    pub fn agent(mut self, agent: Agent) -> Self {
        self.agents.push(agent);
        self
    }

    /// Serves each of `agents` under its name.
    pub fn agents(mut self, agents: impl IntoIterator<Item = Agent>) -> Self {
        self.agents.extend(agents);
        self
    }

    /// The id the worker registers under (letters, digits, `-`, `_`).
    /// Default: `<host>-<pid>-<n>`.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// How many tasks the worker runs at once (default:
    /// `config.worker_concurrency`).
    pub fn concurrency(mut self, tasks: usize) -> Self {
        self.config.worker_concurrency = tasks;
        self
    }

    /// Checks the names and builds the worker.
    pub fn build(self) -> Result<NatsWorker, NatsError> {
        if self.agents.is_empty() {
            return Err(NatsError::NoAgents);
        }
        let mut names = std::collections::HashSet::new();
        for agent in &self.agents {
            let name = token(agent.name().as_str())?;
            if !names.insert(name.to_owned()) {
                return Err(NatsError::DuplicateAgent(name.to_owned()));
            }
        }
        let id = match self.id {
            Some(id) => token(&id)?.to_owned(),
            None => default_id(),
        };
        Ok(NatsWorker {
            config: self.config,
            id,
            agents: self.agents,
            stats: Arc::default(),
        })
    }
}

/// `<host>-<pid>-<n>`, with the host name reduced to subject-safe
/// characters.
fn default_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host: String = whoami::hostname()
        .unwrap_or_else(|_| "worker".to_owned())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let host = if host.is_empty() {
        "worker".into()
    } else {
        host
    };
    format!(
        "{host}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// How one delivery of a task ended on this worker.
enum Ended {
    /// The task ran to an outcome.
    Finished(TaskOutcome),
    /// The orchestrator cancelled it.
    Cancelled,
    /// This worker is stopping: the task goes back to the queue.
    Abandoned,
}

impl NatsWorker {
    /// A worker for `agents`, each served under its own name, with a
    /// generated id. Names are checked when it runs; prefer
    /// [`NatsWorker::builder`], which checks them up front.
    pub fn new(config: NatsConfig, agents: impl IntoIterator<Item = Agent>) -> Self {
        Self {
            config,
            id: default_id(),
            agents: agents.into_iter().collect(),
            stats: Arc::default(),
        }
    }

    /// A builder: agents, id and concurrency.
    pub fn builder(config: NatsConfig) -> NatsWorkerBuilder {
        NatsWorkerBuilder {
            config,
            id: None,
            agents: Vec::new(),
        }
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Tasks this worker has finished (and reported).
    pub fn completed(&self) -> u64 {
        self.stats.completed.load(Ordering::Relaxed)
    }

    /// Tasks this worker runs now.
    pub fn running(&self) -> usize {
        self.stats.running.load(Ordering::Relaxed)
    }

    /// Serves tasks until the connection fails. Runs the agents as local
    /// conversations, so call it inside an actix system.
    pub async fn run(self) -> Result<(), NatsError> {
        self.run_until(std::future::pending()).await
    }

    /// Serves tasks until `shutdown` completes, then stops taking tasks,
    /// gives the ones it runs back to the queue (at once, not after the
    /// ack wait), removes its entry from the worker bucket and returns.
    /// Call it inside an actix system.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), NatsError> {
        if self.agents.is_empty() {
            return Err(NatsError::NoAgents);
        }
        for agent in &self.agents {
            token(agent.name().as_str())?;
        }
        token(&self.id)?;
        let handles = setup::connect(&self.config).await?;
        let capacity = self.config.worker_concurrency.clamp(1, 1 << 20);
        let slots = Arc::new(Semaphore::new(capacity));
        let (stop, stopping) = watch::channel(false);
        let heartbeat = actix::spawn(self.clone().heartbeat(handles.clone()));
        let mut loops = Vec::new();
        for agent in self.agents.clone() {
            let name = self.config.worker_consumer(agent.name())?;
            let consumer = handles
                .tasks
                .get_or_create_consumer(
                    &name,
                    pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: self.config.task_subject(agent.name())?,
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: self.config.ack_wait,
                        max_deliver: self.config.max_deliver,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| NatsError::js("creating a worker consumer", e))?;
            loops.push(self.clone().pull_loop(
                handles.clone(),
                consumer,
                agent,
                Arc::clone(&slots),
                stopping.clone(),
            ));
        }
        let served = async {
            for result in futures::future::join_all(loops).await {
                result?;
            }
            Ok(())
        };
        let ended = tokio::select! {
            result = served => result,
            () = shutdown => Ok(()),
        };
        // Tasks in flight see the flag and give their deliveries back.
        let _ = stop.send(true);
        let all = u32::try_from(capacity).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(self.config.ack_wait, slots.acquire_many(all)).await;
        heartbeat.abort();
        if let Err(error) = handles.worker_kv.delete(&self.id).await {
            tracing::warn!(%error, "could not remove the worker's entry");
        }
        ended
    }

    /// Runs the worker on a thread of its own, in an actix system of its
    /// own: for callers outside actix (a plain tokio `main`, sync code,
    /// tests). Dropping the handle stops the worker.
    pub fn spawn(self) -> Result<WorkerHandle, NatsError> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (report, done) = oneshot::channel();
        let worker = self.clone();
        std::thread::Builder::new()
            .name(format!("baton-worker {}", self.id))
            .spawn(move || {
                let result = actix_rt::System::new().block_on(self.run_until(async {
                    let _ = stopped.await;
                }));
                let _ = report.send(result);
            })
            .map_err(NatsError::Thread)?;
        Ok(WorkerHandle {
            worker,
            stop: Some(stop),
            done,
        })
    }

    /// Takes as many tasks as there are free slots, never more, so no task
    /// waits in a local buffer while its ack clock runs.
    async fn pull_loop(
        self,
        handles: Handles,
        consumer: jetstream::consumer::Consumer<pull::Config>,
        agent: Agent,
        slots: Arc<Semaphore>,
        stopping: watch::Receiver<bool>,
    ) -> Result<(), NatsError> {
        loop {
            let first = Arc::clone(&slots)
                .acquire_owned()
                .await
                .map_err(|e| NatsError::js("waiting for a slot", e))?;
            let mut permits = vec![first];
            while let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
                permits.push(p);
            }
            let mut batch = consumer
                .batch()
                .max_messages(permits.len())
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| NatsError::js("pulling tasks", e))?;
            while let Some(message) = batch.next().await {
                let message = match message {
                    Ok(m) => m,
                    Err(error) => {
                        tracing::warn!(%error, "pull error");
                        continue;
                    }
                };
                let Some(permit) = permits.pop() else { break };
                let worker = self.clone();
                let handles = handles.clone();
                let agent = agent.clone();
                let stopping = stopping.clone();
                actix::spawn(async move {
                    worker.stats.running.fetch_add(1, Ordering::Relaxed);
                    if let Err(error) = worker.handle(&handles, agent, message, stopping).await {
                        tracing::warn!(%error, "task handling failed");
                    }
                    worker.stats.running.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
        }
    }

    /// Runs one delivery of a task.
    async fn handle(
        &self,
        handles: &Handles,
        agent: Agent,
        message: jetstream::Message,
        mut stopping: watch::Receiver<bool>,
    ) -> Result<(), NatsError> {
        let task: TaskMessage = match serde_json::from_slice(&message.payload) {
            Ok(t) => t,
            Err(error) => {
                tracing::warn!(%error, "dropped a malformed task");
                let _ = message.ack_with(AckKind::Term).await;
                return Ok(());
            }
        };
        let delivery = message.info().map(|i| i.delivered).unwrap_or(1).max(1) as u64;
        let key = self.config.task_key(&task.conversation, task.task_id)?;
        let kv = &handles.task_kv;
        let current = read_entry(kv, &key).await?;
        if let Some((entry, _)) = &current {
            let finished = matches!(
                entry.status,
                RemoteStatus::Done | RemoteStatus::CancelRequested
            );
            if finished || entry.attempt > task.attempt {
                let _ = message.ack().await;
                return Ok(());
            }
        }
        let last_error = current.as_ref().and_then(|(e, _)| e.last_error.clone());
        let running = TaskEntry {
            status: RemoteStatus::Running,
            attempt: task.attempt,
            worker: Some(self.id.clone()),
            delivery,
            outcome: None,
            last_error: last_error.clone(),
        };
        let taken = match current {
            Some((_, revision)) => kv.update(&key, to_bytes(&running)?, revision).await.ok(),
            None => kv.create(&key, to_bytes(&running)?).await.ok(),
        };
        let Some(revision) = taken else {
            // Someone changed the entry meanwhile; the next delivery decides.
            return Ok(());
        };

        let cancel_subject = self
            .config
            .cancel_subject(&task.conversation, task.task_id)?;
        let mut cancels = handles
            .client
            .subscribe(cancel_subject)
            .await
            .map_err(|e| NatsError::js("subscribing to cancellations", e))?;
        let cancel_requested = async || {
            read_entry(kv, &key)
                .await
                .ok()
                .flatten()
                .is_some_and(|(e, _)| e.status == RemoteStatus::CancelRequested)
        };
        // With the `otel` feature, the task's spans continue the delegating
        // conversation's trace, under the agent that delegated it.
        let span = telemetry::remote_task_span(
            &task.agent,
            task.task_id,
            task.attempt,
            &self.id,
            trace_from_headers(message.headers.as_ref()).as_ref(),
        );
        let convo = Orchestrator::builder(agent)
            .worker_threads(0)
            .parent_span(span)
            .spawn();
        let run = run_conversation(&convo, task.prompt.clone());
        tokio::pin!(run);
        let mut progress =
            tokio::time::interval((self.config.ack_wait / 3).max(Duration::from_millis(100)));
        progress.tick().await;
        let ended = loop {
            if *stopping.borrow() {
                break Ended::Abandoned;
            }
            tokio::select! {
                outcome = &mut run => break Ended::Finished(outcome),
                _ = progress.tick() => {
                    if cancel_requested().await {
                        break Ended::Cancelled;
                    }
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                Some(_) = cancels.next() => {
                    if cancel_requested().await {
                        break Ended::Cancelled;
                    }
                }
                changed = stopping.changed() => {
                    if changed.is_err() {
                        // The worker's run was dropped: give the task back.
                        break Ended::Abandoned;
                    }
                }
            }
        };
        drop(cancels);
        let _ = convo.shutdown().await;
        let outcome = match ended {
            Ended::Finished(outcome) => outcome,
            Ended::Cancelled => {
                let _ = message.ack().await;
                return Ok(());
            }
            Ended::Abandoned => {
                let back = TaskEntry {
                    last_error,
                    ..TaskEntry::pending(task.attempt)
                };
                if kv.update(&key, to_bytes(&back)?, revision).await.is_ok() {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
                return Ok(());
            }
        };

        if !outcome.is_success() && (delivery as i64) < self.config.max_deliver {
            // Give it back for another delivery.
            let again = TaskEntry {
                last_error: Some(outcome.detail().to_owned()),
                ..TaskEntry::pending(task.attempt)
            };
            if kv.update(&key, to_bytes(&again)?, revision).await.is_ok() {
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_millis(100 * delivery))))
                    .await;
            }
            return Ok(());
        }
        let done = TaskEntry {
            status: RemoteStatus::Done,
            attempt: task.attempt,
            worker: Some(self.id.clone()),
            delivery,
            outcome: Some(outcome.clone()),
            last_error,
        };
        if kv.update(&key, to_bytes(&done)?, revision).await.is_err() {
            // A cancellation or a newer delivery changed the entry: this
            // result is not the one that counts.
            let ended = read_entry(kv, &key).await?.is_some_and(|(e, _)| {
                matches!(e.status, RemoteStatus::Done | RemoteStatus::CancelRequested)
            });
            if ended {
                let _ = message.ack().await;
            }
            return Ok(());
        }
        let result = ResultMessage {
            conversation: task.conversation.clone(),
            task_id: task.task_id,
            attempt: task.attempt,
            outcome,
            worker: self.id.clone(),
        };
        publish_result(handles, &self.config, &key, &result).await?;
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        let _ = message.double_ack().await;
        Ok(())
    }

    /// Refreshes this worker's entry in the worker bucket.
    async fn heartbeat(self, handles: Handles) {
        let mut tick = tokio::time::interval(self.config.heartbeat);
        loop {
            tick.tick().await;
            let info = WorkerInfo {
                id: self.id.clone(),
                agents: self.agents.iter().map(|a| a.name().to_string()).collect(),
                running: self.running(),
                capacity: self.config.worker_concurrency,
                completed: self.completed(),
                updated_ms: now_ms(),
            };
            let Ok(bytes) = to_bytes(&info) else { continue };
            if let Err(error) = handles.worker_kv.put(&self.id, bytes).await {
                tracing::warn!(%error, "heartbeat failed");
            }
        }
    }

    /// The workers that refreshed their entry within the last three
    /// heartbeats, sorted by id. Only reads: it creates no stream or
    /// bucket, and answers an empty list when no worker ever registered.
    pub async fn list(config: &NatsConfig) -> Result<Vec<WorkerInfo>, NatsError> {
        let client = crate::setup::client(config).await?;
        let js = jetstream::new(client);
        match js.get_stream(format!("KV_{}", config.worker_bucket)).await {
            Ok(_) => {}
            Err(e) if is_not_found(e.kind()) => return Ok(Vec::new()),
            Err(e) => return Err(NatsError::js("reading the worker bucket", e)),
        }
        let bucket = js
            .get_key_value(&config.worker_bucket)
            .await
            .map_err(|e| NatsError::js("reading the worker bucket", e))?;
        let mut keys = bucket
            .keys()
            .await
            .map_err(|e| NatsError::js("listing workers", e))?;
        let mut workers = Vec::new();
        while let Some(key) = keys.next().await {
            let Ok(key) = key else { continue };
            if let Ok(Some(value)) = bucket.get(&key).await {
                match serde_json::from_slice::<WorkerInfo>(&value) {
                    Ok(info) => workers.push(info),
                    Err(error) => tracing::warn!(%error, %key, "ignored a malformed worker entry"),
                }
            }
        }
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }
}

fn is_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// A worker running on its own thread ([`NatsWorker::spawn`]). Dropping it
/// stops the worker.
#[derive(Debug)]
pub struct WorkerHandle {
    worker: NatsWorker,
    stop: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<Result<(), NatsError>>,
}

impl WorkerHandle {
    /// The worker (its id and counters).
    pub fn worker(&self) -> &NatsWorker {
        &self.worker
    }

    /// Stops the worker as [`NatsWorker::run_until`] does, and waits until
    /// it has.
    pub async fn stop(mut self) -> Result<(), NatsError> {
        drop(self.stop.take());
        (&mut self.done).await.unwrap_or(Err(NatsError::WorkerLost))
    }

    /// Waits until the worker ends on its own (its connection failed).
    pub async fn wait(mut self) -> Result<(), NatsError> {
        let _keep_running = self.stop.take();
        (&mut self.done).await.unwrap_or(Err(NatsError::WorkerLost))
    }
}

/// Plays one task as a conversation: the prompt in, the last answer out.
async fn run_conversation(convo: &baton_runtime::Conversation, prompt: String) -> TaskOutcome {
    let mut events = convo.subscribe();
    let played = async {
        convo.send_user(prompt).await?;
        convo.settled().await?;
        convo.history().await
    }
    .await;
    let history = match played {
        Ok(h) => h,
        Err(e) => {
            return TaskOutcome::Failed {
                error: e.to_string(),
            }
        }
    };
    if let Some(answer) = history.last_assistant_text() {
        return TaskOutcome::Succeeded {
            output: answer.to_owned(),
        };
    }
    let mut error = "the sub-agent gave no answer".to_owned();
    while let Ok(e) = events.try_recv() {
        if let Event::TurnFailed { error: e, .. } = e.event {
            error = e;
        }
    }
    TaskOutcome::Failed { error }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

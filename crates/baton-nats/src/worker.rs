//! [`NatsWorker`]: the worker's side. Pulls tasks for its agent kinds, runs
//! each as a local conversation, and reports back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull, message::PublishMessage, AckKind};
use baton_core::{Event, TaskOutcome};
use baton_runtime::{Agent, Orchestrator};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::config::{token, NatsConfig};
use crate::error::NatsError;
use crate::executor::{read_entry, to_bytes};
use crate::protocol::{RemoteStatus, ResultMessage, TaskEntry, TaskMessage};
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
/// Any number of workers may serve the same agent kind: they share one
/// durable consumer, so each delivery goes to one of them. A worker that
/// dies stops acking; after `ack_wait` JetStream delivers the task again,
/// to another worker. While a task runs, the worker sends progress acks so
/// a long task is not redelivered, and watches the task's entry so a
/// cancellation reaches it.
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

impl NatsWorker {
    /// A worker for `agents` (each served under its own name).
    pub fn new(config: NatsConfig, agents: impl IntoIterator<Item = Agent>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "worker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            config,
            id,
            agents: agents.into_iter().collect(),
            stats: Arc::default(),
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
        for agent in &self.agents {
            token(agent.name().as_str())?;
        }
        let handles = setup::connect(&self.config).await?;
        let slots = Arc::new(Semaphore::new(self.config.worker_concurrency.max(1)));
        actix::spawn(self.clone().heartbeat(handles.clone()));
        let mut loops = Vec::new();
        for agent in self.agents.clone() {
            let name = format!("workers-{}", agent.name());
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
            ));
        }
        for result in futures::future::join_all(loops).await {
            result?;
        }
        Ok(())
    }

    /// Takes as many tasks as there are free slots, never more, so no task
    /// waits in a local buffer while its ack clock runs.
    async fn pull_loop(
        self,
        handles: Handles,
        consumer: jetstream::consumer::Consumer<pull::Config>,
        agent: Agent,
        slots: Arc<Semaphore>,
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
                actix::spawn(async move {
                    worker.stats.running.fetch_add(1, Ordering::Relaxed);
                    if let Err(error) = worker.handle(&handles, agent, message).await {
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
        let running = TaskEntry {
            status: RemoteStatus::Running,
            attempt: task.attempt,
            worker: Some(self.id.clone()),
            delivery,
            outcome: None,
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
        let convo = Orchestrator::builder(agent).worker_threads(0).spawn();
        let run = run_conversation(&convo, task.prompt.clone());
        tokio::pin!(run);
        let mut progress =
            tokio::time::interval((self.config.ack_wait / 3).max(Duration::from_millis(100)));
        progress.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break Some(outcome),
                _ = progress.tick() => {
                    if cancel_requested().await {
                        break None;
                    }
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                Some(_) = cancels.next() => {
                    if cancel_requested().await {
                        break None;
                    }
                }
            }
        };
        drop(cancels);
        let _ = convo.shutdown().await;
        let Some(outcome) = outcome else {
            let _ = message.ack().await;
            return Ok(());
        };

        if !outcome.is_success() && (delivery as i64) < self.config.max_deliver {
            // Give it back for another delivery.
            let again = TaskEntry::pending(task.attempt);
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
        let publish = PublishMessage::build()
            .payload(to_bytes(&result)?)
            .message_id(format!("{key}.{}.result", task.attempt));
        handles
            .js
            .send_publish(self.config.result_subject(&task.conversation)?, publish)
            .await
            .map_err(|e| NatsError::js("publishing a result", e))?
            .await
            .map_err(|e| NatsError::js("publishing a result", e))?;
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
    /// heartbeats.
    pub async fn list(config: &NatsConfig) -> Result<Vec<WorkerInfo>, NatsError> {
        let handles = setup::connect(config).await?;
        let mut keys = handles
            .worker_kv
            .keys()
            .await
            .map_err(|e| NatsError::js("listing workers", e))?;
        let mut workers = Vec::new();
        while let Some(key) = keys.next().await {
            let Ok(key) = key else { continue };
            if let Ok(Some(value)) = handles.worker_kv.get(&key).await {
                if let Ok(info) = serde_json::from_slice::<WorkerInfo>(&value) {
                    workers.push(info);
                }
            }
        }
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
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

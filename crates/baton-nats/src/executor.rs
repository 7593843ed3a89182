//! [`NatsExecutor`]: the orchestrator's side of remote workers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::Recipient;
use async_nats::jetstream::{
    self, consumer::pull, kv, message::PublishMessage, stream::RawMessageErrorKind, AckKind,
};
use baton_core::{TaskId, TaskOutcome};
use baton_runtime::messages::TaskFinished;
use baton_runtime::{RemoteExecutor, RemoteTask};
use dashmap::DashMap;
use futures::StreamExt;

use crate::config::{token, NatsConfig};
use crate::error::NatsError;
use crate::protocol::{
    trace_headers, MaxDeliveriesAdvisory, RemoteStatus, ResultMessage, TaskEntry, TaskMessage,
};
use crate::setup::{self, Handles};

/// One dispatched attempt waiting for its result.
struct Waiter {
    /// The attempt the delegating agent waits for.
    attempt: u32,
    /// The attempt whose result answers it: the same, or an earlier one
    /// that a restarted orchestrator adopted because it still runs (or
    /// already succeeded) on a worker.
    remote_attempt: u32,
    /// Where to report.
    report: Recipient<TaskFinished>,
}

struct Inner {
    config: NatsConfig,
    conversation: String,
    handles: Handles,
    /// The runtime this executor was connected in; dispatch and cancel may
    /// be called from outside it (an actor stopping as its system ends).
    runtime: tokio::runtime::Handle,
    /// Attempts waiting for a result, and where to report it.
    waiting: DashMap<TaskId, Waiter>,
    /// The last attempt of each task whose result was reported in this
    /// process: an ended attempt not in here ended while this orchestrator
    /// was down, and a resumed dispatch adopts its outcome.
    reported: DashMap<TaskId, u32>,
    /// Results that arrived before anyone waited for them (after a restart).
    early: DashMap<TaskId, ResultMessage>,
}

/// Sends a conversation's delegated tasks to NATS workers and brings their
/// results back as `TaskFinished` messages.
///
/// Give it to the sub-agents that should run remotely with
/// `Agent::builder(name).remote(Arc::new(executor))`. One executor serves
/// one conversation (`conversation` names its results subject and its
/// durable results consumer, so a restarted orchestrator with the same
/// conversation id drains the results it missed).
///
/// Every executor also takes its share of JetStream's MAX_DELIVERIES
/// advisories (kept in the `dead_stream`): a task whose every delivery
/// ended without a report (its worker crashed each time) is marked `Done`
/// with a `Failed` outcome saying so, and that result is published to its
/// conversation like any other, so the delegating agent hears of it even
/// when no worker survives to tell.
#[derive(Clone)]
pub struct NatsExecutor {
    inner: Arc<Inner>,
    _loops: Arc<AbortOnDrop>,
}

/// Stops the executor's background loops when the last clone is dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

impl std::fmt::Debug for NatsExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsExecutor")
            .field("conversation", &self.inner.conversation)
            .finish_non_exhaustive()
    }
}

/// The durable consumer of the dead-letter stream, shared by every
/// executor of a deployment.
const DEAD_LETTER_CONSUMER: &str = "dead-letters";

impl NatsExecutor {
    /// Connects, makes sure the streams and buckets exist, and starts
    /// draining this conversation's results (and the deployment's
    /// dead-letter advisories). Call it inside a tokio runtime.
    pub async fn connect(
        config: NatsConfig,
        conversation: impl Into<String>,
    ) -> Result<Self, NatsError> {
        let conversation = conversation.into();
        token(&conversation)?;
        let handles = setup::connect(&config).await?;
        let subject = config.result_subject(&conversation)?;
        let consumer = handles
            .results
            .get_or_create_consumer(
                &format!("results-{conversation}"),
                pull::Config {
                    durable_name: Some(format!("results-{conversation}")),
                    filter_subject: subject,
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| NatsError::js("creating the results consumer", e))?;
        let mut results = consumer
            .messages()
            .await
            .map_err(|e| NatsError::js("reading results", e))?;
        let dead = handles
            .dead
            .get_or_create_consumer(
                DEAD_LETTER_CONSUMER,
                pull::Config {
                    durable_name: Some(DEAD_LETTER_CONSUMER.to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| NatsError::js("creating the dead-letter consumer", e))?;
        let mut advisories = dead
            .messages()
            .await
            .map_err(|e| NatsError::js("reading dead-letter advisories", e))?;
        let inner = Arc::new(Inner {
            config,
            conversation,
            handles,
            runtime: tokio::runtime::Handle::current(),
            waiting: DashMap::new(),
            reported: DashMap::new(),
            early: DashMap::new(),
        });
        let mut loops = Vec::new();
        let weak = Arc::downgrade(&inner);
        loops.push(
            tokio::spawn(async move {
                while let Some(message) = results.next().await {
                    let Some(inner) = weak.upgrade() else { break };
                    let message = match message {
                        Ok(m) => m,
                        Err(error) => {
                            tracing::warn!(%error, "results stream error");
                            continue;
                        }
                    };
                    match serde_json::from_slice::<ResultMessage>(&message.payload) {
                        Ok(result) => inner.deliver(result),
                        Err(error) => tracing::warn!(%error, "ignored a malformed result"),
                    }
                    if let Err(error) = message.ack().await {
                        tracing::warn!(%error, "could not ack a result");
                    }
                }
            })
            .abort_handle(),
        );
        let weak = Arc::downgrade(&inner);
        loops.push(
            tokio::spawn(async move {
                while let Some(message) = advisories.next().await {
                    let Some(inner) = weak.upgrade() else { break };
                    let message = match message {
                        Ok(m) => m,
                        Err(error) => {
                            tracing::warn!(%error, "dead-letter stream error");
                            continue;
                        }
                    };
                    let advisory =
                        match serde_json::from_slice::<MaxDeliveriesAdvisory>(&message.payload) {
                            Ok(a) => a,
                            Err(error) => {
                                tracing::warn!(%error, "ignored a malformed advisory");
                                let _ = message.ack_with(AckKind::Term).await;
                                continue;
                            }
                        };
                    match inner.bury(&advisory).await {
                        Ok(()) => {
                            if let Err(error) = message.ack().await {
                                tracing::warn!(%error, "could not ack an advisory");
                            }
                        }
                        Err(error) => {
                            // Left unacked: delivered again after the ack wait.
                            tracing::warn!(%error, seq = advisory.stream_seq, "could not fail a dead task");
                        }
                    }
                }
            })
            .abort_handle(),
        );
        let entries = inner
            .handles
            .task_kv
            .watch_with_history(format!("{}.>", inner.conversation))
            .await
            .map_err(|e| NatsError::js("watching task entries", e))?;
        loops.push(
            tokio::spawn(watch_last_deliveries(Arc::downgrade(&inner), entries)).abort_handle(),
        );
        Ok(Self {
            inner,
            _loops: Arc::new(AbortOnDrop(loops)),
        })
    }

    /// The conversation this executor serves.
    pub fn conversation(&self) -> &str {
        &self.inner.conversation
    }

    /// A task's state in the task bucket, if it has one.
    pub async fn task_entry(&self, task: TaskId) -> Result<Option<TaskEntry>, NatsError> {
        let key = self.inner.config.task_key(&self.inner.conversation, task)?;
        read_entry(&self.inner.handles.task_kv, &key)
            .await
            .map(|e| e.map(|(entry, _)| entry))
    }
}

impl Inner {
    /// Hands a result to whoever waits for its attempt; keeps it if no one
    /// waits for it yet (after a restart, or before an adoption).
    fn deliver(&self, result: ResultMessage) {
        let id = result.task_id;
        match self.waiting.entry(id) {
            dashmap::Entry::Occupied(waiter) if waiter.get().remote_attempt == result.attempt => {
                let waiter = waiter.remove();
                self.early.remove(&id);
                self.reported.insert(id, result.attempt);
                waiter.report.do_send(TaskFinished {
                    task_id: id,
                    attempt: waiter.attempt,
                    outcome: result.outcome,
                });
            }
            // Kept while the entry is held, so an adoption cannot miss it.
            _ => {
                self.early.insert(id, result);
            }
        }
    }

    /// Lets `attempt` of a task be answered by the result of
    /// `remote_attempt`, an earlier attempt that still runs on a worker
    /// (or already succeeded there): a restarted orchestrator picks up the
    /// work in flight rather than running it again.
    fn adopt(&self, task: TaskId, attempt: u32, remote_attempt: u32) {
        let arrived = {
            let Some(mut waiter) = self.waiting.get_mut(&task) else {
                return;
            };
            if waiter.attempt != attempt {
                return;
            }
            waiter.remote_attempt = remote_attempt;
            self.early
                .remove_if(&task, |_, r| r.attempt == remote_attempt)
                .map(|(_, r)| r)
        };
        if let Some(result) = arrived {
            self.deliver(result);
        }
    }

    /// Reports that an attempt could not be handed to NATS.
    fn fail(&self, task: &RemoteTask, error: NatsError) {
        let Some((_, waiter)) = self
            .waiting
            .remove_if(&task.task_id, |_, w| w.attempt == task.attempt)
        else {
            return;
        };
        waiter.report.do_send(TaskFinished {
            task_id: task.task_id,
            attempt: task.attempt,
            outcome: TaskOutcome::Failed {
                error: format!("could not hand the task to NATS: {error}"),
            },
        });
    }

    /// Publishes the attempt unless the task bucket shows it already ran or
    /// runs (a restarted orchestrator dispatching again).
    async fn publish(&self, task: &RemoteTask) -> Result<(), NatsError> {
        let key = self.config.task_key(&self.conversation, task.task_id)?;
        let kv = &self.handles.task_kv;
        let fresh = to_bytes(&TaskEntry::pending(task.attempt))?;
        if kv.create(&key, fresh.clone()).await.is_err() {
            match read_entry(kv, &key).await? {
                Some((entry, _)) if entry.attempt >= task.attempt => {
                    if let (RemoteStatus::Done, Some(outcome)) = (entry.status, entry.outcome) {
                        self.deliver(ResultMessage {
                            conversation: self.conversation.clone(),
                            task_id: task.task_id,
                            attempt: task.attempt,
                            outcome,
                            worker: entry.worker.unwrap_or_default(),
                        });
                    }
                    return Ok(());
                }
                // An earlier attempt is still queued or running, and no one
                // asked it to stop: this orchestrator restarted. Wait for it.
                Some((entry, _))
                    if matches!(entry.status, RemoteStatus::Pending | RemoteStatus::Running) =>
                {
                    self.adopt(task.task_id, task.attempt, entry.attempt);
                    return Ok(());
                }
                // An earlier attempt ended while this orchestrator was down
                // (it never reported it): take that outcome rather than run
                // the task again; supervision decides on a retry.
                Some((entry, _))
                    if entry.status == RemoteStatus::Done
                        && self
                            .reported
                            .get(&task.task_id)
                            .is_none_or(|r| *r < entry.attempt) =>
                {
                    self.adopt(task.task_id, task.attempt, entry.attempt);
                    if let Some(outcome) = entry.outcome {
                        self.deliver(ResultMessage {
                            conversation: self.conversation.clone(),
                            task_id: task.task_id,
                            attempt: entry.attempt,
                            outcome,
                            worker: entry.worker.unwrap_or_default(),
                        });
                    }
                    return Ok(());
                }
                // A retry after a failure, a timeout or a cancellation.
                Some((_, revision)) => {
                    kv.update(&key, fresh, revision)
                        .await
                        .map_err(|e| NatsError::js("recording a new attempt", e))?;
                }
                None => {
                    kv.put(&key, fresh)
                        .await
                        .map_err(|e| NatsError::js("recording a task", e))?;
                }
            }
        }
        let message = TaskMessage {
            conversation: self.conversation.clone(),
            task_id: task.task_id,
            attempt: task.attempt,
            agent: task.agent.clone(),
            prompt: task.prompt.clone(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{key}.{}", task.attempt),
        );
        if let Some(trace) = &task.trace {
            trace_headers(trace, &mut headers);
        }
        let publish = PublishMessage::build()
            .payload(to_bytes(&message)?)
            .headers(headers);
        self.handles
            .js
            .send_publish(self.config.task_subject(&task.agent)?, publish)
            .await
            .map_err(|e| NatsError::js("publishing a task", e))?
            .await
            .map_err(|e| NatsError::js("publishing a task", e))?;
        Ok(())
    }

    /// Turns a MAX_DELIVERIES advisory into the task's end: marks its entry
    /// `Done` with a `Failed` outcome (compare-and-set, so a result that
    /// made it after all wins), publishes that result to the task's
    /// conversation, and removes the task from the work queue. Whichever
    /// executor of the deployment takes the advisory does this, for any
    /// conversation.
    async fn bury(&self, advisory: &MaxDeliveriesAdvisory) -> Result<(), NatsError> {
        if advisory.stream != self.config.tasks_stream {
            return Ok(());
        }
        let tasks = &self.handles.tasks;
        let stored = match tasks.get_raw_message(advisory.stream_seq).await {
            Ok(m) => m,
            // Acked at the last moment, or buried by another executor.
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
            Err(e) => {
                return Err(NatsError::js(
                    "reading a task that ran out of deliveries",
                    e,
                ))
            }
        };
        if let Ok(task) = serde_json::from_slice::<TaskMessage>(&stored.payload) {
            self.fail_for_good(
                &task.conversation,
                task.task_id,
                task.attempt,
                advisory.deliveries,
            )
            .await?;
        }
        tasks
            .delete_message(advisory.stream_seq)
            .await
            .map_err(|e| NatsError::js("removing a task that ran out of deliveries", e))?;
        Ok(())
    }

    /// Ends `attempt` of a task as `Failed` because it ran out of
    /// deliveries: a compare-and-set to `Done` (nothing happens if it ended
    /// or moved on meanwhile), then its result, published to `conversation`.
    async fn fail_for_good(
        &self,
        conversation: &str,
        task_id: TaskId,
        attempt: u32,
        deliveries: u64,
    ) -> Result<(), NatsError> {
        let key = self.config.task_key(conversation, task_id)?;
        let kv = &self.handles.task_kv;
        for _ in 0..10 {
            let current = read_entry(kv, &key).await?;
            if let Some((entry, _)) = &current {
                let ended = matches!(
                    entry.status,
                    RemoteStatus::Done | RemoteStatus::CancelRequested
                );
                if ended || entry.attempt > attempt {
                    return Ok(());
                }
            }
            let (worker, last_error) = current
                .as_ref()
                .map(|(e, _)| (e.worker.clone(), e.last_error.clone()))
                .unwrap_or_default();
            let outcome = TaskOutcome::Failed {
                error: dead_reason(deliveries, worker.as_deref(), last_error.as_deref()),
            };
            let done = TaskEntry {
                status: RemoteStatus::Done,
                attempt,
                worker: worker.clone(),
                delivery: deliveries,
                outcome: Some(outcome.clone()),
                last_error,
            };
            let written = match current {
                Some((_, revision)) => kv.update(&key, to_bytes(&done)?, revision).await.is_ok(),
                None => kv.create(&key, to_bytes(&done)?).await.is_ok(),
            };
            if !written {
                continue;
            }
            let result = ResultMessage {
                conversation: conversation.to_owned(),
                task_id,
                attempt,
                outcome,
                worker: worker.unwrap_or_default(),
            };
            publish_result(&self.handles, &self.config, &key, &result).await?;
            return Ok(());
        }
        Err(NatsError::js(
            "failing a task that ran out of deliveries",
            "the entry kept changing",
        ))
    }

    /// The ids of the workers registered now.
    async fn live_workers(&self) -> Result<HashSet<String>, NatsError> {
        let mut keys = self
            .handles
            .worker_kv
            .keys()
            .await
            .map_err(|e| NatsError::js("listing workers", e))?;
        let mut live = HashSet::new();
        while let Some(key) = keys.next().await {
            live.insert(key.map_err(|e| NatsError::js("listing workers", e))?);
        }
        Ok(live)
    }

    /// Marks a task cancel-requested; its worker watches the entry and stops.
    async fn request_cancel(&self, task: TaskId) -> Result<(), NatsError> {
        let key = self.config.task_key(&self.conversation, task)?;
        let kv = &self.handles.task_kv;
        for _ in 0..10 {
            let Some((mut entry, revision)) = read_entry(kv, &key).await? else {
                return Ok(());
            };
            if entry.status == RemoteStatus::Done {
                return Ok(());
            }
            entry.status = RemoteStatus::CancelRequested;
            if kv.update(&key, to_bytes(&entry)?, revision).await.is_ok() {
                let subject = self.config.cancel_subject(&self.conversation, task)?;
                // A nudge only: a worker that misses it sees the entry at
                // its next progress tick.
                let _ = self
                    .handles
                    .client
                    .publish(subject, bytes::Bytes::new())
                    .await;
                return Ok(());
            }
        }
        Err(NatsError::js(
            "cancelling a task",
            "the entry kept changing",
        ))
    }
}

impl RemoteExecutor for NatsExecutor {
    fn dispatch(&self, task: RemoteTask, report: Recipient<TaskFinished>) {
        let inner = Arc::clone(&self.inner);
        inner.waiting.insert(
            task.task_id,
            Waiter {
                attempt: task.attempt,
                remote_attempt: task.attempt,
                report,
            },
        );
        if let Some((_, early)) = inner.early.remove(&task.task_id) {
            inner.deliver(early);
        }
        let runtime = inner.runtime.clone();
        runtime.spawn(async move {
            if let Err(error) = inner.publish(&task).await {
                tracing::warn!(%error, task_id = %task.task_id, "dispatch failed");
                inner.fail(&task, error);
            }
        });
    }

    fn cancel(&self, task_id: TaskId) {
        let inner = Arc::clone(&self.inner);
        inner.waiting.remove(&task_id);
        let runtime = inner.runtime.clone();
        runtime.spawn(async move {
            if let Err(error) = inner.request_cancel(task_id).await {
                tracing::warn!(%error, %task_id, "cancel failed");
            }
        });
    }
}

/// A task of this conversation running its last delivery.
struct LastDelivery {
    entry: TaskEntry,
    /// Consecutive checks that found its worker unregistered.
    missed: u32,
}

/// Watches this conversation's task entries for tasks on their last
/// delivery, and fails those whose worker stopped heartbeating (two checks
/// in a row, a heartbeat apart). JetStream announces a task that ran out of
/// deliveries only when some worker pulls again; this covers a deployment
/// where no worker survives.
async fn watch_last_deliveries(inner: std::sync::Weak<Inner>, mut entries: kv::Watch) {
    let (period, max_deliver) = match inner.upgrade() {
        Some(i) => (i.config.heartbeat, i.config.max_deliver),
        None => return,
    };
    let mut last: HashMap<TaskId, LastDelivery> = HashMap::new();
    let mut tick = tokio::time::interval(period.max(std::time::Duration::from_millis(10)));
    loop {
        tokio::select! {
            entry = entries.next() => {
                let entry = match entry {
                    None => break,
                    Some(Ok(e)) => e,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "task entry watch error");
                        continue;
                    }
                };
                let Some(id) = entry.key.rsplit('.').next().and_then(|k| k.parse::<TaskId>().ok()) else {
                    continue;
                };
                let parsed = (entry.operation == kv::Operation::Put)
                    .then(|| serde_json::from_slice::<TaskEntry>(&entry.value).ok())
                    .flatten();
                match parsed {
                    Some(e) if e.status == RemoteStatus::Running
                        && i64::try_from(e.delivery).unwrap_or(i64::MAX) >= max_deliver =>
                    {
                        last.insert(id, LastDelivery { entry: e, missed: 0 });
                    }
                    _ => {
                        last.remove(&id);
                    }
                }
            }
            _ = tick.tick() => {
                if last.is_empty() {
                    continue;
                }
                let Some(inner) = inner.upgrade() else { break };
                let live = match inner.live_workers().await {
                    Ok(live) => live,
                    Err(error) => {
                        tracing::warn!(%error, "could not read the worker bucket");
                        continue;
                    }
                };
                let mut dead = Vec::new();
                for (id, task) in &mut last {
                    let alive = task.entry.worker.as_ref().is_some_and(|w| live.contains(w));
                    task.missed = if alive { 0 } else { task.missed + 1 };
                    if task.missed >= 2 {
                        dead.push((*id, task.entry.attempt, task.entry.delivery));
                    }
                }
                for (id, attempt, delivery) in dead {
                    // On success the entry turns Done and the watch drops it.
                    if let Err(error) = inner.fail_for_good(&inner.conversation, id, attempt, delivery).await {
                        tracing::warn!(%error, task_id = %id, "could not fail a task whose worker died");
                    }
                }
            }
        }
    }
}

/// Why a task that ran out of deliveries failed.
fn dead_reason(deliveries: u64, worker: Option<&str>, last_error: Option<&str>) -> String {
    let on = worker.map(|w| format!(" (on {w})")).unwrap_or_default();
    let mut reason = format!(
        "no worker finished the task in {deliveries} deliveries: the last one{on} ended \
         without a report (the worker crashed, was killed or lost its connection)"
    );
    if let Some(error) = last_error {
        reason.push_str("; an earlier delivery failed with: ");
        reason.push_str(error);
    }
    reason
}

/// Publishes a task's result with its de-duplication id
/// `<conversation>.<task>.<attempt>.result`, and waits for JetStream to
/// store it.
pub(crate) async fn publish_result(
    handles: &Handles,
    config: &NatsConfig,
    key: &str,
    result: &ResultMessage,
) -> Result<(), NatsError> {
    let publish = PublishMessage::build()
        .payload(to_bytes(result)?)
        .message_id(format!("{key}.{}.result", result.attempt));
    handles
        .js
        .send_publish(config.result_subject(&result.conversation)?, publish)
        .await
        .map_err(|e| NatsError::js("publishing a result", e))?
        .await
        .map_err(|e| NatsError::js("publishing a result", e))?;
    Ok(())
}

/// A task's entry and its revision.
pub(crate) async fn read_entry(
    kv: &kv::Store,
    key: &str,
) -> Result<Option<(TaskEntry, u64)>, NatsError> {
    let Some(entry) = kv
        .entry(key)
        .await
        .map_err(|e| NatsError::js("reading a task entry", e))?
    else {
        return Ok(None);
    };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let parsed = serde_json::from_slice(&entry.value).map_err(|e| NatsError::Malformed {
        what: "task entry",
        message: e.to_string(),
    })?;
    Ok(Some((parsed, entry.revision)))
}

pub(crate) fn to_bytes<T: serde::Serialize>(value: &T) -> Result<bytes::Bytes, NatsError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| NatsError::Malformed {
            what: "outgoing message",
            message: e.to_string(),
        })
}

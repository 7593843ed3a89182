//! [`NatsExecutor`]: the orchestrator's side of remote workers.

use std::sync::Arc;

use actix::Recipient;
use async_nats::jetstream::{self, consumer::pull, kv, message::PublishMessage};
use baton_core::{TaskId, TaskOutcome};
use baton_runtime::messages::TaskFinished;
use baton_runtime::{RemoteExecutor, RemoteTask};
use dashmap::DashMap;
use futures::StreamExt;

use crate::config::{token, NatsConfig};
use crate::error::NatsError;
use crate::protocol::{RemoteStatus, ResultMessage, TaskEntry, TaskMessage};
use crate::setup::{self, Handles};

struct Inner {
    config: NatsConfig,
    conversation: String,
    handles: Handles,
    /// Attempts waiting for a result, and where to report it.
    waiting: DashMap<TaskId, (u32, Recipient<TaskFinished>)>,
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
#[derive(Clone)]
pub struct NatsExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsExecutor")
            .field("conversation", &self.inner.conversation)
            .finish_non_exhaustive()
    }
}

impl NatsExecutor {
    /// Connects, makes sure the streams and buckets exist, and starts
    /// draining this conversation's results. Call it inside a tokio runtime.
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
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| NatsError::js("reading results", e))?;
        let inner = Arc::new(Inner {
            config,
            conversation,
            handles,
            waiting: DashMap::new(),
            early: DashMap::new(),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
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
        });
        Ok(Self { inner })
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
    /// waits yet; drops a result for an attempt that is no longer current.
    fn deliver(&self, result: ResultMessage) {
        let current = self
            .waiting
            .get(&result.task_id)
            .map(|w| w.0 == result.attempt);
        match current {
            Some(true) => {
                if let Some((_, (attempt, report))) = self.waiting.remove(&result.task_id) {
                    report.do_send(TaskFinished {
                        task_id: result.task_id,
                        attempt,
                        outcome: result.outcome,
                    });
                }
            }
            Some(false) => tracing::debug!(task_id = %result.task_id, "dropped a stale result"),
            None => {
                self.early.insert(result.task_id, result);
            }
        }
    }

    fn fail(&self, task: &RemoteTask, error: NatsError) {
        self.deliver(ResultMessage {
            conversation: self.conversation.clone(),
            task_id: task.task_id,
            attempt: task.attempt,
            outcome: TaskOutcome::Failed {
                error: format!("could not hand the task to NATS: {error}"),
            },
            worker: String::new(),
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
                Some((entry, _))
                    if entry.status == RemoteStatus::Done && entry.attempt >= task.attempt =>
                {
                    if let Some(outcome) = entry.outcome {
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
                Some((entry, _)) if entry.attempt >= task.attempt => return Ok(()),
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
        let publish = PublishMessage::build()
            .payload(to_bytes(&message)?)
            .message_id(format!("{key}.{}", task.attempt));
        self.handles
            .js
            .send_publish(self.config.task_subject(&task.agent)?, publish)
            .await
            .map_err(|e| NatsError::js("publishing a task", e))?
            .await
            .map_err(|e| NatsError::js("publishing a task", e))?;
        Ok(())
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
        inner.waiting.insert(task.task_id, (task.attempt, report));
        if let Some((_, early)) = inner.early.remove(&task.task_id) {
            inner.deliver(early);
        }
        tokio::spawn(async move {
            if let Err(error) = inner.publish(&task).await {
                tracing::warn!(%error, task_id = %task.task_id, "dispatch failed");
                inner.fail(&task, error);
            }
        });
    }

    fn cancel(&self, task_id: TaskId) {
        let inner = Arc::clone(&self.inner);
        inner.waiting.remove(&task_id);
        tokio::spawn(async move {
            if let Err(error) = inner.request_cancel(task_id).await {
                tracing::warn!(%error, %task_id, "cancel failed");
            }
        });
    }
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

//! [`TaskBoard`]: the task bucket read from any machine, so the state of a
//! conversation's remote tasks (the `check_task` / `check_all_tasks` view)
//! is available outside the orchestrator that owns them.

use async_nats::jetstream::{self, kv};
use baton_core::TaskId;
use futures::TryStreamExt;

use crate::config::{token, NatsConfig};
use crate::error::NatsError;
use crate::executor::read_entry;
use crate::protocol::TaskEntry;

/// Reads task entries from the task bucket. Read-only: it creates nothing.
///
/// ```rust,ignore
/// let board = TaskBoard::connect(&NatsConfig::new("nats://127.0.0.1:4222")).await?;
/// for (task, entry) in board.entries("research-42").await? {
///     println!("{task}: {:?} on {:?}, delivery {}", entry.status, entry.worker, entry.delivery);
/// }
/// ```
#[derive(Clone)]
pub struct TaskBoard {
    config: NatsConfig,
    kv: kv::Store,
}

impl std::fmt::Debug for TaskBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBoard")
            .field("bucket", &self.config.task_bucket)
            .finish_non_exhaustive()
    }
}

impl TaskBoard {
    /// Connects to `config.url` and binds to the task bucket, which some
    /// orchestrator or worker must have created.
    pub async fn connect(config: &NatsConfig) -> Result<Self, NatsError> {
        let client = crate::setup::client(config).await?;
        let kv = jetstream::new(client)
            .get_key_value(&config.task_bucket)
            .await
            .map_err(|e| NatsError::js("binding to the task bucket", e))?;
        Ok(Self {
            config: config.clone(),
            kv,
        })
    }

    /// One task's entry, if it has one.
    pub async fn entry(
        &self,
        conversation: &str,
        task: TaskId,
    ) -> Result<Option<TaskEntry>, NatsError> {
        let key = self.config.task_key(conversation, task)?;
        Ok(read_entry(&self.kv, &key).await?.map(|(entry, _)| entry))
    }

    /// Every task of `conversation` that went to NATS, by task id.
    pub async fn entries(&self, conversation: &str) -> Result<Vec<(TaskId, TaskEntry)>, NatsError> {
        let filter = format!("{}{}.*", self.kv.prefix, token(conversation)?);
        let mut subjects = self
            .kv
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| NatsError::js("listing task entries", e))?;
        let mut ids = Vec::new();
        while let Some((subject, _)) = subjects
            .try_next()
            .await
            .map_err(|e| NatsError::js("listing task entries", e))?
        {
            if let Some(id) = subject
                .rsplit('.')
                .next()
                .and_then(|k| k.parse::<TaskId>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(entry) = self.entry(conversation, id).await? {
                entries.push((id, entry));
            }
        }
        Ok(entries)
    }
}

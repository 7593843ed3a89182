//! Creates, or binds to, the streams and buckets of a deployment.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::config::NatsConfig;
use crate::error::NatsError;

/// The JetStream handles everything else works through.
#[derive(Clone)]
pub struct Handles {
    /// The plain client.
    pub client: async_nats::Client,
    /// The JetStream context.
    pub js: jetstream::Context,
    /// The work-queue stream of tasks.
    pub tasks: stream::Stream,
    /// The stream of results.
    pub results: stream::Stream,
    /// The MAX_DELIVERIES advisories of the tasks stream.
    pub dead: stream::Stream,
    /// Task states.
    pub task_kv: kv::Store,
    /// Live workers.
    pub worker_kv: kv::Store,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles").finish_non_exhaustive()
    }
}

/// A plain client connection to `config.url`.
pub(crate) async fn client(config: &NatsConfig) -> Result<async_nats::Client, NatsError> {
    async_nats::connect(&config.url)
        .await
        .map_err(|e| NatsError::Connect {
            url: config.url.clone(),
            message: e.to_string(),
        })
}

/// Connects to `config.url` and makes sure the streams and buckets exist.
/// Safe to call from every process of a deployment: existing streams and
/// buckets are bound to, not replaced.
pub async fn connect(config: &NatsConfig) -> Result<Handles, NatsError> {
    let client = client(config).await?;
    let js = jetstream::new(client.clone());
    let tasks = js
        .get_or_create_stream(stream::Config {
            name: config.tasks_stream.clone(),
            subjects: vec![format!("{}.tasks.>", config.prefix)],
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsError::js("creating the tasks stream", e))?;
    let results = js
        .get_or_create_stream(stream::Config {
            name: config.results_stream.clone(),
            subjects: vec![format!("{}.results.>", config.prefix)],
            retention: stream::RetentionPolicy::Limits,
            max_age: config.results_max_age,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsError::js("creating the results stream", e))?;
    // JetStream announces a task that used up its deliveries on a core-NATS
    // subject; this stream keeps those announcements until an orchestrator
    // turns each into the task's Failed outcome.
    let dead = js
        .get_or_create_stream(stream::Config {
            name: config.dead_stream.clone(),
            subjects: vec![config.max_deliveries_subject(None)?],
            retention: stream::RetentionPolicy::WorkQueue,
            max_age: config.results_max_age,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsError::js("creating the dead-letter stream", e))?;
    let task_kv = bucket(&js, &config.task_bucket, Duration::ZERO).await?;
    let worker_kv = bucket(&js, &config.worker_bucket, config.heartbeat * 3).await?;
    Ok(Handles {
        client,
        js,
        tasks,
        results,
        dead,
        task_kv,
        worker_kv,
    })
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
) -> Result<kv::Store, NatsError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: name.to_owned(),
            history: 1,
            max_age,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another process created it meanwhile: bind to theirs.
        Err(error) => js
            .get_key_value(name)
            .await
            .map_err(|_| NatsError::js("creating a KV bucket", error)),
    }
}

//! What the server holds: its conversations, their event logs, and the
//! threads they run on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::ArbiterHandle;
use baton_core::AgentName;
use baton_runtime::Conversation;
use dashmap::DashMap;

use crate::config::ServerConfig;
use crate::error::{ApiError, ErrorCode};
use crate::event_log::{pump, EventLog};
use crate::factory::ConversationFactory;
use crate::token::ApiToken;

/// A conversation the server holds.
pub(crate) struct Hosted {
    pub(crate) id: String,
    pub(crate) agent: AgentName,
    pub(crate) convo: Conversation,
    pub(crate) log: Arc<EventLog>,
}

pub(crate) struct AppState {
    pub(crate) token: ApiToken,
    pub(crate) config: ServerConfig,
    pub(crate) factory: ConversationFactory,
    /// By number (`conv-N`); a `DashMap` so requests never wait on each other.
    pub(crate) conversations: DashMap<u64, Arc<Hosted>>,
    next_id: AtomicU64,
    /// The thread conversation actors start on.
    home: ArbiterHandle,
    /// The thread event pumps run on.
    events: ArbiterHandle,
}

impl AppState {
    pub(crate) fn new(
        token: ApiToken,
        config: ServerConfig,
        factory: ConversationFactory,
        home: ArbiterHandle,
        events: ArbiterHandle,
    ) -> Self {
        Self {
            token,
            config,
            factory,
            conversations: DashMap::new(),
            next_id: AtomicU64::new(0),
            home,
            events,
        }
    }

    /// The conversation `id` (`conv-N`).
    pub(crate) fn get(&self, id: &str) -> Result<Arc<Hosted>, ApiError> {
        parse_conversation_id(id)
            .and_then(|n| self.conversations.get(&n).map(|h| h.clone()))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::ConversationNotFound,
                    format!("no conversation `{}`", truncate(id, 64)),
                )
            })
    }

    /// Starts a conversation with `agent` (the default agent for `None`).
    pub(crate) async fn create(&self, agent: Option<&str>) -> Result<Arc<Hosted>, ApiError> {
        let (name, build) = self.factory.get(agent).ok_or_else(|| {
            let known: Vec<String> = self.factory.names().iter().map(|n| n.to_string()).collect();
            ApiError::new(
                ErrorCode::UnknownAgent,
                format!(
                    "no agent `{}`; this server has: {}",
                    truncate(agent.unwrap_or_default(), 64),
                    known.join(", ")
                ),
            )
        })?;
        if self.conversations.len() >= self.config.max_conversations {
            return Err(ApiError::new(
                ErrorCode::TooManyConversations,
                format!(
                    "the server holds {} conversations, its limit; delete one first",
                    self.config.max_conversations
                ),
            ));
        }
        let log = EventLog::new(self.config.replay_events);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pump_log = log.clone();
        let events = self.events.clone();
        let spawned = self.home.spawn(async move {
            let convo = build().spawn();
            // Subscribed before the actor has run, so the log misses nothing.
            let rx_events = convo.subscribe();
            events.spawn(pump(rx_events, pump_log));
            let _ = tx.send(convo);
        });
        let convo = match (spawned, rx.await) {
            (true, Ok(convo)) => convo,
            _ => {
                return Err(ApiError::new(
                    ErrorCode::Internal,
                    "the conversation could not be started",
                ))
            }
        };
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let hosted = Arc::new(Hosted {
            id: format!("conv-{n}"),
            agent: name,
            convo,
            log,
        });
        self.conversations.insert(n, hosted.clone());
        tracing::info!(conversation = %hosted.id, agent = %hosted.agent, "conversation started");
        Ok(hosted)
    }

    /// Shuts conversation `id` down and forgets it; its event streams end.
    pub(crate) async fn remove(&self, id: &str) -> Result<(), ApiError> {
        let hosted = self.get(id)?;
        if let Some(n) = parse_conversation_id(id) {
            self.conversations.remove(&n);
        }
        // Already stopped is fine: the goal is that it is gone.
        let _ = hosted.convo.shutdown().await;
        hosted.log.close();
        tracing::info!(conversation = %hosted.id, "conversation deleted");
        Ok(())
    }

    /// Every conversation, oldest first.
    pub(crate) fn all(&self) -> Vec<Arc<Hosted>> {
        let mut all: Vec<(u64, Arc<Hosted>)> = self
            .conversations
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        all.sort_by_key(|(n, _)| *n);
        all.into_iter().map(|(_, h)| h).collect()
    }
}

fn parse_conversation_id(id: &str) -> Option<u64> {
    id.strip_prefix("conv-")?.parse().ok()
}

/// At most `max` characters of `s` (for echoing client input in errors).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

//! [`ServerConfig`]: where the server listens and what it accepts.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::token::ApiToken;

/// How `serve` runs. `ServerConfig::default()` listens on
/// `127.0.0.1:8080` with a generated token.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to listen on (default `127.0.0.1:8080`; port 0 picks a
    /// free port). Listening beyond loopback is the operator's choice.
    pub bind: SocketAddr,
    /// The bearer token; `None` generates one at start.
    pub token: Option<ApiToken>,
    /// The largest request body accepted, in bytes (default 64 KiB).
    pub max_body_bytes: usize,
    /// The longest user message accepted, in characters (default 16,000).
    pub max_message_chars: usize,
    /// How many events each conversation keeps for SSE clients that
    /// (re)connect with `Last-Event-ID` (default 10,000). Older events are
    /// dropped, and a client that asks for them is told so in the stream.
    pub replay_events: usize,
    /// How many conversations may exist at once (default 256).
    pub max_conversations: usize,
    /// HTTP worker threads (default 2).
    pub http_workers: usize,
    /// How often an idle SSE stream sends a keep-alive comment (default
    /// 15 s).
    pub sse_keep_alive: Duration,
    /// After sending a chunk, an SSE stream waits this long before it
    /// reads again, so a burst of events goes out as one write instead of
    /// one per event (default 20 ms). The first event after a quiet spell
    /// goes out at once.
    pub sse_batch_window: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            token: None,
            max_body_bytes: 64 * 1024,
            max_message_chars: 16_000,
            replay_events: 10_000,
            max_conversations: 256,
            http_workers: 2,
            sse_keep_alive: Duration::from_secs(15),
            sse_batch_window: Duration::from_millis(20),
        }
    }
}

impl ServerConfig {
    /// The defaults, listening on `127.0.0.1` at a free port (for tests and
    /// embedding).
    pub fn ephemeral() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..Self::default()
        }
    }
}

//! # baton-server
//!
//! baton as a service: an HTTP API (actix-web, on the actix system the
//! agents run on) to start conversations, talk to them, stream their events
//! as Server-Sent Events, and read and steer their delegation trees; plus a
//! single page at `/` that shows a conversation and its tree live.
//!
//! ```no_run
//! use baton_runtime::Agent;
//! use baton_llm::{ScriptedModel, ScriptedTurn};
//! use baton_server::{serve, ConversationFactory, ServerConfig};
//!
//! #[actix::main]
//! async fn main() -> anyhow::Result<()> {
//!     let model = ScriptedModel::from_fn(|_| ScriptedTurn::text("Hello!"));
//!     let factory = ConversationFactory::from_agents([Agent::builder("assistant").model(model).build()]);
//!     let server = serve(ServerConfig::default(), factory).await?;
//!     // The page URL carries the token in its fragment: show it to the user
//!     // only, never log it.
//!     println!("open {}", server.page_url());
//!     server.wait().await?;
//!     Ok(())
//! }
//! ```
//!
//! * [`serve`] binds (127.0.0.1 by default), starts the server and returns
//!   a [`ServerHandle`] with the bound address and the token.
//! * [`ConversationFactory`]: the agents a client may start conversations with.
//! * [`ServerConfig`]: address, token, body and message limits, replay buffer.
//! * [`dto`]: the JSON bodies; [`ApiDoc`] the OpenAPI document (also served
//!   at `/openapi.json`); errors are [`ErrorBody`] with a stable [`ErrorCode`].
//!
//! See `docs/api.md` for the routes and the event stream.

pub mod config;
pub mod dto;
pub mod error;
mod event_log;
pub mod factory;
mod page;
mod routes;
mod state;
pub mod token;

use std::net::SocketAddr;

use actix::Arbiter;
use actix_web::{web, App, HttpServer};

pub use config::ServerConfig;
pub use error::{ApiError, ErrorBody, ErrorCode, ServeError};
pub use event_log::DroppedEvents;
pub use factory::ConversationFactory;
pub use routes::ApiDoc;
pub use token::{ApiToken, TokenError};

use state::AppState;

/// A running server. Dropping it leaves the server running until the actix
/// system stops; [`ServerHandle::stop`] stops it.
pub struct ServerHandle {
    addr: SocketAddr,
    token: ApiToken,
    server: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    state: web::Data<AppState>,
    arbiters: Vec<Arbiter>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address the server listens on (with the real port when the
    /// configuration asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &ApiToken {
        &self.token
    }

    /// `http://ADDR`, the base of every route.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The page's URL with the token in its fragment (`/#token=…`): the
    /// browser never sends a fragment to the server, so the token stays
    /// out of request lines and logs. Show it to the user; never log it.
    pub fn page_url(&self) -> String {
        format!("{}/#token={}", self.base_url(), self.token.expose())
    }

    /// The running conversation `id` (`conv-N`), to drive or watch it
    /// in-process alongside the API.
    pub fn conversation(&self, id: &str) -> Option<baton_runtime::Conversation> {
        self.state.get(id).ok().map(|h| h.convo.clone())
    }

    /// Shuts every conversation down, ends the event streams and stops the
    /// server.
    pub async fn stop(self) -> std::io::Result<()> {
        for hosted in self.state.all() {
            let _ = hosted.convo.shutdown().await;
            hosted.log.close();
        }
        self.state.conversations.clear();
        self.server.stop(true).await;
        let result = self.task.await.unwrap_or(Ok(()));
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        result
    }

    /// Waits until the server stops (Ctrl-C or SIGTERM stop it).
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self.task.await.unwrap_or(Ok(()));
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        result
    }
}

/// Starts the server on `config.bind` with conversations from `factory`,
/// and returns once it listens. Must run inside an actix system
/// (`#[actix::main]`); conversations run on their own arbiter (thread).
/// Nothing secret is logged: the token is only in the returned handle.
pub async fn serve(
    config: ServerConfig,
    factory: ConversationFactory,
) -> Result<ServerHandle, ServeError> {
    if factory.is_empty() {
        return Err(ServeError::NoAgents);
    }
    if actix_rt::System::try_current().is_none() {
        return Err(ServeError::NoActixSystem);
    }
    let token = match config.token.clone() {
        Some(t) => t,
        None => ApiToken::generate()?,
    };
    let home = Arbiter::new();
    let events = Arbiter::new();
    let state = web::Data::new(AppState::new(
        token.clone(),
        config.clone(),
        factory,
        home.handle(),
        events.handle(),
    ));
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .configure(routes::configure)
    })
    .workers(config.http_workers.max(1))
    .shutdown_timeout(2)
    .bind(config.bind)
    .map_err(|source| ServeError::Bind {
        addr: config.bind,
        source,
    })?;
    let addr = server.addrs().first().copied().unwrap_or(config.bind);
    let server = server.run();
    let handle = server.handle();
    let task = actix_rt::spawn(server);
    tracing::info!(%addr, "baton server listening");
    Ok(ServerHandle {
        addr,
        token,
        server: handle,
        task,
        state,
        arbiters: vec![home, events],
    })
}

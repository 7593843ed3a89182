//! [`MockLlmServer`]: a real HTTP server on loopback that speaks the OpenAI
//! Chat Completions and Anthropic Messages APIs, JSON and SSE, replying
//! from a [`MockScript`], with latency and fault injection, and recording
//! every request.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use baton_testkit::mock_llm::{MockLlmServer, MockScript, MockTurn};
//! let script = MockScript::new().agent("weather", vec![MockTurn::text("Sunny.")]);
//! let server = MockLlmServer::start(script).await.expect("bound");
//! assert!(server.openai_base_url().starts_with("http://127.0.0.1:"));
//! # });
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What the mock replies, per agent, turn by turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MockScript {
    /// The agents, tried in order; the first whose marker matches wins.
    #[serde(default)]
    pub agents: Vec<MockAgent>,
    /// Latency before every reply.
    #[serde(default)]
    pub latency: Latency,
    /// Delay between two SSE chunks, in milliseconds.
    #[serde(default)]
    pub chunk_delay_ms: u64,
}

/// One agent's script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MockAgent {
    /// A marker: matched first against the system prompt, then against the
    /// text of every message in the request.
    #[serde(rename = "match")]
    pub marker: String,
    /// The replies in order; a fault uses up a turn, so `[fault, reply]`
    /// fails once and then recovers. After the last turn the last one
    /// repeats.
    pub turns: Vec<MockTurn>,
}

/// Reply latency: fixed, plus up to `jitter_ms` at random.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Always waited, in milliseconds.
    #[serde(default)]
    pub fixed_ms: u64,
    /// Up to this much more, at random, in milliseconds.
    #[serde(default)]
    pub jitter_ms: u64,
}

/// One scripted turn: a reply or a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MockTurn {
    /// An injected fault.
    Fault {
        /// Which fault.
        fault: Fault,
    },
    /// A normal reply: text, tool calls, or both.
    Reply {
        /// The reply text.
        #[serde(default)]
        text: Option<String>,
        /// The tool calls.
        #[serde(default)]
        tool_calls: Vec<MockToolCall>,
    },
}

impl MockTurn {
    /// A text reply.
    pub fn text(text: impl Into<String>) -> Self {
        MockTurn::Reply {
            text: Some(text.into()),
            tool_calls: Vec::new(),
        }
    }

    /// A reply calling one tool with JSON arguments.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        MockTurn::Reply {
            text: None,
            tool_calls: vec![MockToolCall::new(name, arguments)],
        }
    }

    /// A reply with several tool calls.
    pub fn tool_calls(calls: Vec<MockToolCall>) -> Self {
        MockTurn::Reply {
            text: None,
            tool_calls: calls,
        }
    }

    /// A fault.
    pub fn fault(fault: Fault) -> Self {
        MockTurn::Fault { fault }
    }
}

/// One scripted tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MockToolCall {
    /// The tool's name.
    pub name: String,
    /// The arguments (JSON).
    #[serde(default)]
    pub arguments: Value,
    /// If set, sent verbatim instead of `arguments` (e.g. invalid JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_arguments: Option<String>,
}

impl MockToolCall {
    /// A call with JSON arguments.
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        Self {
            name: name.into(),
            arguments,
            raw_arguments: None,
        }
    }

    /// A call whose argument text is sent as is (it may not parse).
    pub fn raw(name: impl Into<String>, raw: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            arguments: Value::Null,
            raw_arguments: Some(raw.into()),
        }
    }

    fn argument_text(&self) -> String {
        match &self.raw_arguments {
            Some(raw) => raw.clone(),
            None if self.arguments.is_null() => "{}".into(),
            None => self.arguments.to_string(),
        }
    }
}

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// HTTP 429 with `Retry-After` (whole seconds).
    RateLimited {
        /// The `Retry-After` value.
        #[serde(default)]
        retry_after_secs: u64,
    },
    /// HTTP 500.
    ServerError,
    /// A status the client must not retry (400, 401, …).
    Status {
        /// The status.
        status: u16,
    },
    /// Headers sent, then the connection is dropped.
    ConnectionReset,
    /// Never answers.
    Hang,
    /// HTTP 200 with a body that is not JSON.
    MalformedBody,
    /// For streamed requests, half the events and then the connection
    /// drops; for JSON requests, the same as [`Fault::ConnectionReset`].
    StreamCut,
}

/// Which API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Api {
    /// `POST …/chat/completions`.
    OpenAi,
    /// `POST …/messages`.
    Anthropic,
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The API it used.
    pub api: Api,
    /// The request path.
    pub path: String,
    /// The headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` if it did not parse).
    pub body: Value,
    /// The scripted agent it matched, if any.
    pub agent: Option<String>,
}

impl RecordedRequest {
    /// A header's value, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request asked for a stream.
    pub fn streamed(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }
}

impl MockScript {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an agent matched by `marker`.
    pub fn agent(mut self, marker: impl Into<String>, turns: Vec<MockTurn>) -> Self {
        self.agents.push(MockAgent {
            marker: marker.into(),
            turns,
        });
        self
    }

    /// Sets the latency.
    pub fn latency(mut self, fixed: Duration, jitter: Duration) -> Self {
        self.latency = Latency {
            fixed_ms: u64::try_from(fixed.as_millis()).unwrap_or(u64::MAX),
            jitter_ms: u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX),
        };
        self
    }

    /// Sets the delay between SSE chunks.
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Reads a JSON script file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, MockError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| MockError::Script(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&text)
    }

    /// Parses a script from JSON.
    pub fn from_json(text: &str) -> Result<Self, MockError> {
        serde_json::from_str(text).map_err(|e| MockError::Script(e.to_string()))
    }
}

/// Why the mock server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// The address could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The script is not valid.
    #[error("invalid mock script: {0}")]
    Script(String),
}

struct Shared {
    script: MockScript,
    turns: Mutex<HashMap<usize, usize>>,
    requests: Mutex<Vec<RecordedRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    next_id: AtomicUsize,
}

/// Counts a request in flight until dropped (even if the client hangs up).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The running server; it stops when dropped.
pub struct MockLlmServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for MockLlmServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockLlmServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MockLlmServer {
    /// Starts on `127.0.0.1` at a free port.
    pub async fn start(script: MockScript) -> Result<Self, MockError> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), script).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr, script: MockScript) -> Result<Self, MockError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MockError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MockError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            script,
            turns: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            next_id: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                eprintln!("mock-llm server stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL for OpenAI clients (`…/v1`).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The base URL for Anthropic clients (`…/v1`).
    pub fn anthropic_base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Requests being served right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests ever served at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for MockLlmServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn message_texts(api: Api, body: &Value) -> (Option<String>, Vec<String>) {
    let mut system = match api {
        Api::Anthropic => match body.get("system") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(blocks)) => Some(
                blocks
                    .iter()
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => None,
        },
        Api::OpenAi => None,
    };
    let mut texts = Vec::new();
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        if api == Api::OpenAi
            && system.is_none()
            && m.get("role").and_then(Value::as_str) == Some("system")
        {
            system = Some(text.clone());
        }
        texts.push(text);
    }
    (system, texts)
}

fn pick_agent(script: &MockScript, api: Api, body: &Value) -> Option<usize> {
    let (system, texts) = message_texts(api, body);
    if let Some(system) = &system {
        if let Some(i) = script
            .agents
            .iter()
            .position(|a| system.contains(&a.marker))
        {
            return Some(i);
        }
    }
    script
        .agents
        .iter()
        .position(|a| texts.iter().any(|t| t.contains(&a.marker)))
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let guard = InFlight::new(Arc::clone(&shared));
    let path = uri.path().to_string();
    let api = if path.ends_with("/chat/completions") {
        Api::OpenAi
    } else if path.ends_with("/messages") {
        Api::Anthropic
    } else {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("mock-llm: no API at {path}"),
        );
    };
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let agent = pick_agent(&shared.script, api, &json);
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(RecordedRequest {
            api,
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: json.clone(),
            agent: agent.map(|i| shared.script.agents[i].marker.clone()),
        });
    let latency = shared.script.latency;
    let wait = latency.fixed_ms
        + if latency.jitter_ms > 0 {
            fastrand::u64(0..=latency.jitter_ms)
        } else {
            0
        };
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let Some(agent) = agent else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "mock-llm: no scripted agent matches this request",
        );
    };
    let turn = {
        let mut turns = shared.turns.lock().unwrap_or_else(PoisonError::into_inner);
        let n = turns.entry(agent).or_insert(0);
        let script_turns = &shared.script.agents[agent].turns;
        let turn = script_turns
            .get(*n)
            .or_else(|| script_turns.last())
            .cloned();
        *n += 1;
        turn
    };
    let Some(turn) = turn else {
        return error_response(StatusCode::BAD_REQUEST, "mock-llm: the agent has no turns");
    };
    let stream = json.get("stream").and_then(Value::as_bool) == Some(true);
    let model = json
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_string();
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let chunk_delay = Duration::from_millis(shared.script.chunk_delay_ms);
    match turn {
        MockTurn::Fault { fault } => fault_response(fault, api, stream, &model, id, guard).await,
        MockTurn::Reply { text, tool_calls } => {
            let reply = Reply {
                text,
                tool_calls,
                model,
                id,
                prompt_tokens: u64::try_from(body.len() / 4).unwrap_or(0),
            };
            if stream {
                sse_response(reply.events(api), None, chunk_delay, guard)
            } else {
                json_response(StatusCode::OK, &reply.json(api))
            }
        }
    }
}

struct Reply {
    text: Option<String>,
    tool_calls: Vec<MockToolCall>,
    model: String,
    id: usize,
    prompt_tokens: u64,
}

impl Reply {
    fn completion_tokens(&self) -> u64 {
        let text = self.text.as_deref().map_or(0, str::len);
        let args: usize = self
            .tool_calls
            .iter()
            .map(|c| c.argument_text().len())
            .sum();
        u64::try_from((text + args) / 4 + 1).unwrap_or(0)
    }

    fn call_id(&self, i: usize) -> String {
        format!("call_{}_{}", self.id, i)
    }

    fn json(&self, api: Api) -> Value {
        match api {
            Api::OpenAi => {
                let mut message = json!({ "role": "assistant", "content": self.text });
                if !self.tool_calls.is_empty() {
                    message["tool_calls"] = self
                        .tool_calls
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            json!({
                                "id": self.call_id(i), "type": "function",
                                "function": { "name": c.name, "arguments": c.argument_text() },
                            })
                        })
                        .collect();
                }
                json!({
                    "id": format!("chatcmpl-{}", self.id),
                    "object": "chat.completion",
                    "created": 0,
                    "model": self.model,
                    "choices": [{ "index": 0, "message": message,
                        "finish_reason": if self.tool_calls.is_empty() { "stop" } else { "tool_calls" } }],
                    "usage": { "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens(),
                        "total_tokens": self.prompt_tokens + self.completion_tokens() },
                })
            }
            Api::Anthropic => {
                let mut content = Vec::new();
                if let Some(text) = &self.text {
                    content.push(json!({ "type": "text", "text": text }));
                }
                for (i, c) in self.tool_calls.iter().enumerate() {
                    let input: Value = serde_json::from_str(&c.argument_text())
                        .unwrap_or(Value::String(c.argument_text()));
                    content.push(json!({ "type": "tool_use", "id": self.call_id(i), "name": c.name, "input": input }));
                }
                json!({
                    "id": format!("msg_{}", self.id),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": content,
                    "stop_reason": if self.tool_calls.is_empty() { "end_turn" } else { "tool_use" },
                    "stop_sequence": null,
                    "usage": { "input_tokens": self.prompt_tokens, "output_tokens": self.completion_tokens() },
                })
            }
        }
    }

    /// The SSE events, as `(event name, data)`.
    fn events(&self, api: Api) -> Vec<(Option<&'static str>, String)> {
        let mut out = Vec::new();
        match api {
            Api::OpenAi => {
                let chunk = |delta: Value, finish: Value| {
                    json!({ "id": format!("chatcmpl-{}", self.id), "object": "chat.completion.chunk", "created": 0,
                        "model": self.model, "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
                    .to_string()
                };
                out.push((
                    None,
                    chunk(json!({ "role": "assistant", "content": "" }), Value::Null),
                ));
                if let Some(text) = &self.text {
                    for piece in split_in_two(text) {
                        out.push((None, chunk(json!({ "content": piece }), Value::Null)));
                    }
                }
                for (i, c) in self.tool_calls.iter().enumerate() {
                    out.push((None, chunk(json!({ "tool_calls": [{ "index": i, "id": self.call_id(i), "type": "function",
                        "function": { "name": c.name, "arguments": "" } }] }), Value::Null)));
                    for piece in split_in_two(&c.argument_text()) {
                        out.push((None, chunk(json!({ "tool_calls": [{ "index": i, "function": { "arguments": piece } }] }), Value::Null)));
                    }
                }
                let finish = if self.tool_calls.is_empty() {
                    "stop"
                } else {
                    "tool_calls"
                };
                out.push((None, chunk(json!({}), json!(finish))));
                out.push((None, json!({ "id": format!("chatcmpl-{}", self.id), "object": "chat.completion.chunk",
                    "created": 0, "model": self.model, "choices": [],
                    "usage": { "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens(),
                        "total_tokens": self.prompt_tokens + self.completion_tokens() } }).to_string()));
                out.push((None, "[DONE]".to_string()));
            }
            Api::Anthropic => {
                out.push((Some("message_start"), json!({ "type": "message_start", "message": {
                    "id": format!("msg_{}", self.id), "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": { "input_tokens": self.prompt_tokens, "output_tokens": 1 } } }).to_string()));
                let mut index = 0;
                if let Some(text) = &self.text {
                    out.push((
                        Some("content_block_start"),
                        json!({ "type": "content_block_start", "index": index,
                        "content_block": { "type": "text", "text": "" } })
                        .to_string(),
                    ));
                    for piece in split_in_two(text) {
                        out.push((
                            Some("content_block_delta"),
                            json!({ "type": "content_block_delta", "index": index,
                            "delta": { "type": "text_delta", "text": piece } })
                            .to_string(),
                        ));
                    }
                    out.push((
                        Some("content_block_stop"),
                        json!({ "type": "content_block_stop", "index": index }).to_string(),
                    ));
                    index += 1;
                }
                for (i, c) in self.tool_calls.iter().enumerate() {
                    out.push((Some("content_block_start"), json!({ "type": "content_block_start", "index": index,
                        "content_block": { "type": "tool_use", "id": self.call_id(i), "name": c.name, "input": {} } }).to_string()));
                    for piece in split_in_two(&c.argument_text()) {
                        out.push((
                            Some("content_block_delta"),
                            json!({ "type": "content_block_delta", "index": index,
                            "delta": { "type": "input_json_delta", "partial_json": piece } })
                            .to_string(),
                        ));
                    }
                    out.push((
                        Some("content_block_stop"),
                        json!({ "type": "content_block_stop", "index": index }).to_string(),
                    ));
                    index += 1;
                }
                let stop = if self.tool_calls.is_empty() {
                    "end_turn"
                } else {
                    "tool_use"
                };
                out.push((
                    Some("message_delta"),
                    json!({ "type": "message_delta",
                    "delta": { "stop_reason": stop, "stop_sequence": null },
                    "usage": { "output_tokens": self.completion_tokens() } })
                    .to_string(),
                ));
                out.push((
                    Some("message_stop"),
                    json!({ "type": "message_stop" }).to_string(),
                ));
            }
        }
        out
    }
}

fn split_in_two(text: &str) -> Vec<String> {
    let mid = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(text.len(), |(i, _)| i);
    let (a, b) = text.split_at(mid);
    [a, b]
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({ "type": "error", "error": { "type": "mock_error", "message": message } }),
    )
}

/// Streams `events`, then (if `cut_after` is set) drops the connection
/// after that many events instead of finishing.
fn sse_response(
    events: Vec<(Option<&'static str>, String)>,
    cut_after: Option<usize>,
    delay: Duration,
    guard: InFlight,
) -> Response {
    let stream = futures::stream::iter(events.into_iter().enumerate()).then(
        move |(i, (name, data))| async move {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if cut_after.is_some_and(|n| i >= n) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "mock-llm: stream cut",
                ));
            }
            let mut text = String::new();
            if let Some(name) = name {
                text.push_str("event: ");
                text.push_str(name);
                text.push('\n');
            }
            text.push_str("data: ");
            text.push_str(&data);
            text.push_str("\n\n");
            Ok(bytes::Bytes::from(text))
        },
    );
    // The guard lives as long as the body: a client hanging up mid-stream
    // drops it and the request stops counting as in flight.
    let stream = stream.map(move |item| {
        let _keep = &guard;
        item
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn reset_response(guard: InFlight) -> Response {
    let stream = futures::stream::once(async move {
        let _keep = guard;
        Err::<bytes::Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "mock-llm: reset",
        ))
    });
    Response::new(Body::from_stream(stream))
}

async fn fault_response(
    fault: Fault,
    api: Api,
    stream: bool,
    model: &str,
    id: usize,
    guard: InFlight,
) -> Response {
    match fault {
        Fault::RateLimited { retry_after_secs } => {
            let mut r = error_response(StatusCode::TOO_MANY_REQUESTS, "mock-llm: rate limited");
            if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            r
        }
        Fault::ServerError => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "mock-llm: injected server error",
        ),
        Fault::Status { status } => error_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            &format!("mock-llm: injected status {status}"),
        ),
        Fault::Hang => {
            let _keep = guard;
            let never = futures::future::pending::<Infallible>().await;
            match never {}
        }
        Fault::MalformedBody => {
            let mut r = Response::new(Body::from("{\"choices\": [ this is not json"));
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Fault::ConnectionReset => reset_response(guard),
        Fault::StreamCut if stream => {
            let reply = Reply {
                text: Some("this reply is cut off half way".into()),
                tool_calls: Vec::new(),
                model: model.to_string(),
                id,
                prompt_tokens: 1,
            };
            let events = reply.events(api);
            let half = events.len() / 2;
            sse_response(events, Some(half), Duration::ZERO, guard)
        }
        Fault::StreamCut => reset_response(guard),
    }
}

//! Helpers shared by the server's tests: scripted agents, a server on a
//! free port, an SSE reader and a log capture.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use baton_core::{Limits, Message};
use baton_llm::{ChatRequest, ScriptedModel, ScriptedTurn};
use baton_runtime::{Agent, Orchestrator};
use baton_server::{serve, ConversationFactory, ServerConfig, ServerHandle};
use futures::StreamExt;
use serde_json::{json, Value};

/// A tree model: `lead` delegates to two `researcher`s, each of which
/// delegates to two `fetcher`s; a fetcher answers after `leaf_latency`, or
/// never when its prompt contains "wait". Parents answer once every child
/// has reported.
pub fn tree_model(leaf_latency: Duration) -> ScriptedModel {
    ScriptedModel::from_fn(move |req: &ChatRequest| {
        let agent = req.agent.as_str();
        let prompt = req
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                Message::User { content } => Some(content.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let kids: &[&str] = match agent {
            "lead" => &["researcher", "researcher"],
            "researcher" => &["fetcher", "fetcher"],
            _ => &[],
        };
        if kids.is_empty() {
            if prompt.contains("wait") {
                return ScriptedTurn::hang();
            }
            return ScriptedTurn::text(format!("{agent} on {prompt}"))
                .with_usage(10, 5)
                .after(leaf_latency);
        }
        let results = req
            .messages
            .iter()
            .filter(|m| matches!(m, Message::TaskResult { .. }))
            .count();
        match req.messages.last() {
            Some(Message::User { .. }) => {
                let mut turn: Option<ScriptedTurn> = None;
                for (i, kid) in kids.iter().enumerate() {
                    let args = json!({"agent": kid, "prompt": format!("{prompt}/{i}")});
                    turn = Some(match turn {
                        None => ScriptedTurn::call("create_task", args),
                        Some(t) => t.and_call("create_task", args),
                    });
                }
                turn.unwrap_or_else(|| ScriptedTurn::text("nothing to do"))
                    .with_usage(20, 10)
            }
            Some(Message::Tool { .. }) => ScriptedTurn::text(format!("{agent}: delegated")),
            _ if results % kids.len() == 0 => {
                ScriptedTurn::text(format!("{agent}: all {results} results are in"))
            }
            _ => ScriptedTurn::text(format!("{agent}: {results} results so far")),
        }
    })
}

/// The lead → researcher → fetcher tree on `model`.
pub fn tree_agent(model: &ScriptedModel) -> Agent {
    tree_agent_with(model, false)
}

/// The tree; with `approval`, the lead's delegations to researchers wait
/// for a person's approval.
pub fn tree_agent_with(model: &ScriptedModel, approval: bool) -> Agent {
    let fetcher = Agent::builder("fetcher").model(model.clone()).build();
    let researcher = Agent::builder("researcher")
        .model(model.clone())
        .delegates_to([fetcher])
        .build();
    let lead = Agent::builder("lead")
        .model(model.clone())
        .delegates_to([researcher])
        .limits(Limits {
            max_depth: 3,
            max_children: 8,
            max_concurrent: 64,
            max_tokens: 1_000_000,
        });
    if approval {
        lead.require_approval("researcher").build()
    } else {
        lead.build()
    }
}

/// The factory: `lead` (the tree, default), `careful` (the tree, whose
/// delegations wait for approval) and `echo` (answers at once).
pub fn factory(leaf_latency: Duration) -> ConversationFactory {
    ConversationFactory::new()
        .with("lead", move || {
            Orchestrator::builder(tree_agent(&tree_model(leaf_latency))).worker_threads(1)
        })
        .with("careful", move || {
            Orchestrator::builder(tree_agent_with(&tree_model(leaf_latency), true))
                .worker_threads(1)
        })
        .agent(
            Agent::builder("echo")
                .model(ScriptedModel::from_fn(|req: &ChatRequest| {
                    let n = req.messages.len();
                    ScriptedTurn::text(format!("echo after {n} messages"))
                }))
                .build(),
        )
}

/// A server on a free port of 127.0.0.1 with `config` tweaks.
pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    capture_logs();
    let mut config = ServerConfig::ephemeral();
    tweak(&mut config);
    serve(config, factory(Duration::from_millis(30)))
        .await
        .expect("the server starts")
}

/// An HTTP client that sends the server's token.
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(server: &ServerHandle) -> Self {
        Self {
            base: server.base_url(),
            token: server.token().expose().to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Starts a conversation with `agent`; returns its id.
    pub async fn create(&self, agent: &str) -> String {
        let res = self
            .post("/v1/conversations")
            .json(&json!({"agent": agent}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn say(&self, convo: &str, text: &str) {
        let res = self
            .post(&format!("/v1/conversations/{convo}/messages"))
            .json(&json!({"text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    }

    pub async fn json(&self, path: &str) -> Value {
        let res = self.get(path).send().await.unwrap();
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.unwrap()
    }

    /// Polls the history until its last message is `text` (at most 20 s).
    pub async fn wait_for_answer(&self, convo: &str, text: &str) {
        for _ in 0..400 {
            let h = self
                .json(&format!("/v1/conversations/{convo}/history"))
                .await;
            if h["messages"]
                .as_array()
                .unwrap()
                .last()
                .map(|m| &m["content"])
                == Some(&json!(text))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no answer {text:?}");
    }

    /// Opens the event stream, after `after` (as `Last-Event-ID`).
    pub async fn events(&self, convo: &str, after: Option<u64>) -> Sse {
        let mut req = self.get(&format!("/v1/conversations/{convo}/events"));
        if let Some(after) = after {
            req = req.header("Last-Event-ID", after.to_string());
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            body: Box::pin(res.bytes_stream()),
            buf: String::new(),
        }
    }
}

/// One SSE frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: Value,
}

/// Reads SSE frames from a response body.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    /// The next frame with data (comments and `retry` are skipped); `None`
    /// when the stream ends.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if !data.is_empty() {
                    return Some(Frame {
                        id,
                        event,
                        data: serde_json::from_str(&data).expect("SSE data is JSON"),
                    });
                }
            }
            let chunk = self.body.next().await?.ok()?;
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Frames until (and with) the first for which `stop` holds; fails the
    /// test after 20 s without it.
    pub async fn until(&mut self, mut stop: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        let read = async {
            while let Some(f) = self.next().await {
                let done = stop(&f);
                frames.push(f);
                if done {
                    return true;
                }
            }
            false
        };
        let found = tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the awaited event arrives");
        assert!(found, "the stream ended before the awaited event");
        frames
    }
}

/// A stop condition for [`Sse::until`]: the conversation's own agent is
/// idle with no task running after a user message (the whole tree is done).
pub fn root_settled() -> impl FnMut(&Frame) -> bool {
    let mut spoken = false;
    move |f| {
        spoken |= f.data["type"] == "user_message";
        spoken
            && f.data["type"] == "idle"
            && f.data["task"].is_null()
            && f.data["running_tasks"] == 0
    }
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of the test process, at every level, to a buffer.
pub fn capture_logs() {
    let buf = LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
    let _ = buf;
}

/// Everything logged so far.
pub fn logs() -> String {
    let buf = LOGS.get().expect("capture_logs was called");
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

impl Sse {
    /// Reads an SSE response.
    pub fn from_response(res: reqwest::Response) -> Self {
        assert_eq!(res.status(), 200);
        Self {
            body: Box::pin(res.bytes_stream()),
            buf: String::new(),
        }
    }
}

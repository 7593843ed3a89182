//! [`ScriptedModel`]: a deterministic [`ChatModel`] for tests, examples and
//! scenario runs without an API key.
//!
//! Each agent has a queue of [`ScriptedTurn`]s, taken one per request. An
//! agent without a script (or whose script ran out) falls back to a
//! responder function if one is set, else the request fails with
//! [`LlmError::ScriptExhausted`]. Latency is a `tokio::time::sleep`, so on
//! a paused clock a scripted run takes no real time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use baton_core::{AgentName, CallId, ToolCall, Usage};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::chat_model::{ChatModel, ChatRequest, ChatResponse, LlmError};

#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Respond {
        content: Option<String>,
        calls: Vec<(Option<String>, String, String)>,
    },
    Fail(String),
    Panic(String),
    Hang,
}

/// One scripted model reply, built fluently:
///
/// ```
/// use baton_llm::ScriptedTurn;
/// use serde_json::json;
/// use std::time::Duration;
///
/// let turn = ScriptedTurn::call("get_weather", json!({"city": "Paris"}))
///     .and_call("get_weather", json!({"city": "Oslo"}))
///     .after(Duration::from_millis(200));
/// let answer = ScriptedTurn::text("Sunny in both.");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedTurn {
    reply: Reply,
    latency: Duration,
    usage: Usage,
}

impl ScriptedTurn {
    fn respond(content: Option<String>, calls: Vec<(Option<String>, String, String)>) -> Self {
        Self {
            reply: Reply::Respond { content, calls },
            latency: Duration::ZERO,
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
            },
        }
    }

    /// A reply with text only: the agent's answer.
    pub fn text(content: impl Into<String>) -> Self {
        Self::respond(Some(content.into()), Vec::new())
    }

    /// A reply that calls one tool with JSON arguments.
    pub fn call(tool: impl Into<String>, arguments: serde_json::Value) -> Self {
        Self::respond(None, Vec::new()).and_call(tool, arguments)
    }

    /// A reply that calls `tool` once for each of `arguments`, in order:
    /// e.g. a lead delegating many subtasks in one turn.
    ///
    /// ```
    /// use baton_llm::ScriptedTurn;
    /// use serde_json::json;
    ///
    /// let fan_out = ScriptedTurn::calls(
    ///     "create_task",
    ///     (0..3).map(|i| json!({"agent": "leaf", "prompt": i.to_string()})),
    /// );
    /// # let _ = fan_out;
    /// ```
    pub fn calls(
        tool: impl Into<String>,
        arguments: impl IntoIterator<Item = serde_json::Value>,
    ) -> Self {
        let tool = tool.into();
        let mut turn = Self::respond(None, Vec::new());
        for a in arguments {
            turn.push_call(None, tool.clone(), a.to_string());
        }
        turn
    }

    /// A reply that calls one tool with raw argument text, which may be
    /// invalid JSON (to test how invalid arguments are handled).
    pub fn call_raw(tool: impl Into<String>, arguments: impl Into<String>) -> Self {
        let mut turn = Self::respond(None, Vec::new());
        turn.push_call(None, tool.into(), arguments.into());
        turn
    }

    /// Adds another tool call to this reply.
    pub fn and_call(mut self, tool: impl Into<String>, arguments: serde_json::Value) -> Self {
        self.push_call(None, tool.into(), arguments.to_string());
        self
    }

    /// Adds a tool call with a fixed call id.
    pub fn and_call_with_id(
        mut self,
        id: impl Into<String>,
        tool: impl Into<String>,
        arguments: serde_json::Value,
    ) -> Self {
        self.push_call(Some(id.into()), tool.into(), arguments.to_string());
        self
    }

    /// Adds text to this reply (alongside its tool calls).
    pub fn with_text(mut self, content: impl Into<String>) -> Self {
        if let Reply::Respond { content: c, .. } = &mut self.reply {
            *c = Some(content.into());
        }
        self
    }

    /// A request that fails with [`LlmError::Scripted`].
    pub fn fail(message: impl Into<String>) -> Self {
        Self {
            reply: Reply::Fail(message.into()),
            ..Self::text("")
        }
    }

    /// A request whose future panics (to test that panics are contained).
    pub fn panic(message: impl Into<String>) -> Self {
        Self {
            reply: Reply::Panic(message.into()),
            ..Self::text("")
        }
    }

    /// A request that never answers (to test timeouts and cancellation).
    pub fn hang() -> Self {
        Self {
            reply: Reply::Hang,
            ..Self::text("")
        }
    }

    /// Delays the reply by `latency` (tokio time: virtual under a paused clock).
    pub fn after(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the token usage the reply reports.
    pub fn with_usage(mut self, prompt_tokens: u64, completion_tokens: u64) -> Self {
        self.usage = Usage {
            prompt_tokens,
            completion_tokens,
        };
        self
    }

    fn push_call(&mut self, id: Option<String>, tool: String, arguments: String) {
        if let Reply::Respond { calls, .. } = &mut self.reply {
            calls.push((id, tool, arguments));
        }
    }
}

type Responder = dyn Fn(&ChatRequest) -> ScriptedTurn + Send + Sync;

#[derive(Default)]
struct Script {
    turns: VecDeque<ScriptedTurn>,
    served: usize,
}

/// A deterministic chat model driven by per-agent scripts.
///
/// ```
/// use baton_llm::{ScriptedModel, ScriptedTurn};
/// use serde_json::json;
///
/// let model = ScriptedModel::new()
///     .script("assistant", [
///         ScriptedTurn::call("get_weather", json!({"city": "Paris"})),
///         ScriptedTurn::text("It is sunny in Paris."),
///     ]);
/// ```
#[derive(Clone, Default)]
pub struct ScriptedModel {
    scripts: Arc<Mutex<HashMap<AgentName, Script>>>,
    responder: Option<Arc<Responder>>,
    recorded: Option<Arc<Mutex<Vec<ChatRequest>>>>,
    next_call: Arc<AtomicU64>,
}

impl std::fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedModel").finish_non_exhaustive()
    }
}

impl ScriptedModel {
    /// A model with no scripts: every request fails until scripts are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// A model that answers every request by calling `responder` (scripts
    /// added with [`ScriptedModel::script`] are served first).
    pub fn from_fn(
        responder: impl Fn(&ChatRequest) -> ScriptedTurn + Send + Sync + 'static,
    ) -> Self {
        Self {
            responder: Some(Arc::new(responder)),
            ..Self::default()
        }
    }

    /// Appends turns to `agent`'s script.
    pub fn script(
        self,
        agent: impl Into<AgentName>,
        turns: impl IntoIterator<Item = ScriptedTurn>,
    ) -> Self {
        self.scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(agent.into())
            .or_default()
            .turns
            .extend(turns);
        self
    }

    /// Keeps a copy of every request, for [`ScriptedModel::requests`].
    pub fn recording(mut self) -> Self {
        self.recorded = Some(Arc::default());
        self
    }

    /// The requests received so far (empty unless built with
    /// [`ScriptedModel::recording`]).
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.recorded
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .unwrap_or_default()
    }

    /// How many requests `agent` has made.
    pub fn served(&self, agent: &str) -> usize {
        self.scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&AgentName::new(agent))
            .map_or(0, |s| s.served)
    }

    fn next_turn(&self, request: &ChatRequest) -> Result<ScriptedTurn, LlmError> {
        let scripted = {
            let mut scripts = self.scripts.lock().unwrap_or_else(PoisonError::into_inner);
            let script = scripts.entry(request.agent.clone()).or_default();
            script.served += 1;
            script.turns.pop_front().ok_or(script.served)
        };
        match (scripted, &self.responder) {
            (Ok(turn), _) => Ok(turn),
            (Err(_), Some(responder)) => Ok(responder(request)),
            (Err(turn), None) => Err(LlmError::ScriptExhausted {
                agent: request.agent.clone(),
                turn,
            }),
        }
    }

    fn to_response(
        &self,
        content: Option<String>,
        calls: Vec<(Option<String>, String, String)>,
        usage: Usage,
    ) -> ChatResponse {
        let tool_calls = calls
            .into_iter()
            .map(|(id, name, arguments)| ToolCall {
                id: CallId::new(id.unwrap_or_else(|| {
                    format!(
                        "call_{}",
                        self.next_call.fetch_add(1, Ordering::Relaxed) + 1
                    )
                })),
                name,
                arguments,
            })
            .collect();
        ChatResponse {
            content,
            tool_calls,
            usage,
        }
    }
}

impl ChatModel for ScriptedModel {
    fn name(&self) -> &str {
        "scripted"
    }

    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        let turn = self.next_turn(&request);
        if let Some(recorded) = &self.recorded {
            recorded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(request);
        }
        let turn = match turn {
            Ok(turn) => turn,
            Err(e) => return futures::future::ready(Err(e)).boxed(),
        };
        let ScriptedTurn {
            reply,
            latency,
            usage,
        } = turn;
        let response = match reply {
            Reply::Respond { content, calls } => Ok(self.to_response(content, calls, usage)),
            other => Err(other),
        };
        async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            match response {
                Ok(response) => Ok(response),
                Err(Reply::Fail(message)) => Err(LlmError::Scripted(message)),
                Err(Reply::Panic(message)) => panic!("scripted panic: {message}"),
                Err(_) => futures::future::pending().await,
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::Message;
    use serde_json::json;

    fn request(agent: &str) -> ChatRequest {
        ChatRequest {
            agent: agent.into(),
            messages: Arc::new(vec![Message::user("hi")]),
            tools: Arc::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn serves_each_agent_its_own_script_in_order() {
        let m = ScriptedModel::new()
            .script("a", [ScriptedTurn::text("a1"), ScriptedTurn::text("a2")])
            .script(
                "b",
                [ScriptedTurn::call("t", json!({"x": 1})).and_call("t", json!({}))],
            );
        assert_eq!(
            m.complete(request("a")).await.unwrap().content.as_deref(),
            Some("a1")
        );
        let b = m.complete(request("b")).await.unwrap();
        assert_eq!(b.tool_calls.len(), 2);
        assert_eq!(b.tool_calls[0].arguments, r#"{"x":1}"#);
        assert_ne!(b.tool_calls[0].id, b.tool_calls[1].id);
        assert_eq!(
            m.complete(request("a")).await.unwrap().content.as_deref(),
            Some("a2")
        );
        let err = m.complete(request("a")).await.unwrap_err();
        assert_eq!(
            err,
            LlmError::ScriptExhausted {
                agent: "a".into(),
                turn: 3
            }
        );
        assert_eq!(m.served("a"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_runs_on_tokio_time() {
        let m = ScriptedModel::new()
            .script("a", [ScriptedTurn::text("x").after(Duration::from_secs(3))]);
        let start = tokio::time::Instant::now();
        m.complete(request("a")).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn responder_answers_when_no_script_is_left() {
        let m = ScriptedModel::from_fn(|req| {
            ScriptedTurn::text(format!("{} msgs", req.messages.len()))
        })
        .script("a", [ScriptedTurn::fail("boom")])
        .recording();
        assert_eq!(
            m.complete(request("a")).await.unwrap_err(),
            LlmError::Scripted("boom".into())
        );
        assert_eq!(
            m.complete(request("a")).await.unwrap().content.as_deref(),
            Some("1 msgs")
        );
        assert_eq!(m.requests().len(), 2);
    }
}

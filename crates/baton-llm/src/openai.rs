//! [`OpenAiChat`]: the OpenAI Chat Completions API, and every server that
//! speaks it (Ollama, vLLM, llama.cpp's server, LM Studio), JSON or SSE.

use std::sync::Arc;

use baton_core::{CallId, Message, ToolCall, Usage};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::chat_model::{ChatModel, ChatRequest, ChatResponse, LlmError};
use crate::http::{Failure, HttpCore, HttpSettings};
use crate::secret::ApiKey;
use crate::sse::{SseError, SseReader};

/// The public OpenAI endpoint.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// A chat model over the OpenAI Chat Completions API.
///
/// ```
/// use baton_llm::{ApiKey, OpenAiChat};
/// let model = OpenAiChat::builder("gpt-4o-mini")
///     .base_url("http://127.0.0.1:11434/v1")
///     .api_key(ApiKey::new("sk-test"))
///     .stream(true)
///     .build()
///     .expect("a client");
/// assert_eq!(baton_llm::ChatModel::name(&model), "openai:gpt-4o-mini");
/// ```
#[derive(Debug, Clone)]
pub struct OpenAiChat {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    model: String,
    url: String,
    key: Option<ApiKey>,
    stream: bool,
    core: HttpCore,
}

/// Builds an [`OpenAiChat`].
#[derive(Debug, Clone)]
pub struct OpenAiChatBuilder {
    provider: &'static str,
    model: String,
    base_url: String,
    key: Option<ApiKey>,
    stream: bool,
    settings: HttpSettings,
    shared: bool,
}

impl OpenAiChatBuilder {
    /// The server's base URL, up to and including `/v1`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The key sent as `Authorization: Bearer …`.
    pub fn api_key(mut self, key: ApiKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Streams replies over SSE (the result is the same assembled reply).
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Shares one connection pool and concurrency limit with every other
    /// shared client of this provider, base URL and settings in the
    /// process (what [`model_from_str`](crate::model_from_str) does), so
    /// many agents on one provider hold one pool and one limit.
    pub fn shared_pool(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// Pool, limit, timeouts and retries.
    pub fn settings(mut self, settings: HttpSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The provider name used in [`ChatModel::name`] and errors
    /// (`openai` unless set, e.g. `ollama`).
    pub fn provider(mut self, provider: &'static str) -> Self {
        self.provider = provider;
        self
    }

    /// Builds the client (one connection pool for this model).
    pub fn build(self) -> Result<OpenAiChat, LlmError> {
        let core = if self.shared {
            HttpCore::shared(self.provider, &self.base_url, self.settings)?
        } else {
            HttpCore::new(self.provider, self.settings)?
        };
        Ok(OpenAiChat {
            inner: Arc::new(Inner {
                name: format!("{}:{}", self.provider, self.model),
                url: format!("{}/chat/completions", self.base_url.trim_end_matches('/')),
                model: self.model,
                key: self.key,
                stream: self.stream,
                core,
            }),
        })
    }
}

impl OpenAiChat {
    /// A builder for `model` on the public OpenAI endpoint, with no key.
    pub fn builder(model: impl Into<String>) -> OpenAiChatBuilder {
        OpenAiChatBuilder {
            provider: "openai",
            model: model.into(),
            base_url: OPENAI_BASE_URL.to_string(),
            key: None,
            stream: false,
            settings: HttpSettings::default(),
            shared: false,
        }
    }

    /// A builder with the key from `OPENAI_API_KEY` and the base URL from
    /// `OPENAI_BASE_URL` when they are set.
    pub fn builder_from_env(model: impl Into<String>) -> OpenAiChatBuilder {
        let mut builder = Self::builder(model);
        builder.key = ApiKey::from_env("OPENAI_API_KEY");
        if let Ok(url) = std::env::var("OPENAI_BASE_URL") {
            if !url.trim().is_empty() {
                builder.base_url = url;
            }
        }
        builder
    }

    /// The request body this client sends for `request`, exactly as
    /// posted (useful to check what a model is shown).
    pub fn request_body(&self, request: &ChatRequest) -> Value {
        request_body(&self.inner.model, self.inner.stream, request)
    }
}

/// Renders a request in the Chat Completions format.
fn request_body(model: &str, stream: bool, request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(render_message).collect();
    let mut body = json!({ "model": model, "messages": messages });
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    }
                })
            })
            .collect();
        body["tools"] = Value::Array(tools);
        body["tool_choice"] = json!("auto");
        body["parallel_tool_calls"] = json!(true);
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
    }
    body
}

fn render_message(message: &Message) -> Value {
    match message {
        Message::System { content } => json!({ "role": "system", "content": content }),
        Message::User { content } => json!({ "role": "user", "content": content }),
        Message::Assistant {
            content,
            tool_calls,
        } => {
            let mut m = json!({ "role": "assistant", "content": content });
            if !tool_calls.is_empty() {
                m["tool_calls"] = tool_calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id.as_str(),
                            "type": "function",
                            "function": { "name": c.name, "arguments": c.arguments },
                        })
                    })
                    .collect();
            }
            m
        }
        Message::Tool {
            call_id, content, ..
        } => json!({ "role": "tool", "tool_call_id": call_id.as_str(), "content": content }),
        Message::TaskResult {
            task_id,
            source,
            outcome,
        } => json!({
            "role": "user",
            "content": Message::task_result_text(*task_id, source, outcome),
        }),
    }
}

fn usage_of(v: &Value) -> Usage {
    Usage {
        prompt_tokens: v.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: v
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    }
}

/// Parses a non-streamed reply.
fn parse_reply(v: &Value) -> Result<ChatResponse, String> {
    let message = v
        .pointer("/choices/0/message")
        .ok_or("no choices[0].message in the reply")?;
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut tool_calls = Vec::new();
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .ok_or("a tool call has no id")?;
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or("a tool call has no function.name")?;
            let arguments = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            tool_calls.push(ToolCall {
                id: CallId::new(id),
                name: name.to_string(),
                arguments: arguments.to_string(),
            });
        }
    }
    Ok(ChatResponse {
        content,
        tool_calls,
        usage: v.get("usage").map(usage_of).unwrap_or_default(),
    })
}

/// Tool calls being assembled from stream deltas, by index.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Folds stream chunks into one reply.
#[derive(Default)]
struct StreamAssembler {
    content: Option<String>,
    calls: Vec<PartialCall>,
    usage: Usage,
    finished: bool,
}

impl StreamAssembler {
    fn push(&mut self, chunk: &Value) -> Result<(), String> {
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = usage_of(usage);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Ok(());
        };
        if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
            self.finished = true;
        }
        let Some(delta) = choice.get("delta") else {
            return Ok(());
        };
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            self.content.get_or_insert_with(String::new).push_str(text);
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                let index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or("a tool call delta has no index")?;
                let index = usize::try_from(index).map_err(|_| "tool call index too large")?;
                if index > 1024 {
                    return Err("tool call index too large".into());
                }
                while self.calls.len() <= index {
                    self.calls.push(PartialCall::default());
                }
                let slot = &mut self.calls[index];
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    slot.id = id.to_string();
                }
                if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                    slot.name.push_str(name);
                }
                if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                    slot.arguments.push_str(args);
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> ChatResponse {
        ChatResponse {
            content: self.content,
            tool_calls: self
                .calls
                .into_iter()
                .map(|c| ToolCall {
                    id: CallId::new(c.id),
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            usage: self.usage,
        }
    }
}

impl Inner {
    async fn attempt(&self, body: &Value) -> Result<ChatResponse, Failure> {
        let core = &self.core;
        let mut request = core.client.post(&self.url);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key.expose());
        }
        let deadline = core.deadline();
        let response = core.post(request, body, deadline).await?;
        if !self.stream {
            let bytes = core.body(response, deadline).await?;
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| core.invalid(format!("the body is not JSON: {e}")))?;
            return parse_reply(&value).map_err(|m| core.invalid(m));
        }
        let mut reader = SseReader::new(response, core.settings.stream_idle_timeout);
        let mut assembler = StreamAssembler::default();
        loop {
            let event = match reader.next().await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(SseError::Idle) => return Err(core.idle()),
                Err(SseError::Transport(e)) => return Err(core.failure(&e)),
            };
            if event.data.trim() == "[DONE]" {
                return Ok(assembler.finish());
            }
            let chunk: Value = serde_json::from_str(&event.data)
                .map_err(|e| core.invalid(format!("a stream chunk is not JSON: {e}")))?;
            if let Some(err) = chunk.get("error") {
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("error event in the stream");
                return Err(core.invalid(message.to_string()));
            }
            assembler.push(&chunk).map_err(|m| core.invalid(m))?;
        }
        if assembler.finished {
            Ok(assembler.finish())
        } else {
            Err(core.invalid("the stream ended before the reply was complete"))
        }
    }
}

impl ChatModel for OpenAiChat {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let body = request_body(&inner.model, inner.stream, &request);
            let response = inner.core.run(|| inner.attempt(&body)).await?;
            tracing::debug!(
                model = %inner.name,
                prompt_tokens = response.usage.prompt_tokens,
                completion_tokens = response.usage.completion_tokens,
                "model replied"
            );
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{AgentName, TaskId, TaskOutcome, ToolSpec};

    fn request() -> ChatRequest {
        ChatRequest {
            agent: AgentName::new("a"),
            messages: Arc::new(vec![
                Message::system("be brief"),
                Message::user("weather?"),
                Message::Assistant {
                    content: None,
                    tool_calls: vec![ToolCall {
                        id: CallId::new("call_1"),
                        name: "weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    }],
                },
                Message::Tool {
                    call_id: CallId::new("call_1"),
                    name: "weather".into(),
                    content: "sunny".into(),
                    is_error: false,
                },
                Message::TaskResult {
                    task_id: TaskId::new(2),
                    source: AgentName::new("research"),
                    outcome: TaskOutcome::Succeeded {
                        output: "42".into(),
                    },
                },
            ]),
            tools: Arc::new(vec![ToolSpec {
                name: "weather".into(),
                description: "the weather".into(),
                parameters: json!({"type": "object"}),
            }]),
        }
    }

    #[test]
    fn the_body_matches_the_published_format() {
        let body = request_body("gpt-4o-mini", true, &request());
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            body["messages"][2],
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]})
        );
        assert_eq!(
            body["messages"][3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
        );
        assert_eq!(body["messages"][4]["role"], "user");
        assert!(body["messages"][4]["content"]
            .as_str()
            .is_some_and(|t| t.starts_with("[task task-2 from research succeeded]")));
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["tools"][0]["function"]["name"], "weather");
        assert_eq!(body["tool_choice"], "auto");
        assert_eq!(body["parallel_tool_calls"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn stream_deltas_assemble_by_index() {
        let mut a = StreamAssembler::default();
        let chunks = [
            json!({"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c0","function":{"name":"w","arguments":"{\"ci"}}]}}]}),
            json!({"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c1","function":{"name":"t","arguments":"{}"}}]}}]}),
            json!({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":1}"}}]}}]}),
            json!({"choices":[{"delta":{},"finish_reason":"tool_calls"}]}),
            json!({"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}),
        ];
        for c in &chunks {
            a.push(c).expect("valid chunk");
        }
        assert!(a.finished);
        let r = a.finish();
        assert_eq!(r.tool_calls.len(), 2);
        assert_eq!(r.tool_calls[0].arguments, "{\"city\":1}");
        assert_eq!(r.tool_calls[1].id.as_str(), "c1");
        assert_eq!(r.usage.total(), 12);
    }
}

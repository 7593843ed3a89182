//! [`AnthropicMessages`]: the Anthropic Messages API, JSON or SSE.

use std::sync::Arc;

use baton_core::{CallId, Message, ToolCall, Usage};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::chat_model::{ChatModel, ChatRequest, ChatResponse, LlmError};
use crate::http::{Failure, HttpCore, HttpSettings};
use crate::secret::ApiKey;
use crate::sse::{SseError, SseReader};

/// The public Anthropic endpoint.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com/v1";

/// The `anthropic-version` header sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A chat model over the Anthropic Messages API.
///
/// ```
/// use baton_llm::{AnthropicMessages, ApiKey, ChatModel};
/// let model = AnthropicMessages::builder("claude-sonnet-4-5")
///     .api_key(ApiKey::new("sk-ant-test"))
///     .max_tokens(1024)
///     .build()
///     .expect("a client");
/// assert_eq!(model.name(), "anthropic:claude-sonnet-4-5");
/// ```
#[derive(Debug, Clone)]
pub struct AnthropicMessages {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    model: String,
    url: String,
    key: Option<ApiKey>,
    stream: bool,
    max_tokens: u32,
    core: HttpCore,
}

/// Builds an [`AnthropicMessages`].
#[derive(Debug, Clone)]
pub struct AnthropicMessagesBuilder {
    model: String,
    base_url: String,
    key: Option<ApiKey>,
    stream: bool,
    max_tokens: u32,
    settings: HttpSettings,
    shared: bool,
}

impl AnthropicMessagesBuilder {
    /// The server's base URL, up to and including `/v1`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The key sent as `x-api-key`.
    pub fn api_key(mut self, key: ApiKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Streams replies over SSE (the result is the same assembled reply).
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// The reply's token limit (`max_tokens`, required by the API; 4096
    /// unless set).
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
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

    /// Builds the client (one connection pool for this model).
    pub fn build(self) -> Result<AnthropicMessages, LlmError> {
        let core = if self.shared {
            HttpCore::shared("anthropic", &self.base_url, self.settings)?
        } else {
            HttpCore::new("anthropic", self.settings)?
        };
        Ok(AnthropicMessages {
            inner: Arc::new(Inner {
                name: format!("anthropic:{}", self.model),
                url: format!("{}/messages", self.base_url.trim_end_matches('/')),
                model: self.model,
                key: self.key,
                stream: self.stream,
                max_tokens: self.max_tokens,
                core,
            }),
        })
    }
}

impl AnthropicMessages {
    /// A builder for `model` on the public endpoint, with no key.
    pub fn builder(model: impl Into<String>) -> AnthropicMessagesBuilder {
        AnthropicMessagesBuilder {
            model: model.into(),
            base_url: ANTHROPIC_BASE_URL.to_string(),
            key: None,
            stream: false,
            max_tokens: 4096,
            settings: HttpSettings::default(),
            shared: false,
        }
    }

    /// A builder with the key from `ANTHROPIC_API_KEY` and the base URL
    /// from `ANTHROPIC_BASE_URL` when they are set.
    pub fn builder_from_env(model: impl Into<String>) -> AnthropicMessagesBuilder {
        let mut builder = Self::builder(model);
        builder.key = ApiKey::from_env("ANTHROPIC_API_KEY");
        if let Ok(url) = std::env::var("ANTHROPIC_BASE_URL") {
            if !url.trim().is_empty() {
                builder.base_url = url;
            }
        }
        builder
    }

    /// The request body this client sends for `request`.
    pub fn request_body(&self, request: &ChatRequest) -> Value {
        request_body(&self.inner, request)
    }
}

fn text_block(text: &str) -> Value {
    json!({ "type": "text", "text": text })
}

fn request_body(inner: &Inner, request: &ChatRequest) -> Value {
    let mut system: Vec<&str> = Vec::new();
    // (role, content blocks); consecutive messages of one role merge, so
    // parallel tool results travel in one user message.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, block: Value| match turns.last_mut() {
        Some((r, blocks)) if *r == role => blocks.push(block),
        _ => turns.push((role, vec![block])),
    };
    for message in request.messages.iter() {
        match message {
            Message::System { content } => system.push(content),
            Message::User { content } => push("user", text_block(content)),
            Message::Assistant {
                content,
                tool_calls,
            } => {
                if let Some(text) = content.as_deref().filter(|t| !t.is_empty()) {
                    push("assistant", text_block(text));
                }
                for call in tool_calls {
                    let input = serde_json::from_str::<Value>(&call.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    push(
                        "assistant",
                        json!({ "type": "tool_use", "id": call.id.as_str(), "name": call.name, "input": input }),
                    );
                }
            }
            Message::Tool {
                call_id,
                content,
                is_error,
                ..
            } => push(
                "user",
                json!({ "type": "tool_result", "tool_use_id": call_id.as_str(), "content": content, "is_error": is_error }),
            ),
            Message::TaskResult {
                task_id,
                source,
                outcome,
            } => push(
                "user",
                text_block(&Message::task_result_text(*task_id, source, outcome)),
            ),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    let mut body = json!({
        "model": inner.model,
        "max_tokens": inner.max_tokens,
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.parameters }))
            .collect();
        body["tool_choice"] = json!({ "type": "auto" });
    }
    if inner.stream {
        body["stream"] = json!(true);
    }
    body
}

fn usage_into(usage: &mut Usage, v: &Value) {
    if let Some(n) = v.get("input_tokens").and_then(Value::as_u64) {
        usage.prompt_tokens = n;
    }
    if let Some(n) = v.get("output_tokens").and_then(Value::as_u64) {
        usage.completion_tokens = n;
    }
}

fn parse_reply(v: &Value) -> Result<ChatResponse, String> {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or("no content array in the reply")?;
    let mut response = ChatResponse::default();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                response
                    .content
                    .get_or_insert_with(String::new)
                    .push_str(text);
            }
            Some("tool_use") => response.tool_calls.push(ToolCall {
                id: CallId::new(
                    block
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or("a tool_use block has no id")?,
                ),
                name: block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("a tool_use block has no name")?
                    .to_string(),
                arguments: match block.get("input") {
                    Some(Value::String(raw)) => raw.clone(),
                    Some(input) => input.to_string(),
                    None => "{}".into(),
                },
            }),
            _ => {}
        }
    }
    if let Some(usage) = v.get("usage") {
        usage_into(&mut response.usage, usage);
    }
    Ok(response)
}

/// A content block being assembled from stream events.
enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
    Other,
}

#[derive(Default)]
struct StreamAssembler {
    blocks: Vec<(u64, Block)>,
    usage: Usage,
    stopped: bool,
}

impl StreamAssembler {
    fn block(&mut self, index: u64) -> Option<&mut Block> {
        self.blocks
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b)
    }

    fn push(&mut self, event: &Value) -> Result<(), String> {
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(usage) = event.pointer("/message/usage") {
                    usage_into(&mut self.usage, usage);
                }
            }
            Some("content_block_start") => {
                let index = event
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or("block without index")?;
                let block = event.get("content_block").ok_or("no content_block")?;
                let block = match block.get("type").and_then(Value::as_str) {
                    Some("text") => Block::Text(
                        block
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    ),
                    Some("tool_use") => Block::ToolUse {
                        id: block
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        name: block
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        json: String::new(),
                    },
                    _ => Block::Other,
                };
                self.blocks.push((index, block));
            }
            Some("content_block_delta") => {
                let index = event
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or("delta without index")?;
                let delta = event.get("delta").ok_or("no delta")?;
                let block = self
                    .block(index)
                    .ok_or("a delta for a block never started")?;
                match (block, delta.get("type").and_then(Value::as_str)) {
                    (Block::Text(text), Some("text_delta")) => {
                        text.push_str(delta.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    (Block::ToolUse { json, .. }, Some("input_json_delta")) => {
                        json.push_str(
                            delta
                                .get("partial_json")
                                .and_then(Value::as_str)
                                .unwrap_or(""),
                        );
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(usage) = event.get("usage") {
                    usage_into(&mut self.usage, usage);
                }
            }
            Some("message_stop") => self.stopped = true,
            Some("error") => {
                return Err(event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("error event in the stream")
                    .to_string())
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> ChatResponse {
        let mut response = ChatResponse {
            usage: self.usage,
            ..ChatResponse::default()
        };
        for (_, block) in self.blocks {
            match block {
                Block::Text(text) => response
                    .content
                    .get_or_insert_with(String::new)
                    .push_str(&text),
                Block::ToolUse { id, name, json } => response.tool_calls.push(ToolCall {
                    id: CallId::new(id),
                    name,
                    arguments: if json.is_empty() { "{}".into() } else { json },
                }),
                Block::Other => {}
            }
        }
        response
    }
}

impl Inner {
    async fn attempt(&self, body: &Value) -> Result<ChatResponse, Failure> {
        let core = &self.core;
        let mut request = core
            .client
            .post(&self.url)
            .header("anthropic-version", ANTHROPIC_VERSION);
        if let Some(key) = &self.key {
            request = request.header("x-api-key", key.expose());
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
            if event.data.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&event.data)
                .map_err(|e| core.invalid(format!("a stream event is not JSON: {e}")))?;
            assembler.push(&value).map_err(|m| core.invalid(m))?;
            if assembler.stopped {
                return Ok(assembler.finish());
            }
        }
        Err(core.invalid("the stream ended before message_stop"))
    }
}

impl ChatModel for AnthropicMessages {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let body = request_body(&inner, &request);
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
    use baton_core::{AgentName, ToolSpec};

    #[test]
    fn the_body_matches_the_published_format() {
        let model = AnthropicMessages::builder("claude-x")
            .build()
            .expect("client");
        let request = ChatRequest {
            agent: AgentName::new("a"),
            messages: Arc::new(vec![
                Message::system("be brief"),
                Message::user("weather?"),
                Message::Assistant {
                    content: Some("Looking.".into()),
                    tool_calls: vec![
                        ToolCall {
                            id: CallId::new("t1"),
                            name: "w".into(),
                            arguments: r#"{"city":"Paris"}"#.into(),
                        },
                        ToolCall {
                            id: CallId::new("t2"),
                            name: "w".into(),
                            arguments: "not json".into(),
                        },
                    ],
                },
                Message::Tool {
                    call_id: CallId::new("t1"),
                    name: "w".into(),
                    content: "sunny".into(),
                    is_error: false,
                },
                Message::Tool {
                    call_id: CallId::new("t2"),
                    name: "w".into(),
                    content: "bad args".into(),
                    is_error: true,
                },
            ]),
            tools: Arc::new(vec![ToolSpec {
                name: "w".into(),
                description: "d".into(),
                parameters: json!({"type":"object"}),
            }]),
        };
        let body = model.request_body(&request);
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["max_tokens"], 4096);
        let m = &body["messages"];
        assert_eq!(m.as_array().map(Vec::len), Some(3));
        assert_eq!(m[1]["role"], "assistant");
        assert_eq!(
            m[1]["content"][1],
            json!({"type":"tool_use","id":"t1","name":"w","input":{"city":"Paris"}})
        );
        assert_eq!(m[1]["content"][2]["input"], json!({}));
        assert_eq!(m[2]["role"], "user");
        assert_eq!(
            m[2]["content"][1],
            json!({"type":"tool_result","tool_use_id":"t2","content":"bad args","is_error":true})
        );
        assert_eq!(body["tools"][0]["input_schema"], json!({"type":"object"}));
    }
}

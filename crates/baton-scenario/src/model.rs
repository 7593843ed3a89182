//! [`ScenarioModel`]: the scripted model of a scenario.
//!
//! Unlike a queue of replies, it picks each reply by the agent's own
//! history: the Nth reply of an agent is its Nth scripted turn. So every
//! instance of an agent follows its script from the start, concurrency
//! cannot reorder replies between instances, and a conversation resumed
//! from a store carries on where its history left off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Message, ToolCall, Usage};
use baton_llm::{ChatModel, ChatRequest, ChatResponse, LlmError};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::spec::TurnDef;
use crate::template;

/// A deterministic model that answers each agent from its scripted turns.
#[derive(Debug, Clone, Default)]
pub struct ScenarioModel {
    turns: Arc<BTreeMap<String, Vec<TurnDef>>>,
    repeating: Arc<std::collections::BTreeSet<String>>,
}

impl ScenarioModel {
    /// A model answering each agent (by name) from its turns.
    pub fn new(turns: BTreeMap<String, Vec<TurnDef>>) -> Self {
        Self {
            turns: Arc::new(turns),
            repeating: Arc::default(),
        }
    }

    /// Makes `agents` answer with their last turn again once their turns
    /// run out, instead of failing.
    pub fn repeating_last_turn(mut self, agents: impl IntoIterator<Item = String>) -> Self {
        self.repeating = Arc::new(agents.into_iter().collect());
        self
    }

    /// The reply for `request`, and how long the model takes to give it.
    pub fn reply(&self, request: &ChatRequest) -> Result<(ChatResponse, Duration), LlmError> {
        let replies = request
            .messages
            .iter()
            .filter(|m| matches!(m, Message::Assistant { .. }))
            .count();
        let agent = request.agent.as_str();
        let turn = self
            .turns
            .get(agent)
            .and_then(|turns| {
                let last = turns.len().checked_sub(1)?;
                if self.repeating.contains(agent) {
                    turns.get(replies.min(last))
                } else {
                    turns.get(replies)
                }
            })
            .ok_or_else(|| LlmError::ScriptExhausted {
                agent: request.agent.clone(),
                turn: replies + 1,
            })?;
        let latency = Duration::from_millis(turn.latency_ms);
        if let Some(message) = &turn.fail {
            return Err(LlmError::Scripted(message.clone()));
        }
        let values = variables(&request.messages);
        let tool_calls = turn
            .calls
            .iter()
            .enumerate()
            .map(|(k, call)| {
                ToolCall::new(
                    format!("call_{}_{}", replies + 1, k + 1),
                    call.tool.get_ref().clone(),
                    template::render_json(&call.args, &values),
                )
            })
            .collect();
        let usage = turn.usage.map_or_else(Usage::default, |u| Usage {
            prompt_tokens: u.prompt,
            completion_tokens: u.completion,
        });
        let response = ChatResponse {
            content: turn.text.as_deref().map(|t| template::render(t, &values)),
            tool_calls,
            usage,
        };
        Ok((response, latency))
    }
}

/// `{input}`: the latest user message; `{results}`: the tool and task
/// results since the latest assistant message; `{all_results}`: every task
/// result in the history.
fn variables(messages: &[Message]) -> BTreeMap<&'static str, String> {
    let input = messages
        .iter()
        .rev()
        .find_map(|m| match m {
            Message::User { content } => Some(content.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let since_reply = messages
        .iter()
        .rposition(|m| matches!(m, Message::Assistant { .. }))
        .map_or(0, |i| i + 1);
    let results: Vec<String> = messages[since_reply..]
        .iter()
        .filter_map(|m| match m {
            Message::Tool { content, .. } => Some(content.clone()),
            Message::TaskResult { outcome, .. } => Some(outcome.detail()),
            _ => None,
        })
        .collect();
    let all_results: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            Message::TaskResult { outcome, .. } => Some(outcome.detail()),
            _ => None,
        })
        .collect();
    BTreeMap::from([
        ("input", input),
        ("results", results.join("; ")),
        ("all_results", all_results.join("; ")),
    ])
}

impl ChatModel for ScenarioModel {
    fn name(&self) -> &str {
        "scripted"
    }

    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        let reply = self.reply(&request);
        async move {
            let (response, latency) = reply?;
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            Ok(response)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::AgentName;

    fn turns(toml_text: &str) -> Vec<TurnDef> {
        #[derive(serde::Deserialize)]
        struct T {
            turns: Vec<TurnDef>,
        }
        toml::from_str::<T>(toml_text)
            .map(|t| t.turns)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn request(agent: &str, messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            agent: AgentName::new(agent),
            messages: Arc::new(messages),
            tools: Arc::new(Vec::new()),
        }
    }

    #[test]
    fn picks_the_turn_by_the_number_of_replies_in_history() {
        let model = ScenarioModel::new(BTreeMap::from([(
            "a".to_owned(),
            turns(
                r#"
                [[turns]]
                calls = [{ tool = "look", args = { q = "{input}" } }]
                [[turns]]
                text = "found {results}"
                "#,
            ),
        )]));
        let first = request("a", vec![Message::user("cats")]);
        let (reply, _) = model.reply(&first).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.tool_calls[0].arguments, r#"{"q":"cats"}"#);

        let mut messages = vec![Message::user("cats"), reply.into_message()];
        messages.push(Message::Tool {
            call_id: baton_core::CallId::new("call_1_1"),
            name: "look".into(),
            content: "3 cats".into(),
            is_error: false,
        });
        let (reply, _) = model
            .reply(&request("a", messages.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.content.as_deref(), Some("found 3 cats"));

        messages.push(reply.into_message());
        let err = model.reply(&request("a", messages)).err();
        assert!(matches!(
            err,
            Some(LlmError::ScriptExhausted { turn: 3, .. })
        ));
    }
}

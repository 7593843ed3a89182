//! A conversation's ordered messages, and the tool-protocol check.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::CallId;
use crate::message::Message;

/// Why a history breaks the tool protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A tool call was never answered before the next non-tool message.
    #[error("tool call `{call_id}` at message {index} is not answered")]
    Unanswered {
        /// The unanswered call.
        call_id: CallId,
        /// The index of the assistant message that made it.
        index: usize,
    },
    /// A tool message answers no open call (or answers one twice).
    #[error("tool message at {index} answers `{call_id}`, which is not an open call")]
    Stray {
        /// The call id it claims to answer.
        call_id: CallId,
        /// Its index in the history.
        index: usize,
    },
}

/// The messages of one conversation, in order.
///
/// The messages sit behind an `Arc`, so [`History::snapshot`] (what a model
/// request carries) is O(1); appending after the request is done copies
/// nothing.
///
/// The runtime only ever appends, and keeps [`History::check_tool_protocol`]
/// true between turns: every assistant tool call is answered by exactly one
/// tool message, right after the assistant message and before anything else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History {
    messages: Arc<Vec<Message>>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one message.
    pub fn push(&mut self, message: Message) {
        Arc::make_mut(&mut self.messages).push(message);
    }

    /// A shared, immutable view of the messages as they are now.
    pub fn snapshot(&self) -> Arc<Vec<Message>> {
        Arc::clone(&self.messages)
    }

    /// The messages, oldest first.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The number of messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether there are no messages.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The text of the last assistant message that has text.
    pub fn last_assistant_text(&self) -> Option<&str> {
        self.messages.iter().rev().find_map(|m| match m {
            Message::Assistant {
                content: Some(text),
                ..
            } => Some(text.as_str()),
            _ => None,
        })
    }

    /// Checks the OpenAI tool protocol: each tool call of an assistant message
    /// is answered exactly once by the tool messages that directly follow it,
    /// and no tool message answers anything else.
    pub fn check_tool_protocol(&self) -> Result<(), HistoryError> {
        let mut open: Vec<(CallId, usize)> = Vec::new();
        let mut open_set: HashSet<CallId> = HashSet::new();
        for (index, message) in self.messages.iter().enumerate() {
            if let Message::Tool { call_id, .. } = message {
                if !open_set.remove(call_id) {
                    return Err(HistoryError::Stray {
                        call_id: call_id.clone(),
                        index,
                    });
                }
                open.retain(|(id, _)| id != call_id);
                continue;
            }
            if let Some((call_id, index)) = open.first() {
                return Err(HistoryError::Unanswered {
                    call_id: call_id.clone(),
                    index: *index,
                });
            }
            for call in message.tool_calls() {
                open.push((call.id.clone(), index));
                open_set.insert(call.id.clone());
            }
        }
        match open.first() {
            Some((call_id, index)) => Err(HistoryError::Unanswered {
                call_id: call_id.clone(),
                index: *index,
            }),
            None => Ok(()),
        }
    }
}

impl From<Vec<Message>> for History {
    fn from(messages: Vec<Message>) -> Self {
        Self {
            messages: Arc::new(messages),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ToolCall;
    use serde_json::json;

    fn call(id: &str) -> ToolCall {
        ToolCall::new(id, "t", json!({}))
    }

    fn answer(id: &str) -> Message {
        Message::Tool {
            call_id: CallId::new(id),
            name: "t".into(),
            content: "ok".into(),
            is_error: false,
        }
    }

    fn asks(ids: &[&str]) -> Message {
        Message::Assistant {
            content: None,
            tool_calls: ids.iter().map(|id| call(id)).collect(),
        }
    }

    #[test]
    fn answered_calls_in_any_order_pass() {
        let h = History::from(vec![
            Message::user("q"),
            asks(&["a", "b"]),
            answer("b"),
            answer("a"),
            Message::assistant("done"),
        ]);
        assert_eq!(h.check_tool_protocol(), Ok(()));
    }

    #[test]
    fn a_user_message_before_the_answer_fails() {
        let h = History::from(vec![asks(&["a"]), Message::user("x"), answer("a")]);
        assert!(matches!(
            h.check_tool_protocol(),
            Err(HistoryError::Unanswered { index: 0, .. })
        ));
    }

    #[test]
    fn an_open_call_at_the_end_fails() {
        let h = History::from(vec![asks(&["a", "b"]), answer("a")]);
        assert!(matches!(
            h.check_tool_protocol(),
            Err(HistoryError::Unanswered { .. })
        ));
    }

    #[test]
    fn a_double_answer_is_stray() {
        let h = History::from(vec![asks(&["a"]), answer("a"), answer("a")]);
        assert!(matches!(
            h.check_tool_protocol(),
            Err(HistoryError::Stray { index: 2, .. })
        ));
    }
}

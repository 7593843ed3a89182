//! [`TurnLoop`]: one agent's history and turn state, as plain data.
//!
//! The actor owns one `TurnLoop` and calls it from its handlers; all the
//! rules that keep history valid live here and are unit tested without
//! actors:
//!
//! * inputs that arrive while a turn is in flight wait in a queue and are
//!   folded into history, in arrival order, when the next turn begins;
//! * an assistant message with tool calls is followed by exactly one answer
//!   per call, in call order, before anything else;
//! * a reply for a turn that is no longer current (it was interrupted) is
//!   ignored.

use std::collections::{HashMap, HashSet, VecDeque};

use baton_core::{CallId, History, Message, ToolCall, ToolError, Usage};
use baton_llm::ChatResponse;

/// Where the loop is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Nothing in flight.
    Idle,
    /// A model request is in flight.
    AwaitingModel,
    /// The model asked for tools; some answers are still missing.
    RunningTools {
        /// One slot per call of the last message of history (the
        /// assistant's), in call order; `None` until answered.
        answers: Vec<Option<Message>>,
        /// How many slots are still `None`.
        missing: usize,
    },
}

/// One agent's history, queued inputs and turn state.
#[derive(Debug, Clone)]
pub struct TurnLoop {
    history: History,
    queue: VecDeque<Message>,
    turn: u64,
    phase: Phase,
    usage: Usage,
    /// A resumed history that ends with something the model has not
    /// answered (a user message, tool results, a task result): the next
    /// turn is due even with nothing queued.
    owes_reply: bool,
}

impl TurnLoop {
    /// A loop whose history starts with `system_prompt`, if any.
    pub fn new(system_prompt: Option<&str>) -> Self {
        let mut history = History::new();
        if let Some(prompt) = system_prompt {
            history.push(Message::system(prompt));
        }
        Self {
            history,
            queue: VecDeque::new(),
            turn: 0,
            phase: Phase::Idle,
            usage: Usage::default(),
            owes_reply: false,
        }
    }

    /// A loop resumed from a journal's history. A turn cut short by the
    /// stop (an assistant message whose tool calls were not all answered)
    /// has its open calls answered, so history stays valid: a call that
    /// created a task before the stop with the task's answer from
    /// `created` (by call id), any other as interrupted. Returns the loop
    /// and how many messages that added.
    pub fn resume(messages: Vec<Message>, created: &HashMap<CallId, String>) -> (Self, usize) {
        let mut this = Self::new(None);
        this.history = History::from(messages);
        let open: Vec<ToolCall> = {
            let mut open: &[ToolCall] = &[];
            let mut answered: HashSet<&CallId> = HashSet::new();
            for m in this.history.messages() {
                match m {
                    Message::Tool { call_id, .. } => {
                        answered.insert(call_id);
                    }
                    Message::Assistant { tool_calls, .. } => {
                        open = tool_calls;
                        answered.clear();
                    }
                    _ => {
                        open = &[];
                        answered.clear();
                    }
                }
            }
            open.iter()
                .filter(|c| !answered.contains(&c.id))
                .cloned()
                .collect()
        };
        let added = open.len();
        for call in open {
            let answer = match created.get(&call.id) {
                Some(text) => ok_answer(&call, text.clone()),
                None => error_answer(
                    &call,
                    &ToolError::Interrupted {
                        tool: call.name.clone(),
                        reason: "the conversation was restarted".into(),
                    },
                ),
            };
            this.history.push(answer);
        }
        this.owes_reply = matches!(
            this.history.messages().last(),
            Some(Message::User { .. } | Message::Tool { .. } | Message::TaskResult { .. })
        );
        (this, added)
    }

    /// The history as it is (queued inputs are not in it yet).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The current (or last) turn number; 0 before the first turn.
    pub fn turn(&self) -> u64 {
        self.turn
    }

    /// Where the loop is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Whether inputs are waiting for the next turn (or a resumed history
    /// still waits for the model's reply).
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty() || self.owes_reply
    }

    /// Tokens used by all turns so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Queues an input (a user message or a task result) for the next turn.
    pub fn enqueue(&mut self, input: Message) {
        self.queue.push_back(input);
    }

    /// Begins a turn: folds the queued inputs into history in arrival order
    /// and marks a model request in flight. Returns the turn number.
    ///
    /// Call it only when idle; otherwise it returns `None` and changes nothing.
    pub fn begin_turn(&mut self) -> Option<u64> {
        if !self.is_idle() {
            return None;
        }
        while let Some(input) = self.queue.pop_front() {
            self.history.push(input);
        }
        self.owes_reply = false;
        self.turn += 1;
        self.phase = Phase::AwaitingModel;
        Some(self.turn)
    }

    /// Takes the model's reply for `turn`. Returns the tool calls to run (empty
    /// when the reply is a final answer), or `None` if the reply is stale.
    pub fn accept_reply(&mut self, turn: u64, reply: ChatResponse) -> Option<Vec<ToolCall>> {
        if turn != self.turn || self.phase != Phase::AwaitingModel {
            return None;
        }
        self.usage += reply.usage;
        let calls = reply.tool_calls.clone();
        self.history.push(reply.into_message());
        self.phase = if calls.is_empty() {
            Phase::Idle
        } else {
            Phase::RunningTools {
                answers: vec![None; calls.len()],
                missing: calls.len(),
            }
        };
        Some(calls)
    }

    /// Ends `turn` without a reply (the request failed). Returns `false` if
    /// the turn is not the one in flight.
    pub fn fail_turn(&mut self, turn: u64) -> bool {
        if turn != self.turn || self.phase != Phase::AwaitingModel {
            return false;
        }
        self.phase = Phase::Idle;
        true
    }

    /// Answers call number `index` of `turn`. When that was the last missing
    /// answer, the answers enter history in call order, the loop goes idle
    /// and `true` is returned: the caller should begin the next turn.
    pub fn answer(&mut self, turn: u64, index: usize, answer: Message) -> bool {
        if turn != self.turn {
            return false;
        }
        let Phase::RunningTools {
            answers, missing, ..
        } = &mut self.phase
        else {
            return false;
        };
        match answers.get_mut(index) {
            Some(slot @ None) => *slot = Some(answer),
            _ => return false,
        }
        *missing -= 1;
        if *missing > 0 {
            return false;
        }
        self.flush_answers();
        true
    }

    /// Abandons the turn in flight because the user spoke: a pending model
    /// request is dropped (nothing enters history) and unanswered tool calls
    /// are answered with an "interrupted" error, so no call is left open.
    /// Returns the abandoned turn's number, or `None` if nothing was in flight.
    pub fn interrupt(&mut self) -> Option<u64> {
        match &mut self.phase {
            Phase::Idle => None,
            Phase::AwaitingModel => {
                self.phase = Phase::Idle;
                Some(self.turn)
            }
            Phase::RunningTools { answers, .. } => {
                // The calls are those of the last message, the assistant's.
                let calls = self
                    .history
                    .messages()
                    .last()
                    .map(Message::tool_calls)
                    .unwrap_or_default();
                for (call, slot) in calls.iter().zip(answers.iter_mut()) {
                    if slot.is_none() {
                        *slot = Some(error_answer(
                            call,
                            &ToolError::Interrupted {
                                tool: call.name.clone(),
                                reason: "the user sent a new message".into(),
                            },
                        ));
                    }
                }
                self.flush_answers();
                Some(self.turn)
            }
        }
    }

    fn flush_answers(&mut self) {
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        if let Phase::RunningTools { answers, .. } = phase {
            for answer in answers.into_iter().flatten() {
                self.history.push(answer);
            }
        }
    }
}

/// The tool message answering `call` with a result.
pub fn ok_answer(call: &ToolCall, content: impl Into<String>) -> Message {
    Message::Tool {
        call_id: call.id.clone(),
        name: call.name.clone(),
        content: content.into(),
        is_error: false,
    }
}

/// The tool message answering `call` with an error the model can read.
pub fn error_answer(call: &ToolCall, error: &ToolError) -> Message {
    Message::Tool {
        call_id: call.id.clone(),
        name: call.name.clone(),
        content: format!("error: {error}"),
        is_error: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply_calling(n: usize) -> ChatResponse {
        ChatResponse {
            content: None,
            tool_calls: (0..n)
                .map(|i| ToolCall::new(format!("c{i}"), "t", json!({})))
                .collect(),
            usage: Usage::default(),
        }
    }

    fn text(t: &str) -> ChatResponse {
        ChatResponse {
            content: Some(t.into()),
            ..Default::default()
        }
    }

    #[test]
    fn inputs_queued_mid_turn_enter_history_after_the_turn_in_arrival_order() {
        let mut l = TurnLoop::new(Some("sys"));
        l.enqueue(Message::user("first"));
        let t1 = l.begin_turn().unwrap();
        l.enqueue(Message::user("second"));
        l.enqueue(Message::user("third"));
        assert_eq!(l.begin_turn(), None, "a turn is in flight");
        assert_eq!(l.accept_reply(t1, text("a1")), Some(vec![]));
        assert!(l.is_idle() && l.has_queued());
        l.begin_turn().unwrap();
        let texts: Vec<_> = l
            .history()
            .messages()
            .iter()
            .filter_map(Message::text)
            .collect();
        assert_eq!(texts, ["sys", "first", "a1", "second", "third"]);
    }

    #[test]
    fn answers_enter_history_in_call_order_whatever_order_they_arrive_in() {
        let mut l = TurnLoop::new(None);
        l.enqueue(Message::user("q"));
        let t = l.begin_turn().unwrap();
        let calls = l.accept_reply(t, reply_calling(3)).unwrap();
        l.enqueue(Message::user("meanwhile"));
        assert!(!l.answer(t, 2, ok_answer(&calls[2], "r2")));
        assert!(
            !l.answer(t, 2, ok_answer(&calls[2], "dup")),
            "a slot is answered once"
        );
        assert!(!l.answer(t, 0, ok_answer(&calls[0], "r0")));
        assert!(l.answer(t, 1, ok_answer(&calls[1], "r1")));
        l.begin_turn().unwrap();
        let texts: Vec<_> = l
            .history()
            .messages()
            .iter()
            .filter_map(Message::text)
            .collect();
        assert_eq!(texts, ["q", "r0", "r1", "r2", "meanwhile"]);
        assert_eq!(l.history().check_tool_protocol(), Ok(()));
    }

    #[test]
    fn interrupt_while_waiting_drops_the_reply_and_leaves_history_alone() {
        let mut l = TurnLoop::new(None);
        l.enqueue(Message::user("q"));
        let t = l.begin_turn().unwrap();
        assert_eq!(l.interrupt(), Some(t));
        assert_eq!(l.accept_reply(t, text("late")), None, "stale reply ignored");
        assert_eq!(l.history().len(), 1);
    }

    #[test]
    fn interrupt_while_tools_run_answers_every_open_call() {
        let mut l = TurnLoop::new(None);
        l.enqueue(Message::user("q"));
        let t = l.begin_turn().unwrap();
        let calls = l.accept_reply(t, reply_calling(2)).unwrap();
        l.answer(t, 0, ok_answer(&calls[0], "r0"));
        assert_eq!(l.interrupt(), Some(t));
        assert!(l.is_idle());
        assert_eq!(l.history().check_tool_protocol(), Ok(()));
        let last = l.history().messages().last().unwrap().clone();
        assert!(
            matches!(last, Message::Tool { is_error: true, ref content, .. } if content.contains("interrupted"))
        );
        assert!(
            !l.answer(t, 1, ok_answer(&calls[1], "late")),
            "late answers ignored"
        );
    }

    #[test]
    fn resume_answers_the_calls_a_stop_left_open() {
        let calls = reply_calling(2).tool_calls;
        let history = vec![
            Message::user("q"),
            Message::Assistant {
                content: None,
                tool_calls: calls.clone(),
            },
            ok_answer(&calls[0], "r0"),
        ];
        let (l, added) = TurnLoop::resume(history, &HashMap::new());
        assert_eq!(added, 1);
        assert_eq!(l.history().len(), 4);
        assert_eq!(l.history().check_tool_protocol(), Ok(()));
        let (l, added) = TurnLoop::resume(
            vec![Message::user("q"), Message::assistant("a")],
            &HashMap::new(),
        );
        assert_eq!((added, l.history().len()), (0, 2));
    }

    #[test]
    fn a_failed_turn_goes_idle_and_usage_adds_up() {
        let mut l = TurnLoop::new(None);
        let t = l.begin_turn().unwrap();
        assert!(!l.fail_turn(t + 1));
        assert!(l.fail_turn(t));
        let t = l.begin_turn().unwrap();
        let mut r = text("x");
        r.usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        };
        l.accept_reply(t, r);
        assert_eq!(l.usage().total(), 7);
    }

    #[test]
    fn a_resumed_history_that_awaits_a_reply_is_due_a_turn() {
        let (l, _) = TurnLoop::resume(vec![Message::user("go")], &HashMap::new());
        assert!(l.has_queued(), "the user message was never answered");
        let (mut l, _) = TurnLoop::resume(
            vec![Message::user("go"), Message::assistant("ok")],
            &HashMap::new(),
        );
        assert!(!l.has_queued(), "the last message is the answer");
        let (mut cut, added) = TurnLoop::resume(
            vec![
                Message::user("go"),
                Message::Assistant {
                    content: None,
                    tool_calls: vec![ToolCall::new("c1", "slow", serde_json::json!({}))],
                },
            ],
            &HashMap::new(),
        );
        assert_eq!(added, 1);
        assert!(
            cut.has_queued(),
            "the model must hear its call was interrupted"
        );
        assert_eq!(cut.begin_turn(), Some(1));
        assert!(!cut.has_queued());
        assert_eq!(l.begin_turn(), Some(1));
    }
}

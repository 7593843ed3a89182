//! Every state change as a serde [`Event`], broadcast on an [`EventBus`].
//!
//! Any number of subscribers (CLI, web page, store, tests) read the same
//! stream. The bus is a `tokio::sync::broadcast` channel: a subscriber that
//! lags loses the oldest events (and is told how many), and never slows the
//! actor that publishes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::budget::BudgetExceeded;
use crate::ids::{AgentName, CallId, TaskId};
use crate::message::{TaskOutcome, Usage};
use crate::task_registry::TaskKind;

/// One state change in a conversation's tree.
///
/// `task` is the task an agent runs as (`None` for the conversation's own
/// agent), so every event can be placed in the delegation tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The user said something (it is queued until the next turn).
    UserMessage {
        /// The text.
        text: String,
    },
    /// An agent sent a request to its model.
    TurnStarted {
        /// The agent.
        agent: AgentName,
        /// The task it runs as.
        task: Option<TaskId>,
        /// The turn number within this agent, from 1.
        turn: u64,
    },
    /// The model answered.
    TurnFinished {
        /// The agent.
        agent: AgentName,
        /// The task it runs as.
        task: Option<TaskId>,
        /// The turn number.
        turn: u64,
        /// Tokens used by this request.
        usage: Usage,
    },
    /// The model request failed.
    TurnFailed {
        /// The agent.
        agent: AgentName,
        /// The task it runs as.
        task: Option<TaskId>,
        /// The turn number.
        turn: u64,
        /// What went wrong.
        error: String,
    },
    /// A turn was abandoned because the user spoke (the `Interrupt` policy).
    TurnInterrupted {
        /// The agent.
        agent: AgentName,
        /// The task it runs as.
        task: Option<TaskId>,
        /// The abandoned turn's number.
        turn: u64,
    },
    /// The model said something to its caller.
    AssistantMessage {
        /// The agent.
        agent: AgentName,
        /// The task it runs as.
        task: Option<TaskId>,
        /// The text.
        text: String,
    },
    /// A tool call began.
    ToolCallStarted {
        /// The agent.
        agent: AgentName,
        /// The task it runs as.
        task: Option<TaskId>,
        /// The model's call id.
        call_id: CallId,
        /// The tool.
        tool: String,
        /// The arguments as the model wrote them.
        arguments: String,
    },
    /// A tool call was answered (for a background tool: with its task id).
    ToolCallFinished {
        /// The agent.
        agent: AgentName,
        /// The task it runs as.
        task: Option<TaskId>,
        /// The model's call id.
        call_id: CallId,
        /// The tool.
        tool: String,
        /// Whether the answer is a result rather than an error.
        ok: bool,
        /// The answer's text.
        output: String,
    },
    /// A task was created.
    TaskCreated {
        /// The new task.
        task_id: TaskId,
        /// The task that created it (`None`: the conversation).
        parent: Option<TaskId>,
        /// The agent that created it.
        owner: AgentName,
        /// What it runs.
        kind: TaskKind,
    },
    /// An attempt of a task began running (attempt 1 is the first).
    TaskStarted {
        /// The task.
        task_id: TaskId,
        /// The attempt number.
        attempt: u32,
    },
    /// An attempt failed and the task will be tried again after a backoff.
    TaskRetrying {
        /// The task.
        task_id: TaskId,
        /// The attempt that failed.
        attempt: u32,
        /// Why it failed.
        error: String,
        /// The wait before the next attempt, in milliseconds.
        backoff_ms: u64,
    },
    /// A task waits for a person's approval.
    ApprovalRequested {
        /// The task.
        task_id: TaskId,
    },
    /// A person approved or rejected a task.
    ApprovalDecided {
        /// The task.
        task_id: TaskId,
        /// Whether it may run.
        approved: bool,
    },
    /// A budget refused something (a delegation, a task, a model turn).
    BudgetExceeded {
        /// The agent that was refused.
        agent: AgentName,
        /// The task it runs as.
        task: Option<TaskId>,
        /// Which budget, and its limit.
        budget: BudgetExceeded,
    },
    /// A task ended.
    TaskFinished {
        /// The task.
        task_id: TaskId,
        /// How it ended.
        outcome: TaskOutcome,
    },
    /// An agent has nothing to do until something arrives.
    Idle {
        /// The agent.
        agent: AgentName,
        /// The task it runs as.
        task: Option<TaskId>,
        /// How many of its tasks are still running.
        running_tasks: usize,
    },
}

/// An [`Event`] with its place in the stream: a sequence number (from 1,
/// no gaps) and the time since the bus began (tokio's clock, so virtual
/// time under a paused clock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Position in the stream, from 1.
    pub seq: u64,
    /// Milliseconds since the bus began.
    pub at_ms: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug)]
struct BusInner {
    tx: broadcast::Sender<EventEnvelope>,
    seq: AtomicU64,
    epoch: Instant,
    /// Whether anyone ever subscribed. Until then nobody can be listening,
    /// which is known without the channel's lock (that every agent thread
    /// would otherwise take on every event it might publish).
    ever_subscribed: AtomicBool,
}

/// The broadcast channel of one conversation's events; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

impl EventBus {
    /// The default number of events a subscriber may fall behind before it
    /// starts losing the oldest ones.
    pub const DEFAULT_CAPACITY: usize = 16_384;

    /// A bus buffering up to `capacity` events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            inner: Arc::new(BusInner {
                tx,
                seq: AtomicU64::new(0),
                epoch: Instant::now(),
                ever_subscribed: AtomicBool::new(false),
            }),
        }
    }

    /// Publishes an event to every current subscriber. Never blocks; with
    /// no subscriber the event is simply dropped.
    pub fn publish(&self, event: Event) {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.is_observed() {
            return;
        }
        let at_ms = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        // An error only means every subscriber left meanwhile.
        let _ = self.inner.tx.send(EventEnvelope { seq, at_ms, event });
    }

    /// Whether anyone subscribes: publishers may skip building events
    /// nobody would read.
    pub fn is_observed(&self) -> bool {
        self.inner.ever_subscribed.load(Ordering::Acquire) && self.inner.tx.receiver_count() > 0
    }

    /// A new subscriber that sees every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EventEnvelope> {
        let rx = self.inner.tx.subscribe();
        self.inner.ever_subscribed.store(true, Ordering::Release);
        rx
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Event {
        Event::Idle {
            agent: "a".into(),
            task: None,
            running_tasks: 0,
        }
    }

    #[tokio::test]
    async fn subscribers_see_events_in_order_with_sequence_numbers() {
        let bus = EventBus::new(8);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        bus.publish(Event::UserMessage { text: "1".into() });
        bus.publish(idle());
        for rx in [&mut a, &mut b] {
            assert_eq!(rx.recv().await.unwrap().seq, 1);
            let second = rx.recv().await.unwrap();
            assert_eq!(second.seq, 2);
            assert_eq!(second.event, idle());
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_loses_old_events_and_never_blocks_the_publisher() {
        let bus = EventBus::new(4);
        let mut slow = bus.subscribe();
        for i in 0..100 {
            bus.publish(Event::UserMessage {
                text: i.to_string(),
            });
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(96))
        ));
        assert_eq!(slow.recv().await.unwrap().seq, 97);
    }

    #[test]
    fn envelopes_serialize_flat() {
        let env = EventEnvelope {
            seq: 3,
            at_ms: 10,
            event: Event::UserMessage { text: "hi".into() },
        };
        let v = serde_json::to_value(env).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq": 3, "at_ms": 10, "type": "user_message", "text": "hi"})
        );
    }
}

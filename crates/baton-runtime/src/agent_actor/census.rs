//! [`Census`]: which agents of a tree exist, which run, and whether the
//! tree is stopping; what `Conversation::shutdown` and `suspend` wait on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The agents of one conversation's tree, counted.
///
/// An agent is counted from the moment it is made until it has stopped:
/// the conversation from [`crate::Orchestrator::spawn`], a worker from the
/// moment the agent delegating to it makes its seed, while the seed is
/// still on its way to the worker's thread (see `ArbiterPool`). Each holds
/// an [`Enlisted`] that leaves the count when the agent has stopped, or
/// when it is dropped without having run (a seed dropped unbuilt, an actor
/// that panicked). Only an agent that is counted makes new ones, so once
/// the count is 0 it stays 0: no agent of the tree is left to run or to
/// write to the journal.
#[derive(Debug, Default)]
pub(crate) struct Census {
    /// Agents made and not stopped yet, seeds on their way included.
    existing: AtomicUsize,
    /// Agents started and not stopped yet
    /// ([`crate::Conversation::live_agents`]).
    running: AtomicUsize,
    /// Set once the tree is being stopped (shut down, suspended, or its
    /// journal closed): from then on no agent starts new work.
    stopping: AtomicBool,
    /// Woken when `existing` reaches 0.
    gone: Notify,
}

impl Census {
    /// Counts one more agent, made now; it leaves the count when the
    /// returned [`Enlisted`] is dropped.
    pub(crate) fn enlist(self: &Arc<Self>) -> Enlisted {
        self.existing.fetch_add(1, Ordering::Relaxed);
        Enlisted {
            census: Arc::clone(self),
            running: false,
        }
    }

    /// How many agents have started and not stopped yet.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// The tree is being stopped: no agent starts new work from now on (no
    /// model request, no tool call, no worker), and a worker built from
    /// now on stops at once.
    pub(crate) fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether the tree is being stopped (see [`Census::begin_stopping`]).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Resolves once every agent counted has stopped (or was dropped
    /// unbuilt). Whatever they handed to the journal before was handed
    /// over before this resolves.
    pub(crate) async fn all_stopped(&self) {
        loop {
            let mut gone = std::pin::pin!(self.gone.notified());
            // Registered before the check, so a last agent stopping in
            // between still wakes it.
            gone.as_mut().enable();
            if self.existing.load(Ordering::Acquire) == 0 {
                return;
            }
            gone.await;
        }
    }
}

/// One agent's place in its tree's [`Census`], made with the agent (or its
/// seed) and dropped when it has stopped.
#[derive(Debug)]
pub(crate) struct Enlisted {
    census: Arc<Census>,
    running: bool,
}

impl Enlisted {
    /// The agent has started: it counts as running until this is dropped.
    pub(crate) fn started(&mut self) {
        if !self.running {
            self.running = true;
            self.census.running.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Enlisted {
    fn drop(&mut self) {
        if self.running {
            self.census.running.fetch_sub(1, Ordering::Relaxed);
        }
        // Release: what the agent did before (its last journal appends) is
        // seen by whoever sees the count reach 0.
        if self.census.existing.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.census.gone.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn all_stopped_resolves_once_the_last_agent_is_dropped() {
        let census = Arc::new(Census::default());
        let mut root = census.enlist();
        root.started();
        let seed = census.enlist();
        assert_eq!(census.running(), 1, "a seed does not run yet");
        let mut waiting = Box::pin(census.all_stopped());
        assert!((&mut waiting).now_or_never().is_none());
        drop(root);
        assert_eq!(census.running(), 0);
        assert!((&mut waiting).now_or_never().is_none(), "the seed is left");
        drop(seed);
        assert!(waiting.now_or_never().is_some());
        assert!(census.all_stopped().now_or_never().is_some());
    }
}

//! [`ArbiterPool`]: the threads worker agents run on, so a wide tree uses
//! every core while the conversation actor stays responsive on its own.

use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{Actor, Addr, Arbiter, ArbiterHandle};

/// A fixed set of actix arbiters (one thread each), handed out round-robin.
/// The arbiters stop when the pool is dropped, i.e. when the conversation
/// and every agent of its tree are gone.
#[derive(Debug)]
pub(crate) struct ArbiterPool {
    arbiters: Vec<Arbiter>,
    handles: Vec<ArbiterHandle>,
    next: AtomicUsize,
}

impl ArbiterPool {
    /// A pool of `threads` arbiters; `None` for zero (workers then run on
    /// the caller's arbiter).
    pub(crate) fn new(threads: usize) -> Option<Self> {
        if threads == 0 {
            return None;
        }
        let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
        let handles = arbiters.iter().map(Arbiter::handle).collect();
        Some(Self {
            arbiters,
            handles,
            next: AtomicUsize::new(0),
        })
    }

    /// Starts `actor` on the next arbiter.
    pub(crate) fn start<A>(&self, actor: A) -> Addr<A>
    where
        A: Actor<Context = actix::Context<A>> + Send,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        A::start_in_arbiter(&self.handles[i], move |_| actor)
    }
}

impl Drop for ArbiterPool {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// The default number of worker threads: one per core, except on a paused
/// clock (see [`crate::virtual_time`]), where every agent must share the
/// one thread whose clock is virtual.
pub(crate) fn default_threads() -> usize {
    if crate::virtual_time::is_paused() {
        0
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

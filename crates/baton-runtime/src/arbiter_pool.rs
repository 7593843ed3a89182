//! [`ArbiterPool`]: the threads worker agents run on, so a wide tree uses
//! every core while the conversation actor stays responsive on its own.

use std::sync::atomic::{AtomicUsize, Ordering};

use actix::dev::channel::{self, AddressReceiver};
use actix::{Actor, Addr, Arbiter, ArbiterHandle, Context};

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

    /// Gives an actor an address now and puts what it is built from
    /// (`seed`) in `batch` for the next arbiter; it is built and started
    /// on that arbiter with the rest of the batch at
    /// [`ArbiterPool::start_batch`]. Messages sent to the address before
    /// then wait in its mailbox.
    pub(crate) fn start_later<A, S>(&self, seed: S, batch: &mut StartBatch<A, S>) -> Addr<A>
    where
        A: Actor<Context = Context<A>>,
        S: Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        let (tx, rx) = channel::channel(MAILBOX_CAPACITY);
        if batch.per_arbiter.len() < self.handles.len() {
            batch.per_arbiter.resize_with(self.handles.len(), Vec::new);
        }
        batch.per_arbiter[i].push((rx, seed));
        Addr::new(tx)
    }

    /// Starts every actor of `batch`: one message to each arbiter that has
    /// any, rather than one per actor, so a wide fan-out wakes each thread
    /// once per batch.
    pub(crate) fn start_batch<A, S>(&self, batch: &mut StartBatch<A, S>, build: fn(S) -> A)
    where
        A: Actor<Context = Context<A>>,
        S: Send + 'static,
    {
        for (handle, starts) in self.handles.iter().zip(&mut batch.per_arbiter) {
            if starts.is_empty() {
                continue;
            }
            let starts = std::mem::take(starts);
            handle.spawn_fn(move || {
                for (rx, seed) in starts {
                    actix::spawn(Context::with_receiver(rx).into_future(build(seed)));
                }
            });
        }
    }
}

/// actix's default mailbox capacity (what `Actor::start` gives).
const MAILBOX_CAPACITY: usize = 16;

/// Actors given an address but not started yet, per arbiter, as the
/// seeds they are built from; see [`ArbiterPool::start_later`].
pub(crate) struct StartBatch<A: Actor, S> {
    per_arbiter: Vec<Vec<(AddressReceiver<A>, S)>>,
}

impl<A: Actor, S> Default for StartBatch<A, S> {
    fn default() -> Self {
        Self {
            per_arbiter: Vec::new(),
        }
    }
}

impl<A: Actor, S> StartBatch<A, S> {
    /// Whether no actor waits to start.
    pub(crate) fn is_empty(&self) -> bool {
        self.per_arbiter.iter().all(Vec::is_empty)
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

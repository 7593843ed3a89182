//! [`EventLog`]: a conversation's recent events, kept for SSE clients.
//!
//! One pump task per conversation reads the conversation's broadcast bus
//! and appends each event, already encoded as an SSE frame, to a bounded
//! ring. SSE clients read the ring from their own position and are woken
//! through a `watch` channel when it grows. Nothing a client does reaches
//! the conversation: a slow client only falls behind in the ring, and once
//! the ring has dropped the events it has not read, it is told how many
//! (an `event: dropped` frame) and carries on from the oldest kept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use baton_core::EventEnvelope;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use utoipa::ToSchema;

/// One event as an SSE frame.
#[derive(Debug, Clone)]
struct Frame {
    seq: u64,
    bytes: Bytes,
}

#[derive(Debug)]
struct Ring {
    frames: VecDeque<Frame>,
    capacity: usize,
    closed: bool,
}

/// The bounded replay buffer of one conversation's events.
#[derive(Debug)]
pub(crate) struct EventLog {
    ring: Mutex<Ring>,
    /// The sequence number of the newest event (bumped after each append).
    latest: watch::Sender<u64>,
}

/// Told to an SSE client in an `event: dropped` frame: events it asked for
/// that are no longer kept (it fell too far behind, or asked for events
/// older than the replay buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DroppedEvents {
    /// The first lost event's sequence number.
    pub from_seq: u64,
    /// The last lost event's sequence number.
    pub to_seq: u64,
    /// How many were lost.
    pub count: u64,
}

/// What [`EventLog::read_after`] found.
#[derive(Debug)]
pub(crate) struct Batch {
    /// SSE bytes to send (events, with `dropped` frames before gaps).
    pub bytes: Option<Bytes>,
    /// The sequence number of the last event in `bytes`.
    pub last: u64,
    /// Whether the log is closed and everything has been read.
    pub finished: bool,
}

impl EventLog {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            ring: Mutex::new(Ring {
                frames: VecDeque::with_capacity(capacity.clamp(1, 1024)),
                capacity: capacity.max(1),
                closed: false,
            }),
            latest: watch::channel(0).0,
        })
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding the lock leaves the ring consistent (every
        // mutation is a single push or pop), so a poisoned lock is usable.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event (dropping the oldest beyond capacity) and wakes
    /// the readers.
    pub(crate) fn push(&self, env: &EventEnvelope) {
        let json = match serde_json::to_vec(env) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(seq = env.seq, error = %e, "an event could not be encoded");
                return;
            }
        };
        let mut buf = BytesMut::with_capacity(json.len() + 32);
        buf.put_slice(format!("id: {}\ndata: ", env.seq).as_bytes());
        buf.put_slice(&json);
        buf.put_slice(b"\n\n");
        {
            let mut ring = self.ring();
            if ring.frames.len() >= ring.capacity {
                ring.frames.pop_front();
            }
            ring.frames.push_back(Frame {
                seq: env.seq,
                bytes: buf.freeze(),
            });
        }
        self.latest.send_replace(env.seq);
    }

    /// Marks the log closed (the conversation is gone): readers end once
    /// they have read everything.
    pub(crate) fn close(&self) {
        self.ring().closed = true;
        self.latest.send_modify(|_| {});
    }

    /// The newest event's sequence number (0 before any).
    pub(crate) fn latest(&self) -> u64 {
        *self.latest.borrow()
    }

    /// A receiver woken on every append.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Up to `max` events after `after`, as SSE bytes, with a `dropped`
    /// frame before every gap.
    pub(crate) fn read_after(&self, after: u64, max: usize) -> Batch {
        let ring = self.ring();
        let start = ring.frames.partition_point(|f| f.seq <= after);
        let end = ring.frames.len().min(start + max);
        if start == end {
            return Batch {
                bytes: None,
                last: after,
                finished: ring.closed,
            };
        }
        let mut buf = BytesMut::new();
        let mut last = after;
        for frame in ring.frames.range(start..end) {
            if frame.seq > last + 1 {
                put_dropped(&mut buf, last + 1, frame.seq - 1);
            }
            buf.put_slice(&frame.bytes);
            last = frame.seq;
        }
        Batch {
            bytes: Some(buf.freeze()),
            last,
            finished: false,
        }
    }
}

fn put_dropped(buf: &mut BytesMut, from_seq: u64, to_seq: u64) {
    let notice = DroppedEvents {
        from_seq,
        to_seq,
        count: to_seq - from_seq + 1,
    };
    buf.put_slice(b"event: dropped\ndata: ");
    // Serializing three integers cannot fail.
    buf.put_slice(&serde_json::to_vec(&notice).unwrap_or_default());
    buf.put_slice(b"\n\n");
}

/// Copies the conversation's events into `log` until the bus closes; a lag
/// (the pump fell more than the bus's capacity behind) shows up as a gap
/// in sequence numbers, which readers are told about.
pub(crate) async fn pump(mut rx: broadcast::Receiver<EventEnvelope>, log: Arc<EventLog>) {
    loop {
        match rx.recv().await {
            Ok(env) => log.push(&env),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "the event pump fell behind the conversation");
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    log.close();
}

/// An SSE response body: the log's events after `after`, then live ones,
/// with keep-alive comments while idle. Ends when the log closes.
pub(crate) fn sse_stream(
    log: Arc<EventLog>,
    after: u64,
    keep_alive: Duration,
    batch_window: Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    struct State {
        log: Arc<EventLog>,
        rx: watch::Receiver<u64>,
        last: u64,
        keep_alive: tokio::time::Interval,
        hello: bool,
        batch_window: Duration,
        /// No read before this instant (the batch window after a send).
        quiet_until: Option<tokio::time::Instant>,
    }
    let rx = log.watch();
    let mut keep_alive = tokio::time::interval(keep_alive);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keep_alive.reset();
    let state = State {
        log,
        rx,
        last: after,
        keep_alive,
        hello: true,
        batch_window,
        quiet_until: None,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.hello {
            // Opens the stream at once (headers and a first chunk), and
            // tells EventSource clients how long to wait before reconnecting.
            s.hello = false;
            return Some((Ok(Bytes::from_static(b"retry: 1000\n\n")), s));
        }
        loop {
            if let Some(until) = s.quiet_until.take() {
                tokio::time::sleep_until(until).await;
            }
            s.rx.borrow_and_update();
            let batch = s.log.read_after(s.last, 1024);
            if let Some(bytes) = batch.bytes {
                s.last = batch.last;
                s.keep_alive.reset();
                if !s.batch_window.is_zero() {
                    s.quiet_until = Some(tokio::time::Instant::now() + s.batch_window);
                }
                return Some((Ok(bytes), s));
            }
            if batch.finished {
                return None;
            }
            tokio::select! {
                changed = s.rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = s.keep_alive.tick() => {
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), s));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::Event;

    fn env(seq: u64) -> EventEnvelope {
        EventEnvelope {
            seq,
            at_ms: 0,
            event: Event::UserMessage {
                text: seq.to_string(),
            },
        }
    }

    fn text(b: &Batch) -> String {
        String::from_utf8(b.bytes.clone().unwrap_or_default().to_vec()).unwrap()
    }

    #[test]
    fn reads_resume_after_a_sequence_number() {
        let log = EventLog::new(10);
        for i in 1..=5 {
            log.push(&env(i));
        }
        let b = log.read_after(3, 100);
        assert_eq!(b.last, 5);
        let t = text(&b);
        assert!(t.starts_with("id: 4\ndata: {"), "{t}");
        assert!(t.contains("id: 5\n"));
        assert!(!t.contains("dropped"));
        assert!(log.read_after(5, 100).bytes.is_none());
    }

    #[test]
    fn a_reader_behind_the_ring_is_told_what_it_lost() {
        let log = EventLog::new(3);
        for i in 1..=10 {
            log.push(&env(i));
        }
        let b = log.read_after(2, 100);
        let t = text(&b);
        assert!(
            t.starts_with(
                "event: dropped\ndata: {\"from_seq\":3,\"to_seq\":7,\"count\":5}\n\nid: 8\n"
            ),
            "{t}"
        );
        assert_eq!(b.last, 10);
    }

    #[test]
    fn a_gap_inside_the_ring_is_reported_and_batches_are_bounded() {
        let log = EventLog::new(10);
        log.push(&env(1));
        log.push(&env(4));
        log.push(&env(5));
        let b = log.read_after(0, 2);
        let t = text(&b);
        assert!(t.contains("\"from_seq\":2,\"to_seq\":3,\"count\":2"), "{t}");
        assert_eq!(b.last, 4);
        log.close();
        let b = log.read_after(4, 2);
        assert!(!b.finished);
        assert!(log.read_after(5, 2).finished);
    }
}

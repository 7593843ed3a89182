//! The writer both backends share: appends are queued in call order; an
//! encoder thread encodes whatever is queued, and the writer thread commits
//! whatever is encoded in one transaction (group commit), then answers every
//! append of the batch. The two threads work at once: one batch is encoded
//! while the one before it is written. Should either thread die (a panic),
//! the appends it held and every later one fail at once with
//! [`StoreError::WriterStopped`], saying why.
//!
//! A batch whose transaction fails for a reason that may pass is answered
//! with the error but kept: it is written again ahead of the next batch (or
//! after a pause, if none comes), so an append answered `Ok` has made
//! everything appended before it durable (the prefix durability of
//! [`baton_core::Journal`]). A batch the database refuses for its data is
//! written again in parts, so that only the appends it can never take fail
//! (and are dropped; their conversation's journal then takes no more, as a
//! later `Ok` would claim the dropped records durable). An append refused
//! alone is taken for the data's fault only if the database takes rows:
//! another append landed in the same try, or it takes a probe
//! ([`Backend::probe`]: a copy of a row it took before, or else a minimal
//! row). If it refuses the probe too, it refuses every row alike (an
//! administrator's new column, constraint or trigger): that append's
//! conversation's appends are kept and written again like a batch that
//! failed for a reason that may pass, answered with
//! [`StoreError::RefusesEveryRow`], while the other conversations' appends
//! are written without them; so a wrong verdict holds up only that one
//! conversation, until another's append lands beside it. At most
//! [`MAX_KEPT_BYTES`] wait for a failing store: an append that would take
//! them past it is refused.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use baton_core::journal::retry_pause;
use baton_core::{JournalError, JournalRecord};
use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};

use crate::error::{StoreError, StoreLocation};
use crate::snapshot::{Row, MAX_ROW_BYTES};
use crate::tasks::{TaskChange, TaskChanges};

/// Counters of the writer thread, to see group commit at work.
#[derive(Debug, Default)]
pub struct StoreStats {
    transactions: AtomicU64,
    appends: AtomicU64,
    records: AtomicU64,
    snapshots: AtomicU64,
}

impl StoreStats {
    /// Transactions committed (failed attempts are not counted; a commit
    /// reported failed that had landed after all is).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// `append` calls served.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    /// Records written.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Snapshots written.
    pub fn snapshots(&self) -> u64 {
        self.snapshots.load(Ordering::Relaxed)
    }

    pub(crate) fn count_snapshot(&self) {
        self.snapshots.fetch_add(1, Ordering::Relaxed);
    }
}

/// The appends queued but not yet answered, and a signal for when there
/// are none.
///
/// While there are some, a blocking task waits for them on the runtime that
/// queued them. On a paused tokio clock this matters: a runtime with nothing
/// to do jumps its clock to the next timer, and a commit on the writer
/// thread is nothing tokio can see, but a running blocking task inhibits
/// the jump. So a scripted run on virtual time does not skip ahead while its
/// journal writes. On a real clock the task merely waits.
///
/// Each append is counted out exactly once, by whichever thread holds it
/// when it is answered (or dropped unanswered with a dying thread).
#[derive(Default)]
pub(crate) struct InFlight {
    count: Mutex<usize>,
    none: Condvar,
    /// Appends counted out that were not counted in (a bug: the count
    /// would reach 0 with appends still in flight).
    #[cfg(test)]
    overcounted: std::sync::atomic::AtomicUsize,
}

impl InFlight {
    /// One more append queued; returns whether it is the only one.
    fn begin(&self) -> bool {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count += 1;
        *count == 1
    }

    /// `n` appends answered.
    fn end(&self, n: usize) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        #[cfg(test)]
        if n > *count {
            self.overcounted.fetch_add(n - *count, Ordering::Relaxed);
        }
        *count = count.saturating_sub(n);
        if *count == 0 {
            self.none.notify_all();
        }
    }

    /// Blocks until no append is in flight.
    fn wait_none(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            count = self
                .none
                .wait(count)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Why the store's threads stopped, once one has died: what the appends
/// it leaves unanswered, and every later one, fail with. Set by the thread
/// as it ends, however it ends.
pub(crate) struct Stopped {
    location: StoreLocation,
    reason: watch::Sender<Option<String>>,
}

impl Stopped {
    fn new(location: StoreLocation) -> Self {
        Self {
            location,
            reason: watch::channel(None).0,
        }
    }

    /// Records why (the first reason given stays).
    fn set(&self, reason: String) {
        self.reason.send_if_modified(|r| {
            let first = r.is_none();
            r.get_or_insert(reason);
            first
        });
    }

    /// Waits until a thread has said why it stopped: an append dropped
    /// unanswered was dropped by a thread that is ending (unwinding from a
    /// panic), which says why once it is done.
    async fn reason_given(&self) {
        let _ = self.reason.subscribe().wait_for(Option::is_some).await;
    }

    /// The error an append that cannot be written gets: why the writer
    /// stopped if it died, [`StoreError::Closed`] otherwise.
    fn error(&self) -> StoreError {
        let reason = self.reason.borrow().clone();
        match reason {
            Some(reason) => StoreError::WriterStopped {
                location: self.location.clone(),
                reason,
            },
            None => StoreError::Closed {
                location: self.location.clone(),
            },
        }
    }
}

/// Runs `body` and says how it ended: its value when it returned, the
/// panic's message when it panicked (the panic is caught, so the thread can
/// still answer for what it leaves behind).
pub(crate) fn run_caught<T>(body: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(body)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned())
    })
}

/// Why a thread of the store died, as appends are told: logged once.
fn died(thread: &str, panic: &str) -> String {
    let reason = format!("its {thread} thread panicked: {panic}");
    tracing::error!(%reason, "the store's {thread} thread died; appends fail from now on");
    reason
}

/// One `append` call as queued: a conversation's records, in order. They
/// are encoded on the writer thread, off the caller's (an actor's) thread.
struct Request {
    conversation: String,
    records: Vec<JournalRecord>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// One `append` call as the backend writes it: its records as rows of at
/// most [`MAX_ROW_BYTES`] (one, unless they are larger), encoded by
/// [`crate::snapshot::encode_rows`].
pub(crate) struct Append {
    pub(crate) conversation: String,
    /// How many records `rows` hold (0: nothing to write, only to answer).
    pub(crate) count: usize,
    /// The records as JSON texts, in order, each with its number of records.
    pub(crate) rows: Vec<Row>,
    /// Where to answer; `None` once answered (a failed append is answered,
    /// then written again with the next batch).
    reply: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// The last row `batch` writes: its conversation and text.
pub(crate) fn last_row(batch: &[Encoded]) -> Option<(&str, &str)> {
    batch
        .iter()
        .flat_map(|e| &e.appends)
        .filter(|a| a.count > 0)
        .filter_map(|a| {
            a.rows
                .last()
                .map(|r| (a.conversation.as_str(), r.text.as_str()))
        })
        .next_back()
}

/// Appends encoded together, on their way to the writer thread.
pub(crate) struct Encoded {
    /// The appends whose records encoded, in call order.
    pub(crate) appends: Vec<Append>,
    /// What they do to the task table.
    pub(crate) tasks: TaskChanges,
    /// How many appends this answers (those refused included).
    answered: usize,
}

/// Why a batch was not committed, and whether the database refused its
/// data (a value or constraint it can never take, so writing it again
/// fails again) or failed for a reason that may pass (a connection, the
/// disk, a lock, another writer's row).
#[derive(Debug)]
pub(crate) struct WriteError {
    pub(crate) error: Box<StoreError>,
    /// The database refused the data.
    pub(crate) data: bool,
}

impl From<StoreError> for WriteError {
    /// A failure that may pass.
    fn from(error: StoreError) -> Self {
        Self {
            error: Box::new(error),
            data: false,
        }
    }
}

/// What a backend does on the writer thread.
pub(crate) trait Backend: Send + 'static {
    /// Writes `batch` in one transaction, with what it does to the task
    /// table (each part's changes after the part before): all of it or none
    /// of it.
    fn write_batch(&mut self, batch: &[Encoded]) -> Result<(), WriteError>;
    /// The transaction of a failed batch rolled back, or whether a failed
    /// commit landed could not be told: forget whatever was cached about
    /// the stored state (sequence numbers), and connect again if the
    /// connection is gone.
    fn rolled_back(&mut self);
    /// Whether `batch`, the last one [`Backend::write_batch`] failed to
    /// write, was committed after all: its commit reached the database but
    /// the answer did not come back (a dropped connection). Asked before
    /// that batch is written again, so that it is not written twice;
    /// `false` if it wrote no row. It must be this writer's own last row
    /// that is found, not a row another writer of the same conversation
    /// wrote at that sequence number: the row's text is compared too.
    fn committed_after_all(&mut self, batch: &[Encoded]) -> Result<bool, StoreError>;
    /// The most bytes one `events` row can hold, its record's JSON and its
    /// conversation's name together: an append with a larger record can
    /// never be written, so it is refused rather than kept to fail every
    /// later batch.
    fn max_row_bytes(&self) -> usize;
    /// Whether [`Backend::write_batch`] writes the task changes of
    /// [`Encoded::tasks`]: if not (SQLite brings its table up to date from
    /// the events, see [`Backend::idle`]), the encoder leaves them empty.
    fn writes_task_changes(&self) -> bool {
        true
    }
    /// Whether the database takes rows at all, asked when one append of
    /// `conversation`, alone, was refused for its data and no other append
    /// landed in the same try: to tell a refusal of that append's data from
    /// a database that refuses every row alike (an administrator's new
    /// `NOT NULL` column, constraint or trigger). Writes, each in a
    /// transaction it rolls back, a copy of a stored `events` row at the
    /// next sequence number of its conversation (the latest row of another
    /// conversation) and, if there is none or the database refuses it, a
    /// minimal row: [`probe_record`] in [`PROBE_CONVERSATION`] (a stored
    /// row may break a check added without checking old rows, so a refused
    /// copy alone proves nothing); and, if `tasks` (the append changes the
    /// task table) and the backend writes that table in the batch's
    /// transaction, a task row the same way. `Ok` if the database took a
    /// row of each table; a [`WriteError`] as [`Backend::write_batch`]
    /// gives one if not: with `data`, the database refuses every row.
    fn probe(&mut self, conversation: &str, tasks: bool) -> Result<(), WriteError>;
    /// Nothing came to be written for [`QUIET`] (and nothing failed): the
    /// moment for work [`Backend::write_batch`] put off (SQLite writes its
    /// task table here, see `docs/store.md`). Also called once as the
    /// writer closes.
    fn idle(&mut self) {}
}

/// The conversation of [`Backend::probe`]'s minimal rows (rolled back).
pub(crate) const PROBE_CONVERSATION: &str = "baton-store probe";

/// The record of [`Backend::probe`]'s minimal `events` row: an empty user
/// input, as the encoder writes it.
pub(crate) fn probe_record() -> String {
    let record = JournalRecord::UserInput {
        text: String::new(),
    };
    serde_json::to_string(&record).unwrap_or_default()
}

/// The queue, the encoder thread and the writer thread. Dropping it commits
/// what is queued and joins the threads.
pub(crate) struct GroupWriter {
    sender: Mutex<Option<mpsc::Sender<Request>>>,
    /// The encoder, then the writer: joined in that order.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stats: Arc<StoreStats>,
    in_flight: Arc<InFlight>,
    stopped: Arc<Stopped>,
}

/// Waits for a thread just started to report whether it got ready (opened
/// its connection, and what it says with that); if it did not, joins it
/// and returns why.
pub(crate) fn await_ready<T>(
    ready: &mpsc::Receiver<Result<T, StoreError>>,
    thread: std::thread::JoinHandle<()>,
    location: &StoreLocation,
) -> Result<(std::thread::JoinHandle<()>, T), StoreError> {
    let outcome = ready.recv().unwrap_or_else(|_| {
        Err(StoreError::Closed {
            location: location.clone(),
        })
    });
    match outcome {
        Ok(said) => Ok((thread, said)),
        Err(e) => {
            let _ = thread.join();
            Err(e)
        }
    }
}

impl GroupWriter {
    /// Starts the writer thread, which first builds its backend with `make`
    /// (connections are made on the thread that uses them) and reports
    /// whether that worked.
    pub(crate) fn spawn<B: Backend>(
        location: StoreLocation,
        make: impl FnOnce() -> Result<B, StoreError> + Send + 'static,
    ) -> Result<Self, StoreError> {
        Self::spawn_keeping(location, MAX_KEPT_BYTES, make)
    }

    /// [`GroupWriter::spawn`], keeping at most `max_kept_bytes` of rows
    /// while the store fails (see [`MAX_KEPT_BYTES`]).
    pub(crate) fn spawn_keeping<B: Backend>(
        location: StoreLocation,
        max_kept_bytes: usize,
        make: impl FnOnce() -> Result<B, StoreError> + Send + 'static,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (encoded_tx, encoded_rx) = mpsc::channel::<Encoded>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stats = Arc::new(StoreStats::default());
        let writer_stats = Arc::clone(&stats);
        let in_flight = Arc::new(InFlight::default());
        let writer_in_flight = Arc::clone(&in_flight);
        let stopped = Arc::new(Stopped::new(location.clone()));
        let writer_stopped = Arc::clone(&stopped);
        let cannot_start = |what: &str, e: std::io::Error| StoreError::Io {
            location: location.clone(),
            message: format!("cannot start the {what} thread: {e}"),
        };
        let writer_location = location.clone();
        let writer = std::thread::Builder::new()
            .name("baton-store-writer".into())
            .spawn(move || match run_caught(make) {
                Ok(Ok(backend)) => {
                    let _ =
                        ready_tx.send(Ok((backend.max_row_bytes(), backend.writes_task_changes())));
                    let mut held = Held::default();
                    let writing = Writing {
                        stats: &writer_stats,
                        location: &writer_location,
                        max_kept_bytes,
                        task_changes: backend.writes_task_changes(),
                    };
                    let ended = run_caught(|| {
                        write_loop(backend, &encoded_rx, &writing, &writer_in_flight, &mut held);
                    });
                    // It returns once the encoder closed the queue (the
                    // store was dropped); if it panicked instead:
                    if let Err(panic) = ended {
                        // The reason first: the callers of the appends
                        // dropped while it unwound are waiting for it.
                        writer_stopped.set(died("writer", &panic));
                        let failing = Failing {
                            in_flight: &writer_in_flight,
                            stopped: &writer_stopped,
                        };
                        let replies = held
                            .kept
                            .iter_mut()
                            .flat_map(|e| &mut e.appends)
                            .filter_map(|a| a.reply.take());
                        failing.fail(replies, held.uncounted);
                        drop(held);
                        // Then every later batch, until the store is dropped.
                        while let Ok(encoded) = encoded_rx.recv() {
                            failing.fail(
                                encoded.appends.into_iter().filter_map(|a| a.reply),
                                encoded.answered,
                            );
                        }
                    }
                }
                Ok(Err(e)) => {
                    let _ = ready_tx.send(Err(e));
                }
                // Opening the backend (connecting, migrating) panicked.
                Err(panic) => {
                    let reason =
                        format!("its writer thread panicked while opening the store: {panic}");
                    tracing::error!(%reason, "the store could not be opened");
                    let _ = ready_tx.send(Err(StoreError::WriterStopped {
                        location: writer_location,
                        reason,
                    }));
                }
            })
            .map_err(|e| cannot_start("writer", e))?;
        let (writer, (max_row_bytes, task_changes)) = await_ready(&ready_rx, writer, &location)?;
        let encoder_location = location.clone();
        let encoder_in_flight = Arc::clone(&in_flight);
        let encoder_stopped = Arc::clone(&stopped);
        let encoder = std::thread::Builder::new()
            .name("baton-store-encoder".into())
            .spawn(move || {
                let failing = Failing {
                    in_flight: &encoder_in_flight,
                    stopped: &encoder_stopped,
                };
                let mut held = 0;
                let ended = run_caught(|| {
                    let target = Target {
                        location: &encoder_location,
                        max_row_bytes,
                        task_changes,
                    };
                    encode_loop(&rx, &encoded_tx, &target, &failing, &mut held);
                });
                if let Err(panic) = ended {
                    // The appends it held were dropped unanswered as it
                    // unwound: their callers hear why now.
                    encoder_stopped.set(died("encoder", &panic));
                    encoder_in_flight.end(held);
                    // Then every later append, until the store is dropped.
                    while let Ok(request) = rx.recv() {
                        failing.fail([request.reply], 1);
                    }
                }
                // Closing the queue to the writer ends it.
                drop(encoded_tx);
            })
            .map_err(|e| cannot_start("encoder", e))?;
        Ok(Self {
            sender: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![encoder, writer]),
            stats,
            in_flight,
            stopped,
        })
    }

    /// The writer's counters.
    pub(crate) fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Queues an append in call order; the receiver resolves once durable.
    fn append(
        &self,
        conversation: &str,
        records: Vec<JournalRecord>,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        let (reply, done) = oneshot::channel();
        let append = Request {
            conversation: conversation.to_owned(),
            records,
            reply,
        };
        // Counted before it is sent, so the writer's answer cannot come first.
        let first = self.in_flight.begin();
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let unsent = match sender.as_ref() {
            Some(tx) => tx.send(append).err().map(|mpsc::SendError(a)| a),
            None => Some(append),
        };
        if let Some(append) = unsent {
            self.in_flight.end(1);
            let _ = append.reply.send(Err(self.stopped.error()));
        } else if first {
            // The first append in flight: hold the runtime's clock (see
            // `InFlight`) until the writer has answered every one.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let in_flight = Arc::clone(&self.in_flight);
                drop(runtime.spawn_blocking(move || in_flight.wait_none()));
            }
        }
        done
    }

    /// `Journal::append` for one conversation: queues the records now (so
    /// they are in call order) and resolves once they are durable.
    pub(crate) fn journal_append(
        &self,
        conversation: &str,
        records: Vec<JournalRecord>,
    ) -> BoxFuture<'static, Result<(), JournalError>> {
        let done = self.append(conversation, records);
        let stopped = Arc::clone(&self.stopped);
        Box::pin(async move {
            match done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                // Dropped unanswered: a thread of the writer died with it.
                Err(_) => {
                    stopped.reason_given().await;
                    Err(stopped.error().into())
                }
            }
        })
    }
}

impl Drop for GroupWriter {
    /// Closing the store commits everything queued, then stops the writer.
    fn drop(&mut self) {
        drop(
            self.sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// How a thread fails the appends it gets once a thread of the store died.
struct Failing<'a> {
    in_flight: &'a InFlight,
    stopped: &'a Stopped,
}

impl Failing<'_> {
    /// Fails `replies` with why the store stopped, and counts `answered`
    /// appends out.
    fn fail(
        &self,
        replies: impl IntoIterator<Item = oneshot::Sender<Result<(), StoreError>>>,
        answered: usize,
    ) {
        let error = self.stopped.error();
        for reply in replies {
            let _ = reply.send(Err(error.clone()));
        }
        self.in_flight.end(answered);
    }
}

/// What the encoder encodes for: the store, and the most a row of it holds
/// ([`Backend::max_row_bytes`]).
struct Target<'a> {
    location: &'a StoreLocation,
    max_row_bytes: usize,
    /// Whether to fold the appends' task changes
    /// ([`Backend::writes_task_changes`]).
    task_changes: bool,
}

impl Target<'_> {
    /// Encodes an append's records as rows; an error (the append is
    /// refused) if they do not encode, or if a record is larger than a row
    /// of the store holds: such records can never be written.
    fn encode(
        &self,
        conversation: &str,
        records: &[JournalRecord],
    ) -> Result<Vec<Row>, StoreError> {
        let refused = |message: String| StoreError::Unencodable {
            location: self.location.clone(),
            conversation: conversation.to_owned(),
            message,
        };
        let rows = crate::snapshot::encode_rows(records, MAX_ROW_BYTES)
            .map_err(|e| refused(e.to_string()))?;
        // Only a row of one record passes MAX_ROW_BYTES.
        if let Some(row) = rows
            .iter()
            .find(|r| r.text.len().saturating_add(conversation.len()) > self.max_row_bytes)
        {
            return Err(refused(format!(
                "it is {} bytes of JSON, more than a row of this store holds ({} bytes)",
                row.text.len(),
                self.max_row_bytes
            )));
        }
        Ok(rows)
    }
}

/// The encoder thread: takes whatever appends are queued, encodes each as
/// one row (more if it is larger than [`MAX_ROW_BYTES`]), folds what they
/// do to the task table, and hands them on to the writer together. An
/// append that cannot be written at all (its records do not encode, or one
/// is larger than a row holds) is refused alone. `held` counts the appends
/// taken and not handed on yet (the count the thread must end should it
/// die).
fn encode_loop(
    rx: &mpsc::Receiver<Request>,
    tx: &mpsc::Sender<Encoded>,
    target: &Target<'_>,
    failing: &Failing<'_>,
    held: &mut usize,
) {
    // Conversations with an append that could not be written: their
    // journal takes no more (a later `Ok` would claim it durable).
    let mut refused: HashMap<String, StoreError> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut requests = vec![first];
        while let Ok(more) = rx.try_recv() {
            requests.push(more);
        }
        *held = requests.len();
        let mut tasks = TaskChanges::default();
        let mut encoded = Encoded {
            appends: Vec::with_capacity(requests.len()),
            tasks: TaskChanges::default(),
            answered: requests.len(),
        };
        for request in requests {
            #[cfg(test)]
            seam::before_encoding(&request.conversation);
            if let Some(error) = refused.get(&request.conversation) {
                let _ = request.reply.send(Err(error.clone()));
                continue;
            }
            match target.encode(&request.conversation, &request.records) {
                Ok(rows) => {
                    if target.task_changes {
                        tasks.add(&request.conversation, &request.records);
                    }
                    encoded.appends.push(Append {
                        conversation: request.conversation,
                        count: request.records.len(),
                        rows,
                        reply: Some(request.reply),
                    });
                }
                Err(e) => {
                    // Not a passing failure: these records can never be
                    // written, so they are not kept (see `Journal`).
                    tracing::error!(error = %e, "journal records cannot be written; they are dropped, and the conversation's journal takes no more");
                    refused.insert(request.conversation, e.clone());
                    let _ = request.reply.send(Err(e));
                }
            }
        }
        *held = 0;
        encoded.tasks = tasks;
        if let Err(mpsc::SendError(encoded)) = tx.send(encoded) {
            // The writer thread is gone altogether (a dead writer fails
            // what it gets until the queue closes: this is not expected).
            failing.fail(
                encoded.appends.into_iter().filter_map(|a| a.reply),
                encoded.answered,
            );
        }
    }
}

/// What the writer thread holds, kept outside its loop so that, should it
/// panic, what it held is still answered and counted out.
#[derive(Default)]
struct Held {
    /// The batches being written: those that failed before (answered,
    /// counted out) and the latest.
    kept: Vec<Encoded>,
    /// How many parts at the front of `kept` the last `write_batch` that
    /// failed covered: whether they landed after all is asked before they
    /// are written again (parts added since were never tried).
    tried: usize,
    /// The bytes of rows `kept` holds (see [`MAX_KEPT_BYTES`]).
    kept_bytes: usize,
    /// How many appends the latest batch answers, until counted out.
    uncounted: usize,
    /// Conversations whose records were refused (`kept` was full, or the
    /// database cannot take them), with why: their journal has lost
    /// records, so it takes no more.
    refused: HashMap<String, StoreError>,
}

/// The most bytes of rows the writer keeps while the store fails (see
/// [`Held::kept`]): while records of a failed batch wait, an append with
/// records that would take them past it is refused with
/// [`StoreError::KeptFull`] rather than kept, and its conversation's
/// journal takes no more (see [`refuse_past_full`]). A store that works
/// refuses nothing for it.
pub(crate) const MAX_KEPT_BYTES: usize = 256 << 20;

/// The bytes an append's rows take (their texts and conversation).
fn append_bytes(append: &Append) -> usize {
    append
        .rows
        .iter()
        .map(|r| r.text.len() + append.conversation.len())
        .sum()
}

/// How long nothing must come for the writer to be idle
/// ([`Backend::idle`]).
///
/// Long enough that work put off waits out a burst and the model calls
/// within it (a fan-out's sub-agents answering after 100 ms), rather than
/// competing with it for the cores; short beside a person's pause.
pub(crate) const QUIET: Duration = Duration::from_millis(250);

/// What the writer thread needs beyond its backend.
struct Writing<'a> {
    stats: &'a StoreStats,
    location: &'a StoreLocation,
    /// [`MAX_KEPT_BYTES`], lowered by tests.
    max_kept_bytes: usize,
    /// Whether the backend writes task changes
    /// ([`Backend::writes_task_changes`]): if not, a rebuilt part has none.
    task_changes: bool,
}

/// The writer thread: takes whatever is encoded, writes it in one
/// transaction, then answers every append of it.
///
/// A batch that fails for a reason that may pass (a lost connection, a
/// busy or full disk, another writer's row) is answered with the error and
/// kept, then written again ahead of the next batch (in one transaction
/// with it), or after a pause if none comes, until a commit succeeds:
/// records are never withdrawn, so an append answered `Ok` has made every
/// record appended before it durable. Before a kept batch is written
/// again, the backend checks that its failed commit did not land after
/// all, so nothing is written twice. A batch the database refuses for its
/// data is written again in parts to find the appends it can never take:
/// those are answered with the error and dropped, the others written;
/// unless the database refuses every row alike, which is waited for like a
/// failure that may pass, holding up only the conversations of the appends
/// it refused (see [`isolate`]).
fn write_loop(
    mut backend: impl Backend,
    rx: &mpsc::Receiver<Encoded>,
    writing: &Writing<'_>,
    in_flight: &InFlight,
    held: &mut Held,
) {
    // Kept batches with no append to carry them are written again after
    // the journal's retry pauses (`retry_pause`).
    let mut pause = retry_pause(None);
    loop {
        let first = if held.kept.is_empty() {
            pause = retry_pause(None);
            match rx.try_recv() {
                Ok(first) => first,
                // Idle once nothing came for a while (work put off till
                // then would slow a burst of appends down).
                Err(mpsc::TryRecvError::Empty) => match rx.recv_timeout(QUIET) {
                    Ok(first) => first,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        backend.idle();
                        match rx.recv() {
                            Ok(first) => first,
                            Err(mpsc::RecvError) => break,
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        } else {
            match rx.recv_timeout(pause) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Kept records of conversations gone quiet.
                    write_kept(&mut backend, held, writing);
                    pause = retry_pause(Some(pause));
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        };
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let answered: usize = batch.iter().map(|e| e.answered).sum();
        held.uncounted = answered;
        let appends = batch.iter().map(|e| e.appends.len()).sum::<usize>();
        if appends > 0 {
            writing
                .stats
                .appends
                .fetch_add(appends as u64, Ordering::Relaxed);
            // Records wait only once a batch failed: an append is never
            // refused for the ones written with it for the first time.
            let failing = held.kept_bytes > 0;
            for mut part in batch {
                refuse_past_full(&mut part, held, writing, failing);
                held.kept.push(part);
            }
            write_kept(&mut backend, held, writing);
        }
        held.uncounted = 0;
        in_flight.end(answered);
    }
    // Closing: one last try for what failed before, then what was put off.
    if !held.kept.is_empty() {
        write_kept(&mut backend, held, writing);
        let appends: usize = held.kept.iter().map(|e| e.appends.len()).sum();
        if appends > 0 {
            tracing::error!(
                appends,
                bytes = held.kept_bytes,
                "the store is closing and its last commit failed: the records of these appends are dropped"
            );
        }
    }
    backend.idle();
}

/// Answers the appends of `part` that cannot be kept: those of a
/// conversation whose records were refused before, and, while the store
/// fails (`failing`: records of batches that failed already wait), any
/// with records whose bytes would take `kept` (those waiting and the
/// appends of this batch before it) past [`Writing::max_kept_bytes`]
/// (their conversation's journal then takes no more: a later append
/// answered `Ok` would claim these records durable). An append with no
/// records is never refused for that, nor any while nothing waits
/// (refusing it would refuse it in a store that works: the limit is on
/// what waits). So `kept` holds at most the limit, or the one batch that
/// met the store failing first. Counts the others' bytes in.
fn refuse_past_full(part: &mut Encoded, held: &mut Held, writing: &Writing<'_>, failing: bool) {
    let before = part.appends.len();
    part.appends.retain_mut(|append| {
        let bytes = append_bytes(append);
        let full = failing
            && append.count > 0
            && held.kept_bytes.saturating_add(bytes) > writing.max_kept_bytes;
        if full && !held.refused.contains_key(&append.conversation) {
            tracing::error!(
                conversation = %append.conversation,
                kept_bytes = held.kept_bytes,
                bytes,
                max_bytes = writing.max_kept_bytes,
                "the store keeps failing and this conversation's records would pass the most it may keep: they are refused, its journal takes no more"
            );
            held.refused.insert(
                append.conversation.clone(),
                StoreError::KeptFull {
                    location: writing.location.clone(),
                    conversation: append.conversation.clone(),
                    kept_bytes: held.kept_bytes,
                    bytes,
                    max_bytes: writing.max_kept_bytes,
                },
            );
        }
        if let Some(error) = held.refused.get(&append.conversation) {
            if let Some(reply) = append.reply.take() {
                let _ = reply.send(Err(error.clone()));
            }
            false
        } else {
            held.kept_bytes += bytes;
            true
        }
    });
    // The task changes of the refused appends: recomputed from those left.
    if part.appends.len() < before {
        part.tasks = tasks_of(&part.appends, writing);
    }
}

/// The task changes of `appends`, folded from their rows (decoded again:
/// only on the rare paths that rebuild a part); none if the backend does
/// not write them ([`Writing::task_changes`]).
fn tasks_of(appends: &[Append], writing: &Writing<'_>) -> TaskChanges {
    let mut tasks = TaskChanges::default();
    if !writing.task_changes {
        return tasks;
    }
    let location = writing.location;
    for append in appends {
        let mut records = Vec::with_capacity(append.count);
        for row in &append.rows {
            // Rows the encoder made: they decode.
            if let Err(error) = crate::snapshot::decode_row(
                location,
                &append.conversation,
                0,
                &row.text,
                &mut records,
            ) {
                tracing::error!(%error, "a row the writer encoded does not decode");
            }
        }
        tasks.add(&append.conversation, &records);
    }
    tasks
}

/// Answers the appends of `parts` not answered yet with `result`.
fn answer(parts: &mut [Encoded], result: &Result<(), StoreError>) {
    for append in parts.iter_mut().flat_map(|e| &mut e.appends) {
        if let Some(reply) = append.reply.take() {
            let _ = reply.send(result.clone());
        }
    }
}

/// Writes `held.kept` in one transaction (its first `held.tried` parts
/// failed before, the rest are new) and answers the appends not answered
/// yet. Empties it once committed; keeps it if the commit failed for a
/// reason that may pass; if the database refused its data, writes it again
/// in parts to drop only the appends it can never take (keeping those of
/// the conversations it refused if it refuses every row: [`isolate`]).
fn write_kept(backend: &mut impl Backend, held: &mut Held, writing: &Writing<'_>) {
    if held.tried > 0 {
        match backend.committed_after_all(&held.kept[..held.tried]) {
            Ok(false) => {}
            Ok(true) => {
                // The failed commit landed: only what came since is new.
                // (Its appends were answered with the failure already.)
                tracing::warn!(
                    "a journal commit reported as failed had landed; it is not written again"
                );
                committed(held, held.tried, writing.stats);
            }
            Err(error) => {
                // Not known whether it landed: ask again next time (what
                // was tried and its last row stay as they are), on a fresh
                // connection if this one is gone.
                tracing::error!(%error, "cannot tell whether a failed journal commit landed; its records wait");
                backend.rolled_back();
                answer(&mut held.kept, &Err(error));
                return;
            }
        }
    }
    held.tried = held.kept.len();
    match backend.write_batch(&held.kept) {
        Ok(()) => {
            committed(held, held.kept.len(), writing.stats);
        }
        Err(WriteError { error, data: false }) => {
            // Callers that dropped their future hear of it only here.
            let appends: usize = held.kept.iter().map(|e| e.appends.len()).sum();
            tracing::error!(%error, appends, "journal commit failed; its records are written again with the next batch, or shortly");
            backend.rolled_back();
            answer(&mut held.kept, &Err(*error));
        }
        Err(WriteError { error, data: true }) => {
            backend.rolled_back();
            held.tried = 0;
            tracing::warn!(%error, "the database refused a journal batch's data; its appends are written again in parts to find those it cannot take");
            isolate(backend, held, writing);
        }
    }
}

/// The first `n` parts of `held.kept` committed (in one transaction):
/// answers them and lets them go.
fn committed(held: &mut Held, n: usize, stats: &StoreStats) {
    stats.transactions.fetch_add(1, Ordering::Relaxed);
    let records: usize = held.kept[..n]
        .iter()
        .flat_map(|e| &e.appends)
        .map(|a| a.count)
        .sum();
    stats.records.fetch_add(records as u64, Ordering::Relaxed);
    answer(&mut held.kept[..n], &Ok(()));
    let done: Vec<Encoded> = held.kept.drain(..n).collect();
    forget(held, &done);
    held.tried = 0;
}

/// Counts the bytes of `parts`, no longer kept, out.
fn forget(held: &mut Held, parts: &[Encoded]) {
    let bytes: usize = parts
        .iter()
        .flat_map(|e| &e.appends)
        .map(append_bytes)
        .sum();
    held.kept_bytes = held.kept_bytes.saturating_sub(bytes);
}

/// `held.kept` was refused for its data: writes it again one append a
/// part, halves of it at a time, to find the appends the database refuses
/// alone. When one is, its conversation is a suspect: all of its appends
/// are set aside (a conversation's later appends never land before its
/// earlier ones), and the others are written without them, so that a
/// suspect never holds another conversation up. Once nothing is left to
/// write, each suspect is judged ([`judge`]): refused for its data if the
/// database takes rows (it took some in this pass, or it takes the probe),
/// else kept to wait, as the database refuses every row alike. Stops,
/// keeping the rest and what was set aside, on a failure that may pass.
///
/// A try costs the halvings down to each suspect's first append (about
/// log₂ of the appends kept each) and, if nothing landed, up to two
/// probes: while the database refuses every row, every conversation with
/// kept appends is a suspect at each try.
fn isolate(backend: &mut impl Backend, held: &mut Held, writing: &Writing<'_>) {
    let parts = std::mem::take(&mut held.kept);
    for part in parts {
        if part.appends.len() <= 1 {
            held.kept.push(part);
            continue;
        }
        for append in part.appends {
            let one = vec![append];
            held.kept.push(Encoded {
                tasks: tasks_of(&one, writing),
                appends: one,
                answered: 0,
            });
        }
    }
    // The parts of the suspects' conversations, in order.
    let mut aside: Vec<Encoded> = Vec::new();
    let mut suspects: Vec<Suspect> = Vec::new();
    let mut landed = Landed::default();
    // How many parts from the front to write together next, innermost last.
    let mut groups = vec![held.kept.len()];
    while let Some(n) = groups.pop() {
        if n == 0 {
            continue;
        }
        held.tried = n;
        match backend.write_batch(&held.kept[..n]) {
            Ok(()) => {
                landed.add(&held.kept[..n]);
                committed(held, n, writing.stats);
            }
            Err(WriteError { error, data: false }) => {
                tracing::error!(%error, "journal commit failed; its records are written again with the next batch, or shortly");
                backend.rolled_back();
                // What was set aside waits too, after the parts just tried
                // (whether they landed after all is asked first).
                held.kept.append(&mut aside);
                answer(&mut held.kept, &Err(*error));
                return;
            }
            Err(WriteError { data: true, .. }) if n > 1 => {
                backend.rolled_back();
                held.tried = 0;
                let first = n / 2;
                groups.push(n - first);
                groups.push(first);
            }
            Err(WriteError { error, data: true }) => {
                backend.rolled_back();
                held.tried = 0;
                let Some(append) = held.kept[0].appends.first() else {
                    // A part with nothing to write (not expected to be
                    // refused): let go.
                    held.kept.remove(0);
                    groups = vec![held.kept.len()];
                    continue;
                };
                let conversation = append.conversation.clone();
                let tasks = !held.kept[0].tasks.changes.is_empty();
                let parts = std::mem::take(&mut held.kept);
                let (theirs, others) = parts.into_iter().partition::<Vec<_>, _>(|p| {
                    p.appends.iter().any(|a| a.conversation == conversation)
                });
                held.kept = others;
                let start = aside.len();
                aside.extend(theirs);
                suspects.push(Suspect {
                    conversation,
                    tasks,
                    error: *error,
                    parts: start..aside.len(),
                });
                // The others, from the front again.
                groups = vec![held.kept.len()];
            }
        }
    }
    judge(backend, held, writing, aside, suspects, &landed);
}

/// A conversation one of whose appends the database refused alone, its
/// first kept one (see [`isolate`]).
struct Suspect {
    conversation: String,
    /// Whether that append changes the task table.
    tasks: bool,
    /// Why the database refused it.
    error: StoreError,
    /// Where its conversation's parts are in the parts set aside.
    parts: std::ops::Range<usize>,
}

/// What landed in one [`isolate`] pass: whether the database took rows of
/// `events`, and rows of the task table (a task created or created again:
/// an update may match no row, so it proves nothing).
#[derive(Default)]
struct Landed {
    events: bool,
    tasks: bool,
}

impl Landed {
    fn add(&mut self, parts: &[Encoded]) {
        for part in parts {
            self.events |= part.appends.iter().any(|a| a.count > 0);
            self.tasks |= part
                .tasks
                .changes
                .iter()
                .any(|(_, _, change)| matches!(change, TaskChange::Row(_)));
        }
    }

    /// Whether what landed shows that the database takes the rows such an
    /// append writes (its task rows too if it has task changes).
    fn shows(&self, tasks: bool) -> bool {
        self.events && (self.tasks || !tasks)
    }
}

/// What [`judge`] finds of a suspect.
#[derive(Clone)]
enum Verdict {
    /// The database takes rows: the append's data is at fault.
    Data,
    /// The database refused the probe as well (its reason).
    EveryRow(String),
    /// The probe failed for a reason that may pass.
    Unknown(StoreError),
}

/// Judges each suspect [`isolate`] set aside (its conversation's parts in
/// `aside`), once nothing else is left to write. If the database takes
/// rows (`landed` shows it took such rows in this pass, or, if not, it
/// takes the probe, [`Backend::probe`]), the suspect's first append was
/// refused for its data: it is answered with [`StoreError::Refused`] and
/// dropped, with the conversation's later appends, and the conversation's
/// journal takes no more. If the probe is refused too, the database
/// refuses every row alike (an administrator's change to its tables):
/// nothing of the suspect's is dropped, its appends are answered with
/// [`StoreError::RefusesEveryRow`], a failure that may pass, and wait in
/// `held.kept` for the next try, as they do if the probe fails for a
/// reason that may pass. Either way only the suspect's own appends are
/// held: a wrong verdict harms no other conversation, and is righted at
/// the next try in which another conversation's append lands.
fn judge(
    backend: &mut impl Backend,
    held: &mut Held,
    writing: &Writing<'_>,
    mut aside: Vec<Encoded>,
    suspects: Vec<Suspect>,
    landed: &Landed,
) {
    // The probe's answers, without and with task rows.
    let mut probes: [Option<Verdict>; 2] = [None, None];
    // The conversations found waiting for a database refusing every row,
    // and their appends, to log once.
    let mut waiting = (0, 0);
    for suspect in suspects {
        let parts = &mut aside[suspect.parts.clone()];
        let verdict = if landed.shows(suspect.tasks) {
            Verdict::Data
        } else {
            let probe = probes[usize::from(suspect.tasks)].get_or_insert_with(|| {
                let verdict = match backend.probe(&suspect.conversation, suspect.tasks) {
                    Ok(()) => return Verdict::Data,
                    Err(WriteError { error, data: true }) => Verdict::EveryRow(error.reason()),
                    Err(WriteError { error, data: false }) => Verdict::Unknown(*error),
                };
                backend.rolled_back();
                verdict
            });
            probe.clone()
        };
        match verdict {
            Verdict::Data => {
                let conversation = suspect.conversation;
                let error = &suspect.error;
                tracing::error!(%error, %conversation, "the database cannot take an append's records, though it takes other rows: they are dropped, and the conversation's journal takes no more");
                let refusal = StoreError::Refused {
                    location: writing.location.clone(),
                    conversation: conversation.clone(),
                    message: error.reason(),
                };
                answer(parts, &Err(refusal.clone()));
                forget(held, parts);
                for part in parts {
                    part.appends.clear();
                }
                held.refused.insert(conversation, refusal);
            }
            Verdict::EveryRow(probe) => {
                let error = suspect.error;
                if waiting.0 == 0 {
                    tracing::error!(%error, %probe, conversation = %suspect.conversation, "the database refuses every journal row alike, a row it took before and a minimal one too: the fault is its own (a column, a constraint or a trigger added to its tables?), not the records'; they are kept and written again shortly");
                }
                waiting.0 += 1;
                waiting.1 += parts.iter().map(|e| e.appends.len()).sum::<usize>();
                let every_row = StoreError::RefusesEveryRow {
                    location: writing.location.clone(),
                    message: error.reason(),
                };
                answer(parts, &Err(every_row));
            }
            Verdict::Unknown(error) => {
                tracing::error!(%error, conversation = %suspect.conversation, "cannot tell whether the database takes any journal row; the records wait and are written again with the next batch, or shortly");
                answer(parts, &Err(error));
            }
        }
    }
    if waiting.0 > 1 {
        let (conversations, appends) = waiting;
        tracing::error!(
            conversations,
            appends,
            "the records of these conversations wait for the database to take rows again"
        );
    }
    // What was not dropped waits, in order.
    held.kept
        .extend(aside.into_iter().filter(|part| !part.appends.is_empty()));
}

/// The time of a batch's commit, for its rows' `at_ms`: now (a test of
/// the crate may fix it for one `store`, named as it displays).
pub(crate) fn commit_ms(store: &dyn std::fmt::Display) -> i64 {
    #[cfg(test)]
    if let Some(ms) = seam::fixed_ms(&store.to_string()) {
        return ms;
    }
    #[cfg(not(test))]
    let _ = store;
    now_ms()
}

/// Milliseconds since the Unix epoch, for the rows' `at_ms`.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A test's hold on the encoder: what it does before it encodes an append
/// of a given conversation (panic, or wait to be told to go on).
#[cfg(test)]
pub(crate) mod seam {
    use std::sync::{Arc, Mutex, PoisonError};

    type Hook = Arc<dyn Fn() + Send + Sync>;

    static HOOKS: Mutex<Vec<(String, Hook)>> = Mutex::new(Vec::new());

    static CLOCKS: Mutex<Vec<(String, i64)>> = Mutex::new(Vec::new());

    /// Fixes the time of every commit to `store` (as it displays) at `ms`.
    pub(crate) fn fix_commit_ms(store: &str, ms: i64) {
        let mut clocks = CLOCKS.lock().unwrap_or_else(PoisonError::into_inner);
        clocks.push((store.to_owned(), ms));
    }

    pub(super) fn fixed_ms(store: &str) -> Option<i64> {
        let clocks = CLOCKS.lock().unwrap_or_else(PoisonError::into_inner);
        clocks.iter().find(|(s, _)| s == store).map(|(_, ms)| *ms)
    }

    /// Runs `hook` on the encoder before each append of `conversation`
    /// (a name of the test's own: tests run at once).
    pub(super) fn on_encoding(conversation: &str, hook: impl Fn() + Send + Sync + 'static) {
        let mut hooks = HOOKS.lock().unwrap_or_else(PoisonError::into_inner);
        hooks.push((conversation.to_owned(), Arc::new(hook)));
    }

    pub(super) fn before_encoding(conversation: &str) {
        let hook = HOOKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(c, _)| c == conversation)
            .map(|(_, hook)| Arc::clone(hook));
        if let Some(hook) = hook {
            hook();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose first write waits to be told to go, then panics.
    struct Panicking {
        entered: mpsc::Sender<()>,
        go: mpsc::Receiver<()>,
    }

    impl Panicking {
        /// A writer over a `Panicking` backend at `name`; the receiver
        /// hears when its write begins, the sender lets it panic.
        fn writer(name: &str) -> (GroupWriter, mpsc::Receiver<()>, mpsc::Sender<()>) {
            let (entered_tx, entered) = mpsc::channel();
            let (go, go_rx) = mpsc::channel();
            let location = StoreLocation::File(name.into());
            let writer = GroupWriter::spawn(location, move || {
                Ok(Panicking {
                    entered: entered_tx,
                    go: go_rx,
                })
            })
            .unwrap();
            (writer, entered, go)
        }
    }

    impl Backend for Panicking {
        fn write_batch(&mut self, _: &[Encoded]) -> Result<(), WriteError> {
            let _ = self.entered.send(());
            let _ = self.go.recv();
            panic!("disk on fire");
        }

        fn rolled_back(&mut self) {}

        fn committed_after_all(&mut self, _: &[Encoded]) -> Result<bool, StoreError> {
            Ok(false)
        }

        fn max_row_bytes(&self) -> usize {
            usize::MAX
        }

        fn probe(&mut self, _: &str, _: bool) -> Result<(), WriteError> {
            Ok(())
        }
    }

    fn input(text: &str) -> Vec<JournalRecord> {
        vec![JournalRecord::UserInput { text: text.into() }]
    }

    /// The writer thread panics with one append in its hands and more
    /// queued behind it: each of them, and every later one, fails at once
    /// saying why; none is left counted in flight (what the clock holds of
    /// a runtime, and dropping the runtime, wait for).
    #[test]
    fn a_writer_that_panics_fails_every_append_with_why() {
        let (writer, entered, go) = Panicking::writer("panics.db");
        let mut pending = vec![writer.journal_append("c", input("first"))];
        entered.recv().unwrap();
        pending.extend((0..3).map(|i| writer.journal_append("c", input(&format!("queued {i}")))));
        go.send(()).unwrap();
        all_fail_stopped(
            &writer,
            pending,
            "panics.db: the store's writer has stopped",
            "its writer thread panicked: disk on fire",
        );
        let in_flight = Arc::clone(&writer.in_flight);
        drop(writer);
        assert_eq!(
            *in_flight.count.lock().unwrap(),
            0,
            "appends left counted in flight"
        );
    }

    /// Checks, once the store is dropped, that no append is left counted in
    /// flight and none was counted out twice.
    fn assert_counted_out(writer: GroupWriter) {
        let in_flight = Arc::clone(&writer.in_flight);
        drop(writer);
        assert_eq!(
            *in_flight.count.lock().unwrap(),
            0,
            "appends left counted in flight"
        );
        assert_eq!(
            in_flight.overcounted.load(Ordering::Relaxed),
            0,
            "appends counted out twice"
        );
    }

    /// The writer thread dies while the encoder is encoding an append: that
    /// append fails with why once handed on, and every append is counted
    /// out once. (Before, the dying writer set the count to 0 and the
    /// encoder then counted out again what it held, so the count could
    /// reach 0 with appends still in flight.)
    #[test]
    fn after_the_writer_dies_each_append_is_counted_out_once() {
        let (writer, entered, go) = Panicking::writer("counts.db");
        let (stalled_tx, stalled) = mpsc::channel();
        let (resume, resume_rx) = mpsc::channel::<()>();
        let (stalled_tx, resume_rx) = (Mutex::new(stalled_tx), Mutex::new(resume_rx));
        seam::on_encoding("counted out once", move || {
            let _ = stalled_tx.lock().unwrap().send(());
            let _ = resume_rx.lock().unwrap().recv();
        });
        let first = writer.journal_append("c", input("first"));
        entered.recv().unwrap();
        let second = writer.journal_append("counted out once", input("second"));
        stalled.recv().unwrap();
        go.send(()).unwrap();
        assert!(futures::executor::block_on(first).is_err());
        // Until the dead writer has counted out the append it held.
        while *writer.in_flight.count.lock().unwrap() > 1 {
            std::thread::yield_now();
        }
        resume.send(()).unwrap();
        let error = futures::executor::block_on(second).unwrap_err().to_string();
        assert!(
            error.contains("its writer thread panicked: disk on fire"),
            "{error}"
        );
        assert_counted_out(writer);
    }

    /// The encoder thread panics with one append in its hands and more
    /// queued behind it: each of them, and every later one, fails at once
    /// saying why; nothing is written; dropping the store does not wait
    /// for them, and none is left counted in flight.
    #[test]
    fn an_encoder_that_panics_fails_every_append_with_why() {
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let (entered_tx, go_rx) = (Mutex::new(entered_tx), Mutex::new(go_rx));
        seam::on_encoding("encoder panics", move || {
            let _ = entered_tx.lock().unwrap().send(());
            let _ = go_rx.lock().unwrap().recv();
            panic!("encoder on fire");
        });
        let db = Arc::new(Mutex::new(Db::default()));
        let writer = writer(&db);
        let mut pending = vec![writer.journal_append("encoder panics", input("first"))];
        entered.recv().unwrap();
        pending.extend((0..3).map(|i| writer.journal_append("c", input(&format!("queued {i}")))));
        go.send(()).unwrap();
        all_fail_stopped(
            &writer,
            pending,
            "fake: the store's writer has stopped",
            "its encoder thread panicked: encoder on fire",
        );
        assert_counted_out(writer);
        assert!(texts(&db).is_empty(), "{:?}", texts(&db));
    }

    /// Opening the backend (for PostgreSQL: connecting, migrating, filling
    /// the task table) panics: the store is not opened, and the error says
    /// why instead of only that the writer stopped.
    #[test]
    fn a_backend_that_panics_while_opening_is_a_clear_error() {
        let location = StoreLocation::File("opens.db".into());
        let result = GroupWriter::spawn(location, || -> Result<Fake, StoreError> {
            panic!("migration on fire")
        });
        let Err(error) = result else {
            panic!("the store opened")
        };
        let message = error.to_string();
        assert!(
            message.starts_with("opens.db: ")
                && message.contains("panicked while opening the store: migration on fire"),
            "{message}"
        );
    }

    /// Every append of `pending`, and three made now, fail as a closed
    /// journal whose message holds `store` and `why`.
    fn all_fail_stopped(
        writer: &GroupWriter,
        pending: Vec<BoxFuture<'static, Result<(), JournalError>>>,
        store: &str,
        why: &str,
    ) {
        let later = (0..3).map(|i| writer.journal_append("c", input(&format!("later {i}"))));
        for result in pending
            .into_iter()
            .chain(later)
            .map(futures::executor::block_on)
        {
            let error = result.unwrap_err();
            assert!(error.is_closed(), "{error}");
            let message = error.message();
            assert!(
                message.contains(store) && message.contains(why),
                "{message}"
            );
        }
    }

    /// What the fake database holds, and how its next commits go.
    #[derive(Default)]
    struct Db {
        /// Committed rows: (conversation, the row's text).
        rows: Vec<(String, String)>,
        /// Batches still to fail before their commit.
        fail: usize,
        /// Batches still to commit but report failing (a lost answer).
        lose_answer: usize,
        /// The rows of the latest batch: whether they landed is asked later.
        last: Vec<(String, String)>,
        /// The most a row holds (none if `None`): a batch with a larger
        /// row fails.
        max_row: Option<usize>,
        /// Checks (`committed_after_all`) still to fail (connection down).
        check_fail: usize,
        /// A conversation whose rows the database refuses for their data
        /// (a constraint): a batch holding one fails, for good.
        refuse: Option<String>,
        /// A text the database refuses in any row, as `refuse` does.
        refuse_text: Option<String>,
        /// The database refuses every row for its data, a row it took
        /// before too (a column an administrator added).
        refuse_all: bool,
        /// The probe is refused though the database takes other rows (the
        /// row it copies breaks the same constraint as the data refused).
        probe_refused: bool,
        /// The task table refuses every row (it is written in the batch's
        /// transaction, as PostgreSQL does), the events table takes rows.
        refuse_tasks: bool,
        /// The probes made ([`Backend::probe`]).
        probes: usize,
        /// The batches written (committed or not), as their appends'
        /// conversations.
        writes: Vec<Vec<String>>,
    }

    struct Fake(Arc<Mutex<Db>>);

    impl Backend for Fake {
        fn write_batch(&mut self, batch: &[Encoded]) -> Result<(), WriteError> {
            let mut db = self.0.lock().unwrap();
            let conversations = batch
                .iter()
                .flat_map(|e| &e.appends)
                .map(|a| a.conversation.clone())
                .collect();
            db.writes.push(conversations);
            let rows: Vec<(String, String)> = batch
                .iter()
                .flat_map(|e| &e.appends)
                .filter(|a| a.count > 0)
                .flat_map(|a| {
                    a.rows
                        .iter()
                        .map(|r| (a.conversation.clone(), r.text.clone()))
                })
                .collect();
            db.last.clone_from(&rows);
            let failure = StoreError::Io {
                location: StoreLocation::File("fake".into()),
                message: "the disk is full".into(),
            };
            if db.fail > 0 {
                db.fail -= 1;
                return Err(failure.into());
            }
            if let Some(max) = db.max_row {
                if rows.iter().any(|(c, r)| c.len() + r.len() > max) {
                    return Err(failure.into());
                }
            }
            if db.refuse_all && !rows.is_empty() {
                return Err(Fake::refused_all());
            }
            if db.refuse_tasks && batch.iter().any(|e| !e.tasks.changes.is_empty()) {
                return Err(Fake::refused_all());
            }
            let poisoned = |r: &String| db.refuse_text.as_ref().is_some_and(|t| r.contains(t));
            if rows
                .iter()
                .any(|(c, r)| Some(c) == db.refuse.as_ref() || poisoned(r))
            {
                return Err(WriteError {
                    error: Box::new(StoreError::Io {
                        location: StoreLocation::File("fake".into()),
                        message: "a check constraint refused a row".into(),
                    }),
                    data: true,
                });
            }
            db.rows.extend(rows);
            if db.lose_answer > 0 {
                db.lose_answer -= 1;
                return Err(failure.into());
            }
            Ok(())
        }

        fn rolled_back(&mut self) {}

        fn committed_after_all(&mut self, _: &[Encoded]) -> Result<bool, StoreError> {
            let mut db = self.0.lock().unwrap();
            if db.check_fail > 0 {
                db.check_fail -= 1;
                return Err(StoreError::Io {
                    location: StoreLocation::File("fake".into()),
                    message: "connection refused".into(),
                });
            }
            Ok(!db.last.is_empty() && db.rows.ends_with(&db.last))
        }

        fn max_row_bytes(&self) -> usize {
            self.0.lock().unwrap().max_row.unwrap_or(usize::MAX)
        }

        fn probe(&mut self, _: &str, tasks: bool) -> Result<(), WriteError> {
            let mut db = self.0.lock().unwrap();
            db.probes += 1;
            if db.refuse_all || db.probe_refused || (tasks && db.refuse_tasks) {
                return Err(Fake::refused_all());
            }
            Ok(())
        }
    }

    impl Fake {
        /// What the database says when it refuses every row.
        fn refused_all() -> WriteError {
            WriteError {
                error: Box::new(StoreError::Io {
                    location: StoreLocation::File("fake".into()),
                    message: "NOT NULL constraint failed: events.tenant".into(),
                }),
                data: true,
            }
        }
    }

    fn writer(db: &Arc<Mutex<Db>>) -> GroupWriter {
        let db = Arc::clone(db);
        GroupWriter::spawn(StoreLocation::File("fake".into()), move || Ok(Fake(db))).unwrap()
    }

    /// The input texts of `conversation`'s rows, in the order written.
    fn texts_of(db: &Arc<Mutex<Db>>, conversation: &str) -> Vec<String> {
        db.lock()
            .unwrap()
            .rows
            .iter()
            .filter(|(c, _)| c == conversation)
            .map(|(_, row)| match serde_json::from_str(row) {
                Ok(JournalRecord::UserInput { text }) => text,
                _ => panic!("not one input: {row}"),
            })
            .collect()
    }

    fn texts(db: &Arc<Mutex<Db>>) -> Vec<String> {
        db.lock()
            .unwrap()
            .rows
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The rows written hold the inputs `expected`, in order, each once.
    fn assert_rows_hold(db: &Arc<Mutex<Db>>, expected: &[&str]) {
        let rows = texts(db);
        assert_eq!(rows.len(), expected.len(), "{rows:?}");
        for (row, text) in rows.iter().zip(expected) {
            assert!(row.contains(&format!("\"{text}\"")), "{rows:?}");
        }
    }

    #[test]
    fn a_failed_append_is_written_ahead_of_the_next_and_an_empty_one_waits_for_it() {
        let db = Arc::new(Mutex::new(Db {
            fail: 2,
            ..Db::default()
        }));
        let writer = writer(&db);
        let block = futures::executor::block_on;
        assert!(block(writer.journal_append("c", input("a"))).is_err());
        assert!(texts(&db).is_empty());
        // The next append fails too: both wait, neither is withdrawn.
        assert!(block(writer.journal_append("c", input("b"))).is_err());
        // An empty append goes through a commit: Ok once all before it is in.
        assert_eq!(block(writer.journal_append("c", Vec::new())), Ok(()));
        let rows = texts(&db);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(
            rows[0].contains("\"a\"") && rows[1].contains("\"b\""),
            "{rows:?}"
        );
        assert_eq!(block(writer.journal_append("c", input("c"))), Ok(()));
        assert_eq!(texts(&db).len(), 3, "nothing written twice");
    }

    #[test]
    fn a_commit_that_landed_though_it_was_reported_failed_is_not_written_again() {
        let db = Arc::new(Mutex::new(Db {
            lose_answer: 1,
            ..Db::default()
        }));
        let writer = writer(&db);
        let block = futures::executor::block_on;
        assert!(block(writer.journal_append("c", input("a"))).is_err());
        assert_eq!(block(writer.journal_append("c", input("b"))), Ok(()));
        let rows = texts(&db);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(
            rows[0].contains("\"a\"") && rows[1].contains("\"b\""),
            "{rows:?}"
        );
        assert_eq!(writer.stats().records(), 2, "the landed record counts");
    }

    /// A record larger than a row of the store holds can never be written:
    /// its append is refused saying so, and not kept (it would fail every
    /// later batch, for good); the appends around it are written.
    #[test]
    fn a_record_larger_than_a_row_holds_is_refused_not_kept() {
        let db = Arc::new(Mutex::new(Db {
            max_row: Some(1_000),
            ..Db::default()
        }));
        let writer = writer(&db);
        let block = futures::executor::block_on;
        assert_eq!(block(writer.journal_append("c", input("a"))), Ok(()));
        let huge = vec![
            JournalRecord::UserInput { text: "b".into() },
            JournalRecord::UserInput {
                text: "x".repeat(1_000),
            },
        ];
        let error = block(writer.journal_append("c", huge)).unwrap_err();
        // Its records are lost: the conversation's journal takes no more
        // (a later `Ok` would claim them durable); others go on.
        assert!(error.is_closed(), "{error}");
        let message = error.message();
        assert!(
            message.starts_with("fake: a record of `c` could not be encoded: it is ")
                && message
                    .ends_with(" bytes of JSON, more than a row of this store holds (1000 bytes)"),
            "{message}"
        );
        let later = block(writer.journal_append("c", input("c"))).unwrap_err();
        assert_eq!(later, error);
        assert_eq!(block(writer.journal_append("d", input("d"))), Ok(()));
        let rows = texts(&db);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows[1].contains("\"d\""), "{rows:?}");
    }

    #[test]
    fn what_failed_last_is_tried_once_more_on_close() {
        let db = Arc::new(Mutex::new(Db {
            fail: 1,
            ..Db::default()
        }));
        let writer = writer(&db);
        assert!(futures::executor::block_on(writer.journal_append("c", input("a"))).is_err());
        drop(writer);
        assert_eq!(texts(&db).len(), 1);
    }

    /// A commit lands but its answer is lost (the server went down); the
    /// check before the next write fails too (still down): an append made
    /// meanwhile is not dropped with the batch that landed. (Before, the
    /// parts to drop once the check found the commit had landed were all
    /// those kept, the append made while the check failed included: it
    /// was answered `Ok` by the next append and never written.)
    #[test]
    fn an_append_made_while_the_check_fails_is_not_dropped() {
        let db = Arc::new(Mutex::new(Db {
            lose_answer: 1,
            check_fail: 1,
            ..Db::default()
        }));
        let writer = writer(&db);
        let block = futures::executor::block_on;
        assert!(block(writer.journal_append("c", input("a"))).is_err());
        assert!(block(writer.journal_append("c", input("b"))).is_err());
        assert_eq!(block(writer.journal_append("c", input("c"))), Ok(()));
        assert_rows_hold(&db, &["a", "b", "c"]);
    }

    /// An append the database can never take (its data breaks a
    /// constraint) fails alone, with the database's error, and is not
    /// kept: the appends of its batch around it, and later ones, are
    /// written. (Before, it was kept and went ahead of every later batch,
    /// failing all of them for good.)
    #[test]
    fn an_append_the_database_refuses_for_its_data_fails_alone() {
        let db = Arc::new(Mutex::new(Db {
            refuse_text: Some("poison".into()),
            ..Db::default()
        }));
        let writer = writer(&db);
        let block = futures::executor::block_on;
        // Queued at once, so that they share batches: "poison" is refused;
        // the appends of its conversation after it must not be written
        // either (the log would have a hole that a later `Ok` papers over),
        // those of other conversations are.
        let pending: Vec<_> = [
            ("good", "a"),
            ("bad", "b"),
            ("bad", "poison"),
            ("bad", "d"),
            ("good", "e"),
        ]
        .iter()
        .map(|(conversation, t)| writer.journal_append(conversation, input(t)))
        .collect();
        let results: Vec<_> = pending.into_iter().map(block).collect();
        for (i, result) in results.iter().enumerate() {
            if i == 2 || i == 3 {
                let error = result.as_ref().unwrap_err();
                assert!(error.is_closed(), "the journal takes no more: {error}");
                assert!(
                    error.message().contains("a check constraint refused a row")
                        && error.message().contains("`bad`"),
                    "{error}"
                );
            } else {
                assert_eq!(*result, Ok(()), "append {i}");
            }
        }
        let later = block(writer.journal_append("bad", input("f"))).unwrap_err();
        assert!(later.is_closed(), "{later}");
        assert_eq!(block(writer.journal_append("good", input("g"))), Ok(()));
        assert_rows_hold(&db, &["a", "b", "e", "g"]);
    }

    /// Records kept after a failure are written again after a pause even
    /// when no later append comes to carry them (a conversation gone
    /// quiet).
    #[test]
    fn kept_records_are_written_again_without_a_later_append() {
        let db = Arc::new(Mutex::new(Db {
            fail: 2,
            ..Db::default()
        }));
        let writer = writer(&db);
        assert!(futures::executor::block_on(writer.journal_append("c", input("a"))).is_err());
        // The tries after 200 ms (fails) and 400 ms more (lands); waits
        // for the event, not for a time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while texts(&db).is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written again");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(texts(&db).len(), 1);
        assert_eq!(db.lock().unwrap().writes.len(), 3, "one write, two retries");
        assert_eq!(
            futures::executor::block_on(writer.journal_append("c", Vec::new())),
            Ok(())
        );
        assert_eq!(texts(&db).len(), 1, "nothing written twice");
    }

    /// While the store fails, the writer keeps at most so many bytes of
    /// records: an append with records that would take them past it is
    /// refused, its conversation's journal closed for good (its records are
    /// lost, so a later `Ok` would lie), and the other conversations go on
    /// once the store works again. An empty append is never refused for
    /// that. (Before, the kept records grew without bound; then, an append
    /// was refused only once they had reached the limit, so the one before
    /// could take them past it by any amount.)
    #[test]
    fn past_the_kept_limit_appends_are_refused_and_their_journal_closed() {
        let db = Arc::new(Mutex::new(Db {
            fail: usize::MAX,
            ..Db::default()
        }));
        let fake = Arc::clone(&db);
        // Each append here is one row of 35 bytes (34 of JSON, 1 of name).
        let writer =
            GroupWriter::spawn_keeping(StoreLocation::File("fake".into()), 80, move || {
                Ok(Fake(fake))
            })
            .unwrap();
        let block = futures::executor::block_on;
        let error = block(writer.journal_append("c", input("a"))).unwrap_err();
        assert!(!error.is_closed(), "kept, not refused: {error}");
        let error = block(writer.journal_append("d", input("b"))).unwrap_err();
        assert!(!error.is_closed(), "70 bytes kept, not refused: {error}");
        // 105 bytes would pass the 80 kept at most (70 do not reach it).
        let error = block(writer.journal_append("e", input("c"))).unwrap_err();
        assert!(error.is_closed(), "{error}");
        assert!(
            error.message().starts_with(
                "fake: the store keeps failing and 70 bytes of journal records already wait in memory; 35 more would pass the most it keeps (80): records of `e` were refused and are lost"
            ),
            "{error}"
        );
        // An empty append is kept to wait, not refused.
        let error = block(writer.journal_append("f", Vec::new())).unwrap_err();
        assert!(!error.is_closed(), "{error}");
        db.lock().unwrap().fail = 0;
        // `c` and `d` are written; `e` takes no more, even empty appends.
        assert_eq!(block(writer.journal_append("c", Vec::new())), Ok(()));
        assert!(block(writer.journal_append("e", Vec::new()))
            .unwrap_err()
            .is_closed());
        assert!(block(writer.journal_append("e", input("x")))
            .unwrap_err()
            .is_closed());
        assert_eq!(block(writer.journal_append("g", input("d"))), Ok(()));
        assert_rows_hold(&db, &["a", "b", "d"]);
    }

    /// One append alone, larger than the kept limit, with nothing else
    /// kept: it is kept (refusing it would refuse it in a store that
    /// works), and written once the store works.
    #[test]
    fn an_append_alone_larger_than_the_kept_limit_is_kept() {
        let db = Arc::new(Mutex::new(Db {
            fail: 1,
            ..Db::default()
        }));
        let fake = Arc::clone(&db);
        let writer =
            GroupWriter::spawn_keeping(StoreLocation::File("fake".into()), 10, move || {
                Ok(Fake(fake))
            })
            .unwrap();
        let block = futures::executor::block_on;
        let error = block(writer.journal_append("c", input("a"))).unwrap_err();
        assert!(!error.is_closed(), "kept, not refused: {error}");
        assert_eq!(block(writer.journal_append("c", Vec::new())), Ok(()));
        assert_eq!(texts(&db).len(), 1);
    }

    /// The database refuses every row for its data, a row it took before
    /// too (an administrator added a `NOT NULL` column): the fault is the
    /// database's, not the records'. Nothing is refused or dropped and no
    /// journal is closed: every append, in a batch of several or alone,
    /// fails with an error that may pass, its records are kept, and once
    /// the database takes rows again they land, each conversation's in
    /// order, and the journals go on. (Before, each append was refused
    /// alone, and the journal of every conversation that wrote was closed.)
    #[test]
    fn a_database_refusing_every_row_keeps_the_records_and_the_journals_open() {
        let db = Arc::new(Mutex::new(Db {
            refuse_all: true,
            ..Db::default()
        }));
        let writer = writer(&db);
        let block = futures::executor::block_on;
        let waits = |result: &Result<(), JournalError>| {
            let error = result.as_ref().unwrap_err();
            assert!(!error.is_closed(), "the journal stays open: {error}");
            let message = error.message();
            assert!(
                message.starts_with(
                    "fake: the database refuses every journal row alike, not only these records (NOT NULL constraint failed: events.tenant)"
                ),
                "{message}"
            );
        };
        // Queued at once, so that they may share a batch.
        let pending: Vec<_> = [("c", "a"), ("d", "b"), ("c", "c")]
            .iter()
            .map(|(conversation, t)| writer.journal_append(conversation, input(t)))
            .collect();
        for result in pending.into_iter().map(block) {
            waits(&result);
        }
        // An append alone: nothing but the probe can tell.
        waits(&block(writer.journal_append("d", input("d"))));
        assert!(db.lock().unwrap().probes > 0);
        assert!(texts(&db).is_empty());
        db.lock().unwrap().refuse_all = false;
        assert_eq!(block(writer.journal_append("c", Vec::new())), Ok(()));
        assert_eq!(block(writer.journal_append("d", input("e"))), Ok(()));
        assert_eq!(block(writer.journal_append("c", input("f"))), Ok(()));
        assert_eq!(texts_of(&db, "c"), ["a", "c", "f"]);
        assert_eq!(texts_of(&db, "d"), ["b", "d", "e"]);
    }

    /// In a store that works, an append batched after one larger than the
    /// kept limit is written, not refused: the limit is on records waiting
    /// for a failing store, and nothing failed. (Before, the appends of the
    /// batch being written for the first time counted as kept, so the
    /// second was refused with `KeptFull`, "the store keeps failing", and
    /// its journal closed.)
    #[test]
    fn an_append_batched_with_a_large_one_is_written_by_a_working_store() {
        let db = Arc::new(Mutex::new(Db::default()));
        let fake = Arc::clone(&db);
        let writer =
            GroupWriter::spawn_keeping(StoreLocation::File("fake".into()), 200, move || {
                Ok(Fake(fake))
            })
            .unwrap();
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let (entered_tx, go_rx) = (Mutex::new(entered_tx), Mutex::new(go_rx));
        seam::on_encoding("batched gate", move || {
            let _ = entered_tx.lock().unwrap().send(());
            let _ = go_rx.lock().unwrap().recv();
        });
        let block = futures::executor::block_on;
        // Held on the encoder, so that the two behind it share a batch.
        let gate = writer.journal_append("batched gate", input("g"));
        entered.recv().unwrap();
        let big = writer.journal_append("batched big", input(&"x".repeat(300)));
        let small = writer.journal_append("batched small", input("s"));
        go.send(()).unwrap();
        assert_eq!(block(gate), Ok(()));
        assert_eq!((block(big), block(small)), (Ok(()), Ok(())));
        assert_eq!(texts(&db).len(), 3);
    }

    /// The probe is refused though the database takes other rows (say the
    /// row it copies breaks the same check): the append refused alone is
    /// wrongly taken for one the database refuses like every row, and
    /// waits. Only its own conversation's appends wait with it: the other
    /// conversation's, in its batch and after, are written, and once one
    /// has landed beside it, the append is found refused for its data,
    /// dropped with the later ones of its conversation, and that journal
    /// closed. (Before, the waiting append was kept at the head of every
    /// batch, and every other conversation's appends failed behind it.)
    #[test]
    fn a_wrong_verdict_of_a_database_refusing_every_row_stalls_no_other_conversation() {
        let db = Arc::new(Mutex::new(Db {
            refuse: Some("bad".into()),
            probe_refused: true,
            ..Db::default()
        }));
        let writer = writer(&db);
        let block = futures::executor::block_on;
        let waits = block(writer.journal_append("bad", input("x"))).unwrap_err();
        assert!(
            !waits.is_closed()
                && waits
                    .message()
                    .contains("the database refuses every journal row alike"),
            "{waits}"
        );
        // Queued at once, so that they may share a batch.
        let pending: Vec<_> = [("good", "a"), ("bad", "y"), ("good", "b")]
            .iter()
            .map(|(conversation, t)| writer.journal_append(conversation, input(t)))
            .collect();
        let results: Vec<_> = pending.into_iter().map(block).collect();
        assert_eq!(results[0], Ok(()));
        assert_eq!(results[2], Ok(()));
        // `y` either shared the batch in which `good`'s landed (refused
        // with `x`) or came after it (`bad` was refused already).
        assert!(
            results[1].as_ref().is_err_and(|e| e.is_closed()),
            "{results:?}"
        );
        let refused = block(writer.journal_append("bad", Vec::new())).unwrap_err();
        assert!(
            refused.is_closed()
                && refused.message().contains(
                    "the store refused a record of `bad` (a check constraint refused a row)"
                ),
            "{refused}"
        );
        assert_eq!(block(writer.journal_append("good", input("c"))), Ok(()));
        assert_eq!(texts_of(&db, "good"), ["a", "b", "c"]);
        assert!(texts_of(&db, "bad").is_empty());
    }

    /// The task table refuses every row; the events table takes rows. An
    /// append creating a task is refused alone, while one without tasks of
    /// another conversation lands in the same pass: that proves nothing of
    /// task rows, so the probe (with a task row, refused) decides, and the
    /// append waits, its journal open, until the table takes rows again.
    #[test]
    fn rows_landing_without_tasks_do_not_condemn_an_append_creating_one() {
        let db = Arc::new(Mutex::new(Db {
            refuse_tasks: true,
            ..Db::default()
        }));
        let writer = writer(&db);
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let (entered_tx, go_rx) = (Mutex::new(entered_tx), Mutex::new(go_rx));
        seam::on_encoding("tasks gate", move || {
            let _ = entered_tx.lock().unwrap().send(());
            let _ = go_rx.lock().unwrap().recv();
        });
        let block = futures::executor::block_on;
        // Held on the encoder, so that the two behind it share a batch.
        let gate = writer.journal_append("tasks gate", input("g"));
        entered.recv().unwrap();
        let task = baton_core::TaskRecord {
            id: baton_core::TaskId::new(1),
            parent: None,
            owner: "assistant".into(),
            kind: baton_core::TaskKind::Tool {
                tool: "research".into(),
            },
            status: baton_core::TaskStatus::Running,
            created_ms: 0,
            finished_ms: None,
            outcome: None,
            attempts: 1,
            tokens: 0,
            call: None,
        };
        let creates = writer.journal_append(
            "creates",
            vec![JournalRecord::TaskCreated {
                task,
                arguments: None,
            }],
        );
        let plain = writer.journal_append("plain", input("p"));
        go.send(()).unwrap();
        assert_eq!(block(gate), Ok(()));
        assert_eq!(block(plain), Ok(()));
        let waits = block(creates).unwrap_err();
        assert!(
            !waits.is_closed()
                && waits
                    .message()
                    .contains("the database refuses every journal row alike"),
            "{waits}"
        );
        db.lock().unwrap().refuse_tasks = false;
        assert_eq!(block(writer.journal_append("creates", Vec::new())), Ok(()));
        assert_eq!(texts(&db).len(), 3);
    }

    /// `StoreStats::transactions` counts commits, not attempts: a batch
    /// that failed and was written again with the next is one commit.
    /// (Before, every attempt counted, the failed ones too.)
    #[test]
    fn only_commits_count_as_transactions() {
        let db = Arc::new(Mutex::new(Db {
            fail: 1,
            ..Db::default()
        }));
        let writer = writer(&db);
        let block = futures::executor::block_on;
        assert!(block(writer.journal_append("c", input("a"))).is_err());
        assert_eq!(writer.stats().transactions(), 0);
        assert_eq!(block(writer.journal_append("c", input("b"))), Ok(()));
        assert_eq!(writer.stats().transactions(), 1);
        assert_eq!(writer.stats().records(), 2);
    }
}

//! [`PgStore`]: the PostgreSQL store, for shared deployments. The same design
//! as the SQLite store: one writer connection on its own thread committing
//! whatever is queued in one transaction (group commit), a versioned schema,
//! and a refusal, without writing, of a schema that holds something else.
//!
//! The synchronous `postgres` client runs its own small runtime, so each
//! connection lives on a thread of its own (the writer, and a reader that
//! serves [`Store::read`] and [`Store::conversations`]); callers in async
//! code never block a runtime on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use baton_core::{Journal, JournalError, JournalRecord, Replay};
use futures::future::BoxFuture;
use postgres::{Client, Config, NoTls};

use crate::error::{StoreError, StoreLocation};
use crate::migrations;
use crate::snapshot::{
    append_journaled, decode_row, decode_snapshot, JournalTarget, Stored, Trigger,
    DEFAULT_SNAPSHOT_EVERY,
};
use crate::store::Store;
use crate::tasks::{stored_task, StoredTask, TaskChange, TaskChanges};
use crate::writer::{
    await_ready, commit_ms, last_row, now_ms, probe_record, run_caught, Backend, Encoded,
    GroupWriter, StoreStats, WriteError, PROBE_CONVERSATION,
};

/// How long a connection attempt may take unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much a statement of the writer may carry, and a row hold.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// The most bytes of rows one `INSERT` of events carries: a batch's
    /// rows go in statements of up to this much, in its one transaction (a
    /// statement's parameter, an array of the rows' texts, is one value,
    /// and PostgreSQL takes at most 1 GiB in one value or message). A row
    /// larger than this is a statement of its own.
    insert_bytes: usize,
    /// The most bytes an `events` row holds (its record's JSON and its
    /// conversation's name).
    row_bytes: usize,
}

/// The limits stores are opened with (tests lower them).
const LIMITS: Limits = Limits {
    insert_bytes: 64 << 20,
    // PostgreSQL's 1 GiB for one value (and one message), less 1 MiB for
    // the rest of the row and of the statement: tested to write and read.
    row_bytes: (1 << 30) - (1 << 20),
};

/// Options of a [`PgStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// The schema holding the store's tables; created if missing (when the
    /// store is opened for writing). Default `baton`. A letter or `_`, then
    /// letters, digits or `_`, at most 63 characters.
    pub schema: String,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: "baton".into(),
        }
    }
}

/// Checks that `name` is a plain identifier, safe to quote into SQL.
pub(crate) fn check_schema_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && name.len() <= 63 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "schema name `{name}`: use a letter or `_`, then letters, digits or `_` (at most 63)"
        ))
    }
}

/// The URL with its password (if any) replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A client error as a [`StoreError`], with its causes (the server's own
/// message is the cause of the client's "db error").
pub(crate) fn pg_error(location: &StoreLocation, e: postgres::Error) -> StoreError {
    StoreError::Postgres {
        location: location.clone(),
        message: chain(&e),
    }
}

/// A client error of the writer's batch as a [`WriteError`]: the
/// database refused the data (SQLSTATE class 22, data exception, or 23,
/// integrity constraint violation, or 54000, a value past a limit such as
/// an index entry's size), so writing it again fails again; or a failure
/// that may pass (the connection, the server, a lock, a serialization
/// failure). A unique violation may pass: it is another writer's row taking
/// a sequence number this one had cached, and the batch goes again after
/// it.
fn write_error(location: &StoreLocation, e: postgres::Error) -> WriteError {
    let data = e.code().is_some_and(|code| {
        let code = code.code();
        (code.starts_with("22") || code.starts_with("23") || code == "54000")
            && code != postgres::error::SqlState::UNIQUE_VIOLATION.code()
    });
    WriteError {
        error: Box::new(pg_error(location, e)),
        data,
    }
}

/// Column `idx` of a row read from `table`: [`StoreError::BadColumn`],
/// naming the table and the column, where it holds a type this baton does
/// not read there (a table changed by hand) or an unexpected NULL.
pub(crate) fn column<'a, T: postgres::types::FromSql<'a>>(
    location: &StoreLocation,
    table: &str,
    row: &'a postgres::Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| {
        let (name, type_name) = row
            .columns()
            .get(idx)
            .map_or(("?", "?"), |c| (c.name(), c.type_().name()));
        StoreError::BadColumn {
            location: location.clone(),
            table: table.to_owned(),
            column: name.to_owned(),
            message: format!("it is {type_name}: {}", chain(&e)),
        }
    })
}

/// An error with its causes, `outer: inner: …`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What every connection of a store needs to connect.
#[derive(Clone)]
struct Target {
    config: Config,
    schema: String,
    location: StoreLocation,
}

impl Target {
    fn new(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let location = StoreLocation::Postgres {
            url: redact(url),
            schema: options.schema.clone(),
        };
        check_schema_name(&options.schema).map_err(|reason| StoreError::BadSpec {
            spec: redact(url),
            reason,
        })?;
        let mut config: Config = url.parse().map_err(|e| StoreError::BadSpec {
            spec: redact(url),
            reason: format!("not a PostgreSQL URL: {e}"),
        })?;
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into());
            config.user(&user);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(&format!("baton-store {}", options.schema));
        }
        Ok(Self {
            config,
            schema: options.schema.clone(),
            location,
        })
    }

    /// Connects (on the calling thread, which must not be running an async
    /// runtime) with the store's schema first on the search path.
    fn connect(&self) -> Result<Client, StoreError> {
        let mut client = self
            .config
            .connect(NoTls)
            .map_err(|e| StoreError::Postgres {
                location: self.location.clone(),
                message: format!("cannot connect: {}", chain(&e)),
            })?;
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
            .map_err(|e| pg_error(&self.location, e))?;
        Ok(client)
    }
}

/// How long a liveness check of a connection may take.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `client` still talks to the server (a closed connection, or one
/// the server dropped, does not).
fn alive(client: &mut Client) -> bool {
    !client.is_closed() && client.is_valid(LIVENESS_TIMEOUT).is_ok()
}

/// A job for the reader thread: its connection, or why there is none.
type ReadJob = Box<dyn FnOnce(Result<&mut Client, StoreError>) + Send>;

struct Inner {
    location: StoreLocation,
    schema: String,
    snapshot_every: AtomicU64,
    writer: GroupWriter,
    reader: Mutex<Option<mpsc::Sender<ReadJob>>>,
    reader_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Why the reader thread died, if it did.
    reader_died: Arc<Mutex<Option<String>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(
            self.reader
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(thread) = self
            .reader_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = thread.join();
        }
    }
}

/// The journals of any number of conversations in one schema of a
/// PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and opens the
    /// store in `options.schema`, creating the schema and its tables if
    /// needed. A schema holding another program's tables, or a store from a
    /// newer baton, is refused and left untouched. The server's commit is
    /// durable (`synchronous_commit` as the server sets it, `on` by default).
    pub fn open(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        Self::open_mode(url, &options, true)
    }

    /// Opens an existing store: where `options.schema` holds no baton store,
    /// this is [`StoreError::Missing`] and nothing is created.
    pub fn open_existing(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        Self::open_mode(url, &options, false)
    }

    fn open_mode(url: &str, options: &PgOptions, create: bool) -> Result<Self, StoreError> {
        Self::open_limited(url, options, create, LIMITS)
    }

    fn open_limited(
        url: &str,
        options: &PgOptions,
        create: bool,
        limits: Limits,
    ) -> Result<Self, StoreError> {
        let target = Target::new(url, options)?;
        let location = target.location.clone();
        let schema = target.schema.clone();
        let writer_target = target.clone();
        let writer = GroupWriter::spawn(location.clone(), move || {
            let mut client = writer_target.connect()?;
            migrations::pg_migrate(
                &mut client,
                &writer_target.schema,
                &writer_target.location,
                create,
            )?;
            Ok(PgWriter {
                client,
                location: writer_target.location.clone(),
                target: writer_target,
                last_row: None,
                limits,
            })
        })?;
        let (jobs, jobs_rx) = mpsc::channel::<ReadJob>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader_died = Arc::new(Mutex::new(None));
        let died = Arc::clone(&reader_died);
        let reader_location = location.clone();
        let thread = std::thread::Builder::new()
            .name("baton-store-reader".into())
            .spawn(move || {
                // A read that panics is caught by its job (see `on_reader`):
                // this is for the rest of the thread.
                if let Err(panic) = run_caught(|| read_loop(&target, &jobs_rx, &ready_tx)) {
                    let reason = format!("its reader thread panicked: {panic}");
                    tracing::error!(%reason, "the store's reader thread died; reads fail from now on");
                    *died.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
                    // Not opened yet: the store is not.
                    let _ = ready_tx.send(Err(StoreError::ReaderFailed {
                        location: reader_location,
                        reason,
                    }));
                }
            })
            .map_err(|e| StoreError::Io {
                location: location.clone(),
                message: format!("cannot start the reader thread: {e}"),
            })?;
        let (thread, ()) = await_ready(&ready_rx, thread, &location)?;
        Ok(Self {
            inner: Arc::new(Inner {
                location,
                schema,
                snapshot_every: AtomicU64::new(DEFAULT_SNAPSHOT_EVERY),
                writer,
                reader: Mutex::new(Some(jobs)),
                reader_thread: Mutex::new(Some(thread)),
                reader_died,
            }),
        })
    }

    /// The writer's counters.
    pub fn stats(&self) -> &StoreStats {
        self.inner.writer.stats()
    }

    /// The journal of one conversation, to hand to
    /// `Orchestrator::builder(..).journal(..)`.
    pub fn journal(&self, conversation: impl Into<String>) -> Result<PgJournal, StoreError> {
        let conversation = conversation.into();
        crate::store::check_conversation(&self.inner.location, &conversation)?;
        Ok(PgJournal {
            store: self.clone(),
            conversation,
            trigger: Arc::default(),
        })
    }

    /// Each journal snapshots its conversation every `records` records
    /// appended through it, on a thread of its own (0: never). Default
    /// [`DEFAULT_SNAPSHOT_EVERY`].
    pub fn set_snapshot_every(&self, records: u64) {
        self.inner.snapshot_every.store(records, Ordering::Relaxed);
    }

    /// `conversation` rebuilt from its latest snapshot and the records after
    /// it, to hand to `Orchestrator::builder(..).resume(..)`.
    pub fn replay(&self, conversation: &str) -> Result<Replay, StoreError> {
        let conversation = conversation.to_owned();
        self.on_reader(
            move |client, location| Ok(stored(client, location, &conversation)?.replay()),
        )
    }

    /// Writes a snapshot of `conversation` covering its records so far, if
    /// there are any since the latest; returns the sequence number it
    /// covers.
    pub fn snapshot(&self, conversation: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.take_snapshot(conversation)?.map(|(seq, _)| seq))
    }

    /// [`PgStore::snapshot`], also returning the snapshot's length.
    fn take_snapshot(&self, conversation: &str) -> Result<Option<(i64, u64)>, StoreError> {
        let conversation = conversation.to_owned();
        let taken = self.on_reader(move |client, location| {
            let Some((seq, text, size)) =
                stored(client, location, &conversation)?.next_snapshot(location, &conversation)?
            else {
                return Ok(None);
            };
            // The new snapshot replaces the older ones, in one transaction.
            let mut tx = client.transaction().map_err(|e| pg_error(location, e))?;
            tx.execute(
                "INSERT INTO snapshots (conversation, seq, at_ms, records) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (conversation, seq) DO NOTHING",
                &[&conversation, &seq, &now_ms(), &text],
            )
            .map_err(|e| pg_error(location, e))?;
            tx.execute(
                "DELETE FROM snapshots WHERE conversation = $1 AND seq < $2",
                &[&conversation, &seq],
            )
            .map_err(|e| pg_error(location, e))?;
            tx.commit().map_err(|e| pg_error(location, e))?;
            Ok(Some((seq, size)))
        })?;
        if taken.is_some() {
            self.stats().count_snapshot();
        }
        Ok(taken)
    }

    /// Runs `job` on the reader thread and waits for its answer. A job
    /// that panics is [`StoreError::ReaderFailed`], and the thread goes on.
    fn on_reader<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Client, &StoreLocation) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let closed = || StoreError::ReaderFailed {
            location: self.inner.location.clone(),
            reason: self
                .inner
                .reader_died
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| "its reader thread has stopped".to_owned()),
        };
        let (reply, answer) = mpsc::channel();
        let location = self.inner.location.clone();
        let job: ReadJob = Box::new(move |client| {
            let answer = client.and_then(|client| {
                run_caught(|| job(client, &location)).unwrap_or_else(|panic| {
                    tracing::error!(%panic, "a read of the store panicked");
                    Err(StoreError::ReaderFailed {
                        location: location.clone(),
                        reason: format!("a read panicked: {panic}"),
                    })
                })
            });
            let _ = reply.send(answer);
        });
        {
            let reader = self
                .inner
                .reader
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            reader
                .as_ref()
                .ok_or_else(closed)?
                .send(job)
                .map_err(|_| closed())?;
        }
        answer.recv().map_err(|_| closed())?
    }

    /// Every record of `conversation`, in order.
    pub fn read(&self, conversation: &str) -> Result<Vec<JournalRecord>, StoreError> {
        let conversation = conversation.to_owned();
        self.on_reader(move |client, location| {
            let rows = client
                .query(
                    "SELECT seq, record FROM events WHERE conversation = $1 ORDER BY seq",
                    &[&conversation],
                )
                .map_err(|e| pg_error(location, e))?;
            let mut records = Vec::with_capacity(rows.len());
            for row in &rows {
                decode_row(
                    location,
                    &conversation,
                    column(location, "events", row, 0)?,
                    column(location, "events", row, 1)?,
                    &mut records,
                )?;
            }
            Ok(records)
        })
    }

    /// Drops the store's schema with everything in it: every conversation
    /// of the store is gone. For tests and for tearing a deployment down.
    pub fn destroy(self) -> Result<(), StoreError> {
        let schema = self.inner.schema.clone();
        self.on_reader(move |client, location| {
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .map_err(|e| pg_error(location, e))
        })
    }

    /// The task table's rows for `conversation`, by task id.
    pub fn tasks(&self, conversation: &str) -> Result<Vec<StoredTask>, StoreError> {
        let conversation = conversation.to_owned();
        self.on_reader(move |client, location| {
            let rows = client
                .query(
                    "SELECT id, parent, owner, kind, source, status, attempts, created_at_ms, \
                     finished_at_ms, outcome FROM tasks WHERE conversation = $1 ORDER BY id",
                    &[&conversation],
                )
                .map_err(|e| pg_error(location, e))?;
            rows.iter()
                .map(|row| {
                    stored_task(
                        location,
                        &conversation,
                        column(location, "tasks", row, 0)?,
                        column(location, "tasks", row, 1)?,
                        column(location, "tasks", row, 2)?,
                        column(location, "tasks", row, 3)?,
                        column(location, "tasks", row, 4)?,
                        column(location, "tasks", row, 5)?,
                        column(location, "tasks", row, 6)?,
                        column(location, "tasks", row, 7)?,
                        column(location, "tasks", row, 8)?,
                        column(location, "tasks", row, 9)?,
                    )
                })
                .collect()
        })
    }

    /// The conversations in the store, sorted.
    pub fn conversations(&self) -> Result<Vec<String>, StoreError> {
        self.on_reader(|client, location| {
            let rows = client
                .query(
                    "SELECT DISTINCT conversation FROM events ORDER BY conversation",
                    &[],
                )
                .map_err(|e| pg_error(location, e))?;
            rows.iter()
                .map(|row| column(location, "events", row, 0))
                .collect()
        })
    }
}

/// The reader thread: connects, says whether it could, then runs each read
/// on its connection, checked first.
fn read_loop(
    target: &Target,
    jobs: &mpsc::Receiver<ReadJob>,
    ready: &mpsc::Sender<Result<(), StoreError>>,
) {
    let mut client = match target.connect() {
        Ok(client) => client,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    while let Ok(job) = jobs.recv() {
        // Reads are rare (a resume, `baton log`): check the connection
        // first, and connect again if the server dropped it (or a read
        // that panicked left it unusable).
        if !alive(&mut client) {
            match target.connect() {
                Ok(fresh) => client = fresh,
                Err(e) => {
                    job(Err(e));
                    continue;
                }
            }
        }
        job(Ok(&mut client));
    }
}

/// The latest snapshot of `conversation` and the records after it, read in
/// one repeatable-read transaction.
fn stored(
    client: &mut Client,
    location: &StoreLocation,
    conversation: &str,
) -> Result<Stored, StoreError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(|e| pg_error(location, e))?;
    let mut stored = Stored::default();
    let latest = tx
        .query_opt(
            "SELECT seq, records FROM snapshots WHERE conversation = $1 ORDER BY seq DESC LIMIT 1",
            &[&conversation],
        )
        .map_err(|e| pg_error(location, e))?;
    if let Some(row) = latest {
        let seq: i64 = column(location, "snapshots", &row, 0)?;
        let text = column(location, "snapshots", &row, 1)?;
        stored.snapshot = decode_snapshot(location, conversation, seq, text)?;
        stored.snapshot_seq = seq;
        stored.last_seq = seq;
    }
    let rows = tx
        .query(
            "SELECT seq, record FROM events WHERE conversation = $1 AND seq > $2 ORDER BY seq",
            &[&conversation, &stored.snapshot_seq],
        )
        .map_err(|e| pg_error(location, e))?;
    for row in &rows {
        let seq: i64 = column(location, "events", row, 0)?;
        let text = column(location, "events", row, 1)?;
        decode_row(location, conversation, seq, text, &mut stored.tail)?;
        stored.last_seq = seq;
    }
    tx.commit().map_err(|e| pg_error(location, e))?;
    Ok(stored)
}

/// The PostgreSQL side of the writer thread: the one writer connection.
struct PgWriter {
    client: Client,
    location: StoreLocation,
    /// To connect again when the server drops the connection.
    target: Target,
    /// The sequence number and time of the last row of the latest batch
    /// that reached its commit (see [`Backend::committed_after_all`]).
    last_row: Option<(i64, i64)>,
    limits: Limits,
}

/// Inserts rows of `events`, given as arrays of their columns.
const INSERT_EVENTS: &str = "INSERT INTO events (conversation, seq, at_ms, record) \
     SELECT c, s, $3, r FROM unnest($1::text[], $2::bigint[], $4::text[]) AS t(c, s, r)";

/// Applies a batch's task changes, committed at `at_ms` (unless they carry
/// times of their own), in `tx`: one statement for the tasks created, one
/// for the others (each task appears once in `tasks`).
pub(crate) fn write_tasks(
    tx: &mut postgres::Transaction<'_>,
    location: &StoreLocation,
    tasks: &TaskChanges,
    at_ms: i64,
) -> Result<(), StoreError> {
    write_tasks_with(tx, tasks, at_ms, |e| pg_error(location, e))
}

/// [`write_tasks`], its errors made by `pg`.
fn write_tasks_with<E>(
    tx: &mut postgres::Transaction<'_>,
    tasks: &TaskChanges,
    at_ms: i64,
    pg: impl Fn(postgres::Error) -> E,
) -> Result<(), E> {
    // Column arrays: the tasks created, and the others.
    let (mut c, mut i, mut parent, mut owner, mut kind) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut source, mut status, mut attempts, mut outcome) = (vec![], vec![], vec![], vec![]);
    let (mut created, mut finished) = (vec![], vec![]);
    let (mut uc, mut ui, mut ua, mut ustatus, mut uoutcome, mut ufinished) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (conversation, id, change) in &tasks.changes {
        match change {
            TaskChange::Row(row) => {
                c.push(&**conversation);
                i.push(*id);
                parent.push(row.parent);
                owner.push(row.owner.as_str());
                kind.push(row.kind);
                source.push(row.source.as_str());
                status.push(row.status);
                attempts.push(row.attempts);
                created.push(row.created_at.unwrap_or(at_ms));
                finished.push(row.finished_at.map(|at| at.unwrap_or(at_ms)));
                outcome.push(row.outcome.as_deref());
            }
            TaskChange::Update {
                attempts: count,
                finish,
            } => {
                uc.push(&**conversation);
                ui.push(*id);
                ua.push(*count);
                ustatus.push(finish.as_ref().map(|f| f.status));
                uoutcome.push(finish.as_ref().map(|f| f.outcome.as_str()));
                ufinished.push(finish.as_ref().map(|f| f.at.unwrap_or(at_ms)));
            }
        }
    }
    if !c.is_empty() {
        tx.execute(
            "INSERT INTO tasks (conversation, id, parent, owner, kind, source, status, attempts, \
             created_at_ms, finished_at_ms, outcome) \
             SELECT c, i, p, o, k, s, st, a, ca, fa, oc \
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[]) \
             AS t(c, i, p, o, k, s, st, a, ca, fa, oc) \
             ON CONFLICT (conversation, id) DO UPDATE SET parent = EXCLUDED.parent, \
             owner = EXCLUDED.owner, kind = EXCLUDED.kind, source = EXCLUDED.source, \
             status = EXCLUDED.status, attempts = EXCLUDED.attempts, \
             created_at_ms = EXCLUDED.created_at_ms, finished_at_ms = EXCLUDED.finished_at_ms, \
             outcome = EXCLUDED.outcome",
            &[
                &c, &i, &parent, &owner, &kind, &source, &status, &attempts, &created, &finished,
                &outcome,
            ],
        )
        .map_err(&pg)?;
    }
    if !uc.is_empty() {
        tx.execute(
            "UPDATE tasks SET attempts = GREATEST(tasks.attempts, u.a), \
             status = COALESCE(u.st, tasks.status), \
             outcome = CASE WHEN u.st IS NULL THEN tasks.outcome ELSE u.oc END, \
             finished_at_ms = CASE WHEN u.st IS NULL THEN NULL ELSE u.fa END \
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
             $6::bigint[]) AS u(c, i, a, st, oc, fa) \
             WHERE tasks.conversation = u.c AND tasks.id = u.i AND tasks.finished_at_ms IS NULL",
            &[&uc, &ui, &ua, &ustatus, &uoutcome, &ufinished],
        )
        .map_err(pg)?;
    }
    Ok(())
}

impl Backend for PgWriter {
    /// One transaction, one `INSERT … SELECT FROM unnest(…)` for the whole
    /// batch however many appends are queued, unless their rows pass
    /// [`Limits::insert_bytes`]: then one per that many bytes.
    fn write_batch(&mut self, batch: &[Encoded]) -> Result<(), WriteError> {
        let location = &self.location;
        let at_ms = commit_ms(location);
        self.last_row = None;
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| write_error(location, e))?;
        let total = batch
            .iter()
            .flat_map(|e| &e.appends)
            .map(|a| a.rows.len())
            .sum();
        let mut conversations: Vec<&str> = Vec::with_capacity(total);
        let mut seqs: Vec<i64> = Vec::with_capacity(total);
        let mut records: Vec<&str> = Vec::with_capacity(total);
        let mut next_seq: HashMap<&str, i64> = HashMap::new();
        for append in batch
            .iter()
            .flat_map(|e| &e.appends)
            .filter(|a| a.count > 0)
        {
            let seq = match next_seq.get_mut(append.conversation.as_str()) {
                Some(seq) => seq,
                None => {
                    // Each conversation's last event, read once per batch
                    // under a lock on the conversation held to the commit
                    // (not cached across batches): another writer of the
                    // conversation may have appended since, and a row
                    // numbered from a stale count could land in the gap a
                    // row of several records leaves below its number, under
                    // rows committed before it.
                    tx.execute(
                        "SELECT pg_advisory_xact_lock(hashtext('baton-conversation:' || $1))",
                        &[&append.conversation],
                    )
                    .map_err(|e| write_error(location, e))?;
                    let row = tx
                        .query_one(
                            "SELECT COALESCE(MAX(seq), 0) AS seq FROM events WHERE conversation = $1",
                            &[&append.conversation],
                        )
                        .map_err(|e| write_error(location, e))?;
                    let max: i64 = column(location, "events", &row, 0)?;
                    next_seq.entry(append.conversation.as_str()).or_insert(max)
                }
            };
            for row in &append.rows {
                *seq += i64::try_from(row.count).unwrap_or(i64::MAX);
                conversations.push(&append.conversation);
                seqs.push(*seq);
                records.push(&row.text);
            }
        }
        if !records.is_empty() {
            let insert = tx
                .prepare(INSERT_EVENTS)
                .map_err(|e| write_error(location, e))?;
            let mut start = 0;
            while start < records.len() {
                // The rows that fit, one at least.
                let mut end = start;
                let mut bytes = 0;
                while let Some(next) = records.get(end) {
                    let size = next.len() + conversations[end].len();
                    if end > start && bytes + size > self.limits.insert_bytes {
                        break;
                    }
                    bytes += size;
                    end += 1;
                }
                let (c, s, r) = (
                    &conversations[start..end],
                    &seqs[start..end],
                    &records[start..end],
                );
                tx.execute(&insert, &[&c, &s, &at_ms, &r])
                    .map_err(|e| write_error(location, e))?;
                start = end;
            }
        }
        for part in batch {
            write_tasks_with(&mut tx, &part.tasks, at_ms, |e| write_error(location, e))?;
        }
        // Only the commit can land unanswered.
        self.last_row = seqs.last().map(|seq| (*seq, at_ms));
        tx.commit().map_err(|e| write_error(location, e))
    }

    /// After a failed batch, a connection the server dropped (a restart, an
    /// administrator) is made again, so the next batch can land. The failed
    /// batch goes again with it, unless [`Backend::committed_after_all`]
    /// finds that its commit reached the server after all.
    fn rolled_back(&mut self) {
        if !alive(&mut self.client) {
            match self.target.connect() {
                Ok(fresh) => {
                    tracing::warn!(store = %self.location, "reconnected to PostgreSQL");
                    self.client = fresh;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot reconnect to PostgreSQL; the next batch will try again");
                }
            }
        }
    }

    fn committed_after_all(&mut self, batch: &[Encoded]) -> Result<bool, StoreError> {
        let (Some((seq, at_ms)), Some((conversation, text))) = (self.last_row, last_row(batch))
        else {
            return Ok(false);
        };
        self.client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM events \
                 WHERE conversation = $1 AND seq = $2 AND at_ms = $3 AND record = $4)",
                &[&conversation, &seq, &at_ms, &text],
            )
            .map(|row| row.get(0))
            .map_err(|e| pg_error(&self.location, e))
    }

    fn max_row_bytes(&self) -> usize {
        self.limits.row_bytes
    }

    fn probe(&mut self, conversation: &str, tasks: bool) -> Result<(), WriteError> {
        let at_ms = now_ms();
        let fresh_event = |tx: &mut postgres::Transaction<'_>| {
            tx.execute(
                "INSERT INTO events (conversation, seq, at_ms, record) \
                 SELECT $1::text, COALESCE(MAX(seq), 0) + 1, $2::bigint, $3::text FROM events \
                 WHERE conversation = $1",
                &[&PROBE_CONVERSATION, &at_ms, &probe_record()],
            )
        };
        self.probe_table(PROBE_EVENT, conversation, at_ms, fresh_event)?;
        if tasks {
            let fresh_task = |tx: &mut postgres::Transaction<'_>| {
                tx.execute(
                    "INSERT INTO tasks (conversation, id, parent, owner, kind, source, status, \
                     attempts, created_at_ms, finished_at_ms, outcome) \
                     SELECT $1::text, COALESCE(MAX(id), 0) + 1, NULL, 'probe', 'tool', 'probe', \
                     'running', 1, $2::bigint, NULL, NULL FROM tasks WHERE conversation = $1",
                    &[&PROBE_CONVERSATION, &at_ms],
                )
            };
            self.probe_table(PROBE_TASK, conversation, at_ms, fresh_task)?;
        }
        Ok(())
    }
}

impl PgWriter {
    /// One table of [`Backend::probe`]: whether it takes the copy `copy`
    /// makes of the latest row of the last conversation after
    /// `conversation` (or, if none, before it), or else the minimal row
    /// `fresh` writes. Each in a transaction rolled back.
    fn probe_table(
        &mut self,
        copy: &str,
        conversation: &str,
        at_ms: i64,
        fresh: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<u64, postgres::Error>,
    ) -> Result<(), WriteError> {
        let copied = self.rolled_back_write(|tx| {
            let mut copied = 0;
            for op in [">", "<"] {
                if copied == 0 {
                    copied = tx.execute(&copy.replace("{op}", op), &[&conversation, &at_ms])?;
                }
            }
            Ok(copied)
        });
        match copied {
            Ok(n) if n > 0 => return Ok(()),
            // No row to copy, or the copy refused: the minimal row decides.
            Ok(_) => {}
            Err(e) if e.data => {}
            Err(e) => return Err(e),
        }
        self.rolled_back_write(fresh).map(|_| ())
    }

    /// Runs `write` in a transaction it rolls back: the rows it wrote, or
    /// why it failed.
    fn rolled_back_write(
        &mut self,
        write: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<u64, postgres::Error>,
    ) -> Result<u64, WriteError> {
        let location = &self.location;
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| write_error(location, e))?;
        let written = write(&mut tx).map_err(|e| write_error(location, e));
        let rolled_back = tx.rollback().map_err(|e| write_error(location, e));
        let written = written?;
        rolled_back?;
        Ok(written)
    }
}

/// [`Backend::probe`]'s copy of the latest `events` row of the last
/// conversation `{op}` `$1`, at its next sequence number and time `$2`.
const PROBE_EVENT: &str = "INSERT INTO events (conversation, seq, at_ms, record) \
     SELECT conversation, seq + 1, $2::bigint, record FROM events WHERE conversation {op} $1::text \
     ORDER BY conversation DESC, seq DESC LIMIT 1";

/// [`Backend::probe`]'s copy of the last task row of the last conversation
/// `{op}` `$1`, as its next task (created at `$2`).
const PROBE_TASK: &str = "INSERT INTO tasks (conversation, id, parent, owner, kind, source, \
     status, attempts, created_at_ms, finished_at_ms, outcome) \
     SELECT conversation, id + 1, parent, owner, kind, source, status, attempts, $2::bigint, \
     finished_at_ms, outcome FROM tasks WHERE conversation {op} $1::text \
     ORDER BY conversation DESC, id DESC LIMIT 1";

/// One conversation's journal in a [`PgStore`]. Every
/// [`PgStore::set_snapshot_every`] records appended through it (and its
/// clones), it snapshots the conversation on a thread of its own.
#[derive(Debug, Clone)]
pub struct PgJournal {
    store: PgStore,
    conversation: String,
    trigger: Arc<Trigger>,
}

impl Journal for PgJournal {
    fn append(&self, records: Vec<JournalRecord>) -> BoxFuture<'static, Result<(), JournalError>> {
        let inner = &self.store.inner;
        let target = JournalTarget {
            store: &self.store,
            take: PgStore::take_snapshot,
            writer: &inner.writer,
            location: &inner.location,
            every: inner.snapshot_every.load(Ordering::Relaxed),
        };
        append_journaled(target, &self.trigger, &self.conversation, records)
    }
}

impl Store for PgStore {
    fn location(&self) -> &StoreLocation {
        &self.inner.location
    }

    fn journal(&self, conversation: &str) -> Result<Arc<dyn Journal>, StoreError> {
        Ok(Arc::new(PgStore::journal(self, conversation)?))
    }

    fn read(&self, conversation: &str) -> Result<Vec<JournalRecord>, StoreError> {
        PgStore::read(self, conversation)
    }

    fn tasks(&self, conversation: &str) -> Result<Vec<StoredTask>, StoreError> {
        PgStore::tasks(self, conversation)
    }

    fn replay(&self, conversation: &str) -> Result<Replay, StoreError> {
        PgStore::replay(self, conversation)
    }

    fn snapshot(&self, conversation: &str) -> Result<Option<i64>, StoreError> {
        PgStore::snapshot(self, conversation)
    }

    fn set_snapshot_every(&self, records: u64) {
        PgStore::set_snapshot_every(self, records);
    }

    fn conversations(&self) -> Result<Vec<String>, StoreError> {
        PgStore::conversations(self)
    }

    fn stats(&self) -> &StoreStats {
        PgStore::stats(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        let err =
            PgStore::open("postgres://u:secret@h:notaport/db", PgOptions::default()).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    /// A batch's rows go in statements of at most `insert_bytes` (a row
    /// larger than that alone), in one transaction: PostgreSQL takes at
    /// most 1 GiB in the one array parameter of a statement. A trigger
    /// stands in for that limit, lowered (before, one statement carried
    /// the whole batch, and the trigger failed it).
    #[test]
    fn a_batch_is_inserted_in_statements_of_bounded_size() {
        let Some(schema) = crate::pg_testing::TestSchema::new() else {
            return;
        };
        let limits = Limits {
            insert_bytes: 5_000,
            ..LIMITS
        };
        let options = PgOptions {
            schema: schema.name.clone(),
        };
        let store = PgStore::open_limited(&schema.url, &options, true, limits).unwrap();
        schema
            .client()
            .batch_execute(
                "CREATE TABLE statements (rows BIGINT, bytes BIGINT); \
                 CREATE FUNCTION bounded() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 DECLARE n BIGINT; b BIGINT; BEGIN \
                 SELECT count(*), sum(octet_length(record) + octet_length(conversation)) \
                 INTO n, b FROM new_rows; \
                 IF n > 1 AND b > 5000 THEN RAISE EXCEPTION 'a statement of % bytes', b; END IF; \
                 INSERT INTO statements VALUES (n, b); RETURN NULL; END $$; \
                 CREATE TRIGGER bounded AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows \
                 FOR EACH STATEMENT EXECUTE FUNCTION bounded();",
            )
            .unwrap();
        // Over 1 MiB: rows of up to 1 MiB, each a statement of its own.
        let large: Vec<JournalRecord> = (0..600)
            .map(|i| JournalRecord::UserInput {
                text: format!("{i} {}", "x".repeat(2_000)),
            })
            .collect();
        let small: Vec<JournalRecord> = (0..20)
            .map(|i| JournalRecord::UserInput {
                text: format!("small {i} {}", "y".repeat(400)),
            })
            .collect();
        let journal = store.journal("c").unwrap();
        let mut all = large.clone();
        futures::executor::block_on(journal.append(large)).unwrap();
        // Appended at once: batches of rows of about 450 bytes, some
        // statements carrying several.
        all.extend_from_slice(&small);
        let appends: Vec<_> = small
            .chunks(1)
            .map(|one| journal.append(one.to_vec()))
            .collect();
        for append in appends {
            futures::executor::block_on(append).unwrap();
        }
        assert_eq!(store.read("c").unwrap(), all);
        let statements: Vec<(i64, i64)> = schema
            .client()
            .query("SELECT rows, bytes FROM statements", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert!(statements.len() >= 3, "{statements:?}");
        assert!(
            statements.iter().all(|&(n, b)| n == 1 || b <= 5_000),
            "{statements:?}"
        );
    }

    /// A read that panics on the reader thread is an error naming the
    /// reader and the panic, and later reads go on. (Before: "the store's
    /// writer has stopped", and every later read failed so too.)
    #[test]
    fn a_read_that_panics_is_a_clear_error_and_reads_go_on() {
        let Some(schema) = crate::pg_testing::TestSchema::new() else {
            return;
        };
        let options = PgOptions {
            schema: schema.name.clone(),
        };
        let store = PgStore::open(&schema.url, options).unwrap();
        let error = store
            .on_reader(|_, _| -> Result<(), StoreError> { panic!("reader on fire") })
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.ends_with(": the store's reader failed (a read panicked: reader on fire)"),
            "{message}"
        );
        assert_eq!(store.conversations().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("baton_test_1").is_ok());
        for bad in ["", "1abc", "a-b", "a\"b", &"x".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}

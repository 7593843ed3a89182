//! [`SqliteStore`]: the embedded store. One file, one writer thread, group
//! commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use baton_core::{Journal, JournalError, JournalRecord, Replay};
use futures::future::BoxFuture;
use rusqlite::{params, Connection};

use crate::error::{StoreError, StoreLocation};
use crate::migrations;
use crate::snapshot::{
    append_journaled, decode_row, decode_snapshot, JournalTarget, Stored, Trigger,
    DEFAULT_SNAPSHOT_EVERY,
};
use crate::store::Store;
use crate::tasks::{stored_task, StoredTask, TaskChange, TaskChanges};
use crate::writer::{
    commit_ms, last_row, now_ms, probe_record, Backend, Encoded, GroupWriter, StoreStats,
    WriteError, PROBE_CONVERSATION,
};

/// The page size of a new store's file.
const PAGE_SIZE: u32 = 16 * 1024;

/// The most bytes an `events` row holds (its record's JSON and its
/// conversation's name): the bundled SQLite's limit on a value and a row
/// (`SQLITE_MAX_LENGTH`, 10⁹ bytes), less 1 MiB for the rest of the row.
/// A record larger than this is refused (see `Backend::max_row_bytes`).
const MAX_ROW_BYTES: usize = 1_000_000_000 - (1 << 20);

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: in WAL mode a commit survives a process crash
    /// (`kill -9`) but the last commits may be lost on power loss. Faster.
    Normal,
}

struct Inner {
    path: PathBuf,
    location: StoreLocation,
    writer: GroupWriter,
    /// Reads, and writes snapshots (which never touch the events).
    reader: Mutex<Connection>,
    snapshot_every: AtomicU64,
}

/// A SQLite file holding the journals of any number of conversations.
/// Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn sqlite_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Sqlite {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Column `idx` of a row read from `table`: [`StoreError::BadColumn`],
/// naming the table and the column, where it holds a type this baton does
/// not read there (a file changed by hand).
pub(crate) fn column<T: rusqlite::types::FromSql>(
    location: &StoreLocation,
    table: &str,
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> Result<T, StoreError> {
    row.get(idx).map_err(|e| StoreError::BadColumn {
        location: location.clone(),
        table: table.to_owned(),
        column: row.as_ref().column_name(idx).unwrap_or("?").to_owned(),
        message: e.to_string(),
    })
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` with [`Durability::Full`].
    /// A file that is not SQLite, or is another program's database, or was
    /// written by a newer baton, is refused with an error and not touched.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Durability::Full)
    }

    /// Opens (or creates) the store at `path`.
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let version = migrations::inspect(&path)?;
        let mut conn = Connection::open(&path).map_err(|e| sqlite_error(&path, e))?;
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        // 16 KiB pages (for a new file; an existing one keeps its own): an
        // append is a row of up to 1 MiB (more rows past that), written
        // through the WAL a page at a time; larger pages measured ≈ 15 %
        // faster on the fan-out benchmark.
        // The busy timeout first: switching a new file to WAL takes a lock
        // that another process opening it at the same moment may hold.
        let pragmas = format!(
            "PRAGMA busy_timeout = 5000; PRAGMA page_size = {PAGE_SIZE}; \
             PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous};"
        );
        retry_while_busy(|| conn.execute_batch(&pragmas)).map_err(|e| sqlite_error(&path, e))?;
        migrations::migrate(&mut conn, &path, version)?;
        let reader = Connection::open(&path).map_err(|e| sqlite_error(&path, e))?;
        reader
            .execute_batch(&format!(
                "PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000;"
            ))
            .map_err(|e| sqlite_error(&path, e))?;
        let location = StoreLocation::File(path.clone());
        let backend = SqliteWriter {
            conn,
            path: path.clone(),
            last_row: None,
            unfolded: Unfolded::default(),
        };
        let writer = GroupWriter::spawn(location.clone(), move || Ok(backend))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                location,
                writer,
                reader: Mutex::new(reader),
                snapshot_every: AtomicU64::new(DEFAULT_SNAPSHOT_EVERY),
            }),
        })
    }

    /// Opens the store at `path`, which must already be a baton store: a
    /// missing or empty file is an error ([`StoreError::Missing`]) and is
    /// not created. For readers such as `baton log`.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if migrations::inspect(path)? == 0 {
            return Err(StoreError::Missing {
                location: StoreLocation::File(path.to_owned()),
            });
        }
        Self::open(path)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The writer's counters.
    pub fn stats(&self) -> &StoreStats {
        self.inner.writer.stats()
    }

    /// The journal of one conversation, to hand to
    /// `Orchestrator::builder(..).journal(..)`.
    pub fn journal(&self, conversation: impl Into<String>) -> Result<SqliteJournal, StoreError> {
        let conversation = conversation.into();
        crate::store::check_conversation(&self.inner.location, &conversation)?;
        Ok(SqliteJournal {
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

    /// The latest snapshot of `conversation` and the records after it.
    fn stored(&self, conversation: &str) -> Result<Stored, StoreError> {
        let path = &self.inner.path;
        let location = &self.inner.location;
        let reader = self.reader();
        let mut stored = Stored::default();
        let mut latest = reader
            .prepare_cached(
                "SELECT seq, records FROM snapshots WHERE conversation = ?1 ORDER BY seq DESC LIMIT 1",
            )
            .map_err(|e| sqlite_error(path, e))?;
        let mut rows = latest
            .query([conversation])
            .map_err(|e| sqlite_error(path, e))?;
        if let Some(row) = rows.next().map_err(|e| sqlite_error(path, e))? {
            let seq: i64 = column(location, "snapshots", row, 0)?;
            let text: String = column(location, "snapshots", row, 1)?;
            stored.snapshot = decode_snapshot(location, conversation, seq, &text)?;
            stored.snapshot_seq = seq;
            stored.last_seq = seq;
        }
        drop(rows);
        drop(latest);
        let mut stmt = reader
            .prepare_cached(
                "SELECT seq, record FROM events WHERE conversation = ?1 AND seq > ?2 ORDER BY seq",
            )
            .map_err(|e| sqlite_error(path, e))?;
        let mut rows = stmt
            .query(params![conversation, stored.snapshot_seq])
            .map_err(|e| sqlite_error(path, e))?;
        while let Some(row) = rows.next().map_err(|e| sqlite_error(path, e))? {
            let seq: i64 = column(location, "events", row, 0)?;
            let text: String = column(location, "events", row, 1)?;
            decode_row(location, conversation, seq, &text, &mut stored.tail)?;
            stored.last_seq = seq;
        }
        Ok(stored)
    }

    /// `conversation` rebuilt from its latest snapshot and the records after
    /// it, to hand to `Orchestrator::builder(..).resume(..)`.
    pub fn replay(&self, conversation: &str) -> Result<Replay, StoreError> {
        Ok(self.stored(conversation)?.replay())
    }

    /// Writes a snapshot of `conversation` covering its records so far, if
    /// there are any since the latest; returns the sequence number it
    /// covers.
    pub fn snapshot(&self, conversation: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.take_snapshot(conversation)?.map(|(seq, _)| seq))
    }

    /// [`SqliteStore::snapshot`], also returning the snapshot's length.
    fn take_snapshot(&self, conversation: &str) -> Result<Option<(i64, u64)>, StoreError> {
        let path = &self.inner.path;
        let Some((seq, text, size)) = self
            .stored(conversation)?
            .next_snapshot(&self.inner.location, conversation)?
        else {
            return Ok(None);
        };
        // The new snapshot replaces the older ones, in one transaction.
        let mut reader = self.reader();
        let tx = reader.transaction().map_err(|e| sqlite_error(path, e))?;
        tx.execute(
            "INSERT OR REPLACE INTO snapshots (conversation, seq, at_ms, records) VALUES (?1, ?2, ?3, ?4)",
            params![conversation, seq, now_ms(), text],
        )
        .map_err(|e| sqlite_error(path, e))?;
        tx.execute(
            "DELETE FROM snapshots WHERE conversation = ?1 AND seq < ?2",
            params![conversation, seq],
        )
        .map_err(|e| sqlite_error(path, e))?;
        tx.commit().map_err(|e| sqlite_error(path, e))?;
        self.stats().count_snapshot();
        Ok(Some((seq, size)))
    }

    /// The reader connection (reads never wait behind the writer).
    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.inner
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every record of `conversation`, in order (feed it to
    /// `baton_core::Replay::from_records`).
    pub fn read(&self, conversation: &str) -> Result<Vec<JournalRecord>, StoreError> {
        let path = &self.inner.path;
        let reader = self.reader();
        let mut stmt = reader
            .prepare("SELECT seq, record FROM events WHERE conversation = ?1 ORDER BY seq")
            .map_err(|e| sqlite_error(path, e))?;
        let mut rows = stmt
            .query([conversation])
            .map_err(|e| sqlite_error(path, e))?;
        let location = &self.inner.location;
        let mut records = Vec::new();
        while let Some(row) = rows.next().map_err(|e| sqlite_error(path, e))? {
            let seq: i64 = column(location, "events", row, 0)?;
            let text: String = column(location, "events", row, 1)?;
            decode_row(location, conversation, seq, &text, &mut records)?;
        }
        Ok(records)
    }

    /// The task table's rows for `conversation`, by task id, with the
    /// changes of the events the table does not hold yet folded in (its
    /// writer writes it when idle): what the log says of each task.
    pub fn tasks(&self, conversation: &str) -> Result<Vec<StoredTask>, StoreError> {
        let path = &self.inner.path;
        let location = &self.inner.location;
        let mut reader = self.reader();
        // One read transaction: the table, how far it goes and the events
        // after that, as of one moment.
        let tx = reader.transaction().map_err(|e| sqlite_error(path, e))?;
        let mut tasks = BTreeMap::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, parent, owner, kind, source, status, attempts, created_at_ms, \
                     finished_at_ms, outcome FROM tasks WHERE conversation = ?1",
                )
                .map_err(|e| sqlite_error(path, e))?;
            let mut rows = stmt
                .query([conversation])
                .map_err(|e| sqlite_error(path, e))?;
            while let Some(row) = rows.next().map_err(|e| sqlite_error(path, e))? {
                let id: i64 = column(location, "tasks", row, 0)?;
                let status: String = column(location, "tasks", row, 5)?;
                let task = stored_task(
                    location,
                    conversation,
                    id,
                    column(location, "tasks", row, 1)?,
                    column(location, "tasks", row, 2)?,
                    column(location, "tasks", row, 3)?,
                    column(location, "tasks", row, 4)?,
                    &status,
                    column(location, "tasks", row, 6)?,
                    column(location, "tasks", row, 7)?,
                    column(location, "tasks", row, 8)?,
                    column(location, "tasks", row, 9)?,
                )?;
                tasks.insert(id, task);
            }
        }
        let through = folded_through(&tx, conversation).map_err(|e| sqlite_error(path, e))?;
        let mut changes = TaskChanges::default();
        fold_events_after(&tx, path, conversation, through, &mut changes)?;
        changes.apply(location, conversation, &mut tasks)?;
        Ok(tasks.into_values().collect())
    }

    /// The conversations in the store.
    pub fn conversations(&self) -> Result<Vec<String>, StoreError> {
        let path = &self.inner.path;
        let reader = self.reader();
        let mut stmt = reader
            .prepare("SELECT DISTINCT conversation FROM events ORDER BY conversation")
            .map_err(|e| sqlite_error(path, e))?;
        let mut rows = stmt.query([]).map_err(|e| sqlite_error(path, e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| sqlite_error(path, e))? {
            out.push(column(&self.inner.location, "events", row, 0)?);
        }
        Ok(out)
    }
}

/// The SQLite side of the writer thread: the one writer connection.
struct SqliteWriter {
    conn: Connection,
    path: PathBuf,
    /// The sequence number and time of the last row of the latest batch
    /// that reached its commit (see [`Backend::committed_after_all`]).
    last_row: Option<(i64, i64)>,
    /// The conversations whose task changes the task table may lack.
    unfolded: Unfolded,
}

/// SQLite writes the task table when its writer is idle, not in each
/// batch's transaction: a task is a row written twice (created, ended),
/// and in a wide fan-out those writes were half of the writer's work, on
/// the path from a result's record to its durability. `tasks_folded`
/// says, per conversation, up to which event the table holds; readers
/// ([`SqliteStore::tasks`]) fold the events after it. The writer folds
/// them into the table from the events themselves, in one transaction
/// with `tasks_folded` ([`fold_into_table`]), so the table is whatever
/// the log says up to that event, whoever wrote the events and whatever
/// a crash left behind (see `docs/store.md`).
struct Unfolded {
    /// Conversations appended to since the table was last written.
    conversations: HashSet<String>,
    /// Records appended since then.
    records: usize,
    /// When the first of them was appended.
    since: Option<Instant>,
    /// How many records wait before a batch writes the table first (a
    /// writer that is never idle); doubled while the table cannot be
    /// written.
    force_at: usize,
}

impl Default for Unfolded {
    fn default() -> Self {
        Self {
            conversations: HashSet::new(),
            records: 0,
            since: None,
            force_at: FOLD_EVERY_RECORDS,
        }
    }
}

/// A writer that is never idle writes the task table before a batch once
/// this many records wait to be folded, or [`FOLD_EVERY`] after the first.
const FOLD_EVERY_RECORDS: usize = 100_000;
/// See [`FOLD_EVERY_RECORDS`].
const FOLD_EVERY: Duration = Duration::from_secs(5);

impl Unfolded {
    fn is_due(&self) -> bool {
        self.records >= self.force_at || self.since.is_some_and(|t| t.elapsed() >= FOLD_EVERY)
    }
}

/// Brings the task table up to date for `conversations`, in one immediate
/// transaction: for each, the task changes of the events after its
/// `tasks_folded`, written, and `tasks_folded` moved to its last event.
/// Reading the events here, not changes kept in memory, makes the table
/// right whatever wrote them (another writer of the conversation, a
/// writer that crashed before it was idle).
fn fold_into_table<'a>(
    conn: &mut Connection,
    path: &Path,
    conversations: impl IntoIterator<Item = &'a String>,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| sqlite_error(path, e))?;
    for conversation in conversations {
        let through = folded_through(&tx, conversation).map_err(|e| sqlite_error(path, e))?;
        let mut changes = TaskChanges::default();
        let last = fold_events_after(&tx, path, conversation, through, &mut changes)?;
        if last > through {
            // Each change carries its own commit time: the 0 is never used.
            write_tasks(&tx, path, &changes, 0)?;
            tx.prepare_cached(
                "INSERT INTO tasks_folded (conversation, seq) VALUES (?1, ?2) \
                 ON CONFLICT (conversation) DO UPDATE SET seq = excluded.seq",
            )
            .and_then(|mut folded| folded.execute(params![conversation, last]))
            .map_err(|e| sqlite_error(path, e))?;
        }
    }
    tx.commit().map_err(|e| sqlite_error(path, e))
}

/// The task changes of the events of `conversation` after `after`, folded
/// onto `changes` (each at its own commit time).
fn fold_events_after(
    conn: &Connection,
    path: &Path,
    conversation: &str,
    after: i64,
    changes: &mut TaskChanges,
) -> Result<i64, StoreError> {
    let location = &StoreLocation::File(path.to_owned());
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, at_ms, record FROM events WHERE conversation = ?1 AND seq > ?2 \
             ORDER BY seq",
        )
        .map_err(|e| sqlite_error(path, e))?;
    let mut rows = stmt
        .query(params![conversation, after])
        .map_err(|e| sqlite_error(path, e))?;
    let mut records = Vec::new();
    let mut last = after;
    while let Some(row) = rows.next().map_err(|e| sqlite_error(path, e))? {
        let seq: i64 = column(location, "events", row, 0)?;
        last = seq;
        let text: String = column(location, "events", row, 2)?;
        // Only rows with task records change the table (the encoder writes
        // compact JSON: a task record holds exactly this; a message that
        // merely quotes it costs a decode, nothing more).
        if !text.contains(r#""record":"task_"#) {
            continue;
        }
        let at_ms: i64 = column(location, "events", row, 1)?;
        records.clear();
        decode_row(location, conversation, seq, &text, &mut records)?;
        changes.add_at(conversation, &records, at_ms);
    }
    Ok(last)
}

/// Up to which event the task table holds `conversation`'s task changes
/// (0: none).
fn folded_through(conn: &Connection, conversation: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM tasks_folded WHERE conversation = ?1",
        [conversation],
        |row| row.get(0),
    )
}

/// A task created (or created again): its whole row.
const UPSERT_TASK: &str =
    "INSERT INTO tasks (conversation, id, parent, owner, kind, source, status, \
     attempts, created_at_ms, finished_at_ms, outcome) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
     ON CONFLICT (conversation, id) DO UPDATE SET parent = excluded.parent, \
     owner = excluded.owner, kind = excluded.kind, source = excluded.source, \
     status = excluded.status, attempts = excluded.attempts, \
     created_at_ms = excluded.created_at_ms, finished_at_ms = excluded.finished_at_ms, \
     outcome = excluded.outcome";

/// A task's later attempts and its end, while it has not ended.
const UPDATE_TASK: &str = "UPDATE tasks SET attempts = MAX(attempts, ?3), \
     status = COALESCE(?4, status), \
     outcome = CASE WHEN ?4 IS NULL THEN outcome ELSE ?5 END, \
     finished_at_ms = CASE WHEN ?4 IS NULL THEN NULL ELSE ?6 END \
     WHERE conversation = ?1 AND id = ?2 AND finished_at_ms IS NULL";

/// Applies a batch's task changes, committed at `at_ms` (unless they carry
/// times of their own), in `tx`.
pub(crate) fn write_tasks(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    tasks: &TaskChanges,
    at_ms: i64,
) -> Result<(), StoreError> {
    write_tasks_with(tx, tasks, at_ms, |e| sqlite_error(path, e))
}

/// [`write_tasks`], its errors made by `sqlite`.
fn write_tasks_with<E>(
    tx: &rusqlite::Transaction<'_>,
    tasks: &TaskChanges,
    at_ms: i64,
    sqlite: impl Fn(rusqlite::Error) -> E,
) -> Result<(), E> {
    if tasks.changes.is_empty() {
        return Ok(());
    }
    let mut upsert = tx.prepare_cached(UPSERT_TASK).map_err(&sqlite)?;
    let mut update = tx.prepare_cached(UPDATE_TASK).map_err(&sqlite)?;
    for (conversation, id, change) in &tasks.changes {
        match change {
            TaskChange::Row(row) => upsert.execute(params![
                &**conversation,
                id,
                row.parent,
                row.owner,
                row.kind,
                row.source,
                row.status,
                row.attempts,
                row.created_at.unwrap_or(at_ms),
                row.finished_at.map(|at| at.unwrap_or(at_ms)),
                row.outcome,
            ]),
            TaskChange::Update { attempts, finish } => update.execute(params![
                &**conversation,
                id,
                attempts,
                finish.as_ref().map(|f| f.status),
                finish.as_ref().map(|f| f.outcome.as_str()),
                finish.as_ref().map(|f| f.at.unwrap_or(at_ms)),
            ]),
        }
        .map_err(&sqlite)?;
    }
    Ok(())
}

impl Backend for SqliteWriter {
    fn write_batch(&mut self, batch: &[Encoded]) -> Result<(), WriteError> {
        self.last_row = None;
        if self.unfolded.is_due() {
            // Never idle: the task table first.
            self.idle();
        }
        let path = &self.path;
        let at_ms = commit_ms(&path.display());
        // Immediate: the write lock from the start (waiting while another
        // connection, such as a snapshot's, holds it), so the last events
        // read below are still the last when this batch's rows go in.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| write_error(path, e))?;
        let mut last = None;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (conversation, seq, at_ms, record) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| write_error(path, e))?;
            let appends = batch.iter().flat_map(|e| &e.appends);
            // Each conversation's last event, read in this transaction once
            // per batch (not cached across batches): another writer of the
            // conversation may have appended since, and a row numbered from
            // a stale count could land in the gap a row of several records
            // leaves below its number, under rows committed before it.
            let mut next_seq: HashMap<&str, i64> = HashMap::new();
            for append in appends.filter(|a| a.count > 0) {
                let seq = match next_seq.get_mut(append.conversation.as_str()) {
                    Some(seq) => seq,
                    None => {
                        let max: i64 = tx
                            .query_row(
                                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE conversation = ?1",
                                [&append.conversation],
                                |row| row.get(0),
                            )
                            .map_err(|e| write_error(path, e))?;
                        next_seq.entry(append.conversation.as_str()).or_insert(max)
                    }
                };
                for row in &append.rows {
                    *seq += i64::try_from(row.count).unwrap_or(i64::MAX);
                    last = Some(*seq);
                    insert
                        .execute(params![append.conversation, *seq, at_ms, row.text])
                        .map_err(|e| write_error(path, e))?;
                }
                // (Noted even if the commit fails: folding finds nothing.)
                let unfolded = &mut self.unfolded;
                if !unfolded.conversations.contains(&append.conversation) {
                    unfolded.conversations.insert(append.conversation.clone());
                }
                unfolded.records += append.count;
                unfolded.since.get_or_insert_with(Instant::now);
            }
        }
        // Only the commit can land unanswered.
        self.last_row = last.map(|seq| (seq, at_ms));
        tx.commit().map_err(|e| write_error(path, e))
    }

    fn rolled_back(&mut self) {
        // Nothing cached: each batch reads its sequence numbers afresh.
    }

    fn idle(&mut self) {
        let unfolded = &mut self.unfolded;
        if unfolded.conversations.is_empty() {
            return;
        }
        match fold_into_table(&mut self.conn, &self.path, &unfolded.conversations) {
            Ok(()) => *unfolded = Unfolded::default(),
            // Tried again when next idle (or due); readers fold the events.
            Err(error) => {
                tracing::warn!(%error, conversations = unfolded.conversations.len(), "could not bring the task table up to date; it is tried again later");
                unfolded.force_at = unfolded.records.saturating_mul(2).max(FOLD_EVERY_RECORDS);
                unfolded.since = Some(Instant::now());
            }
        }
    }

    fn committed_after_all(&mut self, batch: &[Encoded]) -> Result<bool, StoreError> {
        let (Some((seq, at_ms)), Some((conversation, text))) = (self.last_row, last_row(batch))
        else {
            return Ok(false);
        };
        let landed: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM events \
                 WHERE conversation = ?1 AND seq = ?2 AND at_ms = ?3 AND record = ?4)",
                params![conversation, seq, at_ms, text],
                |row| row.get(0),
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(landed)
    }

    fn max_row_bytes(&self) -> usize {
        MAX_ROW_BYTES
    }

    /// No: the task table is brought up to date from the events
    /// ([`fold_into_table`]).
    fn writes_task_changes(&self) -> bool {
        false
    }

    /// Only an `events` row: a batch writes no task rows here (the table
    /// is written when the writer is idle), so a task table refusing rows
    /// says nothing of the batch.
    fn probe(&mut self, conversation: &str, _tasks: bool) -> Result<(), WriteError> {
        let at_ms = now_ms();
        // The latest row of the last conversation after `conversation`, or
        // of the last one before it (the primary key's order: one index
        // probe each), copied to its next sequence number.
        let copy = self.rolled_back_write(|tx| {
            match probe_copy(tx, PROBE_EVENT, ">", conversation, at_ms)? {
                0 => probe_copy(tx, PROBE_EVENT, "<", conversation, at_ms),
                n => Ok(n),
            }
        });
        match copy {
            Ok(n) if n > 0 => return Ok(()),
            // No row to copy, or the copy refused: a minimal row decides.
            Ok(_) => {}
            Err(e) if e.data => {}
            Err(e) => return Err(e),
        }
        self.rolled_back_write(|tx| {
            tx.execute(
                "INSERT INTO events (conversation, seq, at_ms, record) \
                 SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3 FROM events WHERE conversation = ?1",
                params![PROBE_CONVERSATION, at_ms, probe_record()],
            )
        })
        .map(|_| ())
    }
}

impl SqliteWriter {
    /// Runs `write` in a transaction it rolls back ([`Backend::probe`]):
    /// the rows it wrote, or why it failed.
    fn rolled_back_write(
        &mut self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<usize>,
    ) -> Result<usize, WriteError> {
        let path = &self.path;
        let tx = self.conn.transaction().map_err(|e| write_error(path, e))?;
        let written = write(&tx).map_err(|e| write_error(path, e));
        let rolled_back = tx.rollback().map_err(|e| write_error(path, e));
        let written = written?;
        rolled_back?;
        Ok(written)
    }
}

/// [`Backend::probe`]'s copy of the latest `events` row of the last
/// conversation `{op}` `?1`, at its next sequence number and time `?2`.
const PROBE_EVENT: &str = "INSERT INTO events (conversation, seq, at_ms, record) \
     SELECT conversation, seq + 1, ?2, record FROM events WHERE conversation {op} ?1 \
     ORDER BY conversation DESC, seq DESC LIMIT 1";

/// Runs [`PROBE_EVENT`] (its `{op}` replaced by `op`): the rows it wrote,
/// 0 or 1.
fn probe_copy(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    op: &str,
    conversation: &str,
    at_ms: i64,
) -> rusqlite::Result<usize> {
    tx.execute(&sql.replace("{op}", op), params![conversation, at_ms])
}

/// One conversation's journal in a [`SqliteStore`]. Every
/// [`SqliteStore::set_snapshot_every`] records appended through it (and its
/// clones), it snapshots the conversation on a thread of its own.
#[derive(Debug, Clone)]
pub struct SqliteJournal {
    store: SqliteStore,
    conversation: String,
    trigger: Arc<Trigger>,
}

impl Journal for SqliteJournal {
    fn append(&self, records: Vec<JournalRecord>) -> BoxFuture<'static, Result<(), JournalError>> {
        let inner = &self.store.inner;
        let target = JournalTarget {
            store: &self.store,
            take: SqliteStore::take_snapshot,
            writer: &inner.writer,
            location: &inner.location,
            every: inner.snapshot_every.load(Ordering::Relaxed),
        };
        append_journaled(target, &self.trigger, &self.conversation, records)
    }
}

impl Store for SqliteStore {
    fn location(&self) -> &StoreLocation {
        &self.inner.location
    }

    fn journal(&self, conversation: &str) -> Result<Arc<dyn Journal>, StoreError> {
        Ok(Arc::new(SqliteStore::journal(self, conversation)?))
    }

    fn read(&self, conversation: &str) -> Result<Vec<JournalRecord>, StoreError> {
        SqliteStore::read(self, conversation)
    }

    fn replay(&self, conversation: &str) -> Result<Replay, StoreError> {
        SqliteStore::replay(self, conversation)
    }

    fn snapshot(&self, conversation: &str) -> Result<Option<i64>, StoreError> {
        SqliteStore::snapshot(self, conversation)
    }

    fn set_snapshot_every(&self, records: u64) {
        SqliteStore::set_snapshot_every(self, records);
    }

    fn conversations(&self) -> Result<Vec<String>, StoreError> {
        SqliteStore::conversations(self)
    }

    fn tasks(&self, conversation: &str) -> Result<Vec<StoredTask>, StoreError> {
        SqliteStore::tasks(self, conversation)
    }

    fn stats(&self) -> &StoreStats {
        SqliteStore::stats(self)
    }
}

/// An SQLite error of the writer's batch as a [`WriteError`]: SQLite
/// refused the data (a CHECK or NOT NULL constraint, a type a strict
/// column does not take, a value too large), so writing it again fails
/// again; or a failure that may pass (busy, locked, the disk, another
/// writer's row on the primary key, and a trigger's `RAISE`, which a
/// baton store has none of).
fn write_error(path: &Path, e: rusqlite::Error) -> WriteError {
    use rusqlite::ffi;
    let data = match &e {
        rusqlite::Error::SqliteFailure(failure, _) => {
            matches!(
                failure.extended_code,
                ffi::SQLITE_CONSTRAINT_CHECK
                    | ffi::SQLITE_CONSTRAINT_NOTNULL
                    | ffi::SQLITE_CONSTRAINT_DATATYPE
            ) || matches!(
                failure.code,
                rusqlite::ErrorCode::TooBig | rusqlite::ErrorCode::TypeMismatch
            )
        }
        _ => false,
    };
    WriteError {
        error: Box::new(sqlite_error(path, e)),
        data,
    }
}

/// Runs `f` again while SQLite answers "busy" without waiting: switching a
/// new file to WAL does, when another process opens the file at the same
/// moment (its busy handler is not consulted). Up to about 2.5 s in all.
fn retry_while_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let mut pause = std::time::Duration::from_millis(5);
    for _ in 0..9 {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                std::thread::sleep(pause);
                pause *= 2;
            }
            other => return other,
        }
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(text: &str) -> JournalRecord {
        JournalRecord::UserInput { text: text.into() }
    }

    /// Two writers of one conversation (two stores on one file), committing
    /// in the same millisecond: each batch numbers its rows from the last
    /// event in the file, not from its own count, so the first writer's
    /// next append lands after the other's row rather than failing on the
    /// primary key (or, where the other's row left a gap, landing under
    /// it), and nothing is dropped.
    #[test]
    fn a_second_writer_in_the_same_millisecond_appends_after_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.db");
        crate::writer::seam::fix_commit_ms(&path.display().to_string(), 1_000);
        let one = SqliteStore::open(&path).unwrap();
        let two = SqliteStore::open(&path).unwrap();
        let block = futures::executor::block_on;
        let (j1, j2) = (one.journal("c").unwrap(), two.journal("c").unwrap());
        block(j1.append(vec![input("x")])).unwrap();
        block(j2.append(vec![input("y")])).unwrap();
        assert_eq!(block(j1.append(vec![input("a")])), Ok(()));
        block(j1.append(vec![input("b")])).unwrap();
        assert_eq!(
            one.read("c").unwrap(),
            vec![input("x"), input("y"), input("a"), input("b")]
        );
    }
}

//! [`SqliteStore`]: the embedded store. One file, one writer thread, group
//! commit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use baton_core::{Journal, JournalError, JournalRecord};
use futures::future::BoxFuture;
use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::migrations;

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

/// Counters of the writer thread, to see group commit at work.
#[derive(Debug, Default)]
pub struct StoreStats {
    transactions: AtomicU64,
    appends: AtomicU64,
    records: AtomicU64,
}

impl StoreStats {
    /// Transactions committed.
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
}

struct Append {
    conversation: String,
    records: Vec<String>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Append>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    reader: Mutex<Connection>,
    stats: Arc<StoreStats>,
}

impl Drop for Inner {
    /// Closing the store commits everything queued, then stops the writer.
    fn drop(&mut self) {
        drop(
            self.writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(thread) = self
            .writer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = thread.join();
        }
    }
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
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000;"
        ))
        .map_err(|e| sqlite_error(&path, e))?;
        migrations::migrate(&mut conn, &path, version)?;
        let reader = Connection::open(&path).map_err(|e| sqlite_error(&path, e))?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(StoreStats::default());
        let writer_stats = Arc::clone(&stats);
        let writer_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("baton-store-writer".into())
            .spawn(move || write_loop(conn, &writer_path, &rx, &writer_stats))
            .map_err(|e| sqlite_error(&path, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(thread)),
                reader: Mutex::new(reader),
                stats,
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The writer's counters.
    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// The journal of one conversation, to hand to
    /// `Orchestrator::builder(..).journal(..)`.
    pub fn journal(&self, conversation: impl Into<String>) -> Result<SqliteJournal, StoreError> {
        Ok(SqliteJournal {
            store: self.clone(),
            conversation: conversation.into(),
        })
    }

    /// Every record of `conversation`, in order (feed it to
    /// `baton_core::Replay::from_records`).
    pub fn read(&self, conversation: &str) -> Result<Vec<JournalRecord>, StoreError> {
        let path = &self.inner.path;
        let reader = self
            .inner
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut stmt = reader
            .prepare("SELECT seq, record FROM events WHERE conversation = ?1 ORDER BY seq")
            .map_err(|e| sqlite_error(path, e))?;
        let rows: Vec<(i64, String)> = stmt
            .query_map([conversation], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| sqlite_error(path, e))?;
        rows.into_iter()
            .map(|(seq, text)| {
                serde_json::from_str(&text).map_err(|e| StoreError::Malformed {
                    path: path.clone(),
                    conversation: conversation.to_owned(),
                    seq,
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// The conversations in the store.
    pub fn conversations(&self) -> Result<Vec<String>, StoreError> {
        let path = &self.inner.path;
        let reader = self
            .inner
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut stmt = reader
            .prepare("SELECT DISTINCT conversation FROM events ORDER BY conversation")
            .map_err(|e| sqlite_error(path, e))?;
        stmt.query_map([], |row| row.get(0))
            .and_then(Iterator::collect)
            .map_err(|e| sqlite_error(path, e))
    }

    /// Queues an append in call order; the receiver resolves once durable.
    fn append(
        &self,
        conversation: &str,
        records: Vec<String>,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        let (reply, done) = oneshot::channel();
        let append = Append {
            conversation: conversation.to_owned(),
            records,
            reply,
        };
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let unsent = match writer.as_ref() {
            Some(tx) => tx.send(append).err().map(|mpsc::SendError(a)| a),
            None => Some(append),
        };
        if let Some(append) = unsent {
            let _ = append.reply.send(Err(StoreError::Closed {
                path: self.inner.path.clone(),
            }));
        }
        done
    }
}

/// The writer thread: takes whatever appends are queued, writes them in one
/// transaction, then answers them all.
fn write_loop(mut conn: Connection, path: &Path, rx: &mpsc::Receiver<Append>, stats: &StoreStats) {
    let mut next_seq: HashMap<String, i64> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = write_batch(&mut conn, path, &mut next_seq, &batch);
        if let Err(error) = &result {
            // Callers that dropped their future hear of it only here.
            tracing::error!(%error, appends = batch.len(), "journal commit failed");
            // The transaction rolled back: forget cached sequence numbers.
            next_seq.clear();
        }
        stats.transactions.fetch_add(1, Ordering::Relaxed);
        stats
            .appends
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for append in batch {
            stats
                .records
                .fetch_add(append.records.len() as u64, Ordering::Relaxed);
            let _ = append.reply.send(result.clone());
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    path: &Path,
    next_seq: &mut HashMap<String, i64>,
    batch: &[Append],
) -> Result<(), StoreError> {
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let tx = conn.transaction().map_err(|e| sqlite_error(path, e))?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO events (conversation, seq, at_ms, record) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(|e| sqlite_error(path, e))?;
        for append in batch {
            let seq = match next_seq.get_mut(&append.conversation) {
                Some(seq) => seq,
                None => {
                    let max: i64 = tx
                        .query_row(
                            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE conversation = ?1",
                            [&append.conversation],
                            |row| row.get(0),
                        )
                        .map_err(|e| sqlite_error(path, e))?;
                    next_seq.entry(append.conversation.clone()).or_insert(max)
                }
            };
            for record in &append.records {
                *seq += 1;
                insert
                    .execute(params![append.conversation, *seq, at_ms, record])
                    .map_err(|e| sqlite_error(path, e))?;
            }
        }
    }
    tx.commit().map_err(|e| sqlite_error(path, e))
}

/// One conversation's journal in a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteJournal {
    store: SqliteStore,
    conversation: String,
}

impl Journal for SqliteJournal {
    fn append(&self, records: Vec<JournalRecord>) -> BoxFuture<'static, Result<(), JournalError>> {
        let encoded: Result<Vec<String>, _> = records.iter().map(serde_json::to_string).collect();
        let done = match encoded {
            Ok(encoded) => self.store.append(&self.conversation, encoded),
            Err(e) => {
                let message = format!("a record did not serialize: {e}");
                return Box::pin(futures::future::ready(Err(JournalError(message))));
            }
        };
        Box::pin(async move {
            match done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(JournalError(e.to_string())),
                Err(_) => Err(JournalError("the store's writer has stopped".into())),
            }
        })
    }
}

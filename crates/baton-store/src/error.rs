//! The store's error type.

use std::fmt;
use std::path::PathBuf;

/// Where a store lives, as errors and `baton log` name it. A PostgreSQL
/// URL is kept without its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file.
    File(PathBuf),
    /// A schema of a PostgreSQL database.
    Postgres {
        /// The URL, password removed.
        url: String,
        /// The schema holding the store's tables.
        schema: String,
    },
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::File(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres { url, schema } => write!(f, "{url} (schema {schema})"),
        }
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(path: PathBuf) -> Self {
        StoreLocation::File(path)
    }
}

/// What can go wrong opening or using a store. Every variant names the
/// store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A store spec that names no store.
    #[error("`{spec}` is not a store: {reason}")]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store was to be opened, not created, and there is none.
    #[error("{location}: no baton store there (nothing was created)")]
    Missing {
        /// Where it was looked for.
        location: StoreLocation,
    },
    /// The file exists but is not an SQLite database (it was left untouched).
    #[error("{path}: not an SQLite database (the file was left untouched)")]
    NotSqlite {
        /// The file.
        path: PathBuf,
    },
    /// The file or schema holds something else's tables (left untouched).
    #[error("{location}: holds tables of something else ({tables}), not a baton store; it was left untouched")]
    Foreign {
        /// The file or schema.
        location: StoreLocation,
        /// Its tables, comma-separated.
        tables: String,
    },
    /// The store was written by a newer baton.
    #[error(
        "{location}: schema version {found} is newer than this baton knows ({known}); upgrade baton"
    )]
    NewerSchema {
        /// The file or schema.
        location: StoreLocation,
        /// The store's version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// SQLite reported an error.
    #[error("{path}: {message}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },
    /// PostgreSQL reported an error, or could not be reached.
    #[error("{location}: {message}")]
    Postgres {
        /// The database and schema.
        location: StoreLocation,
        /// The client's message.
        message: String,
    },
    /// A stored record did not parse.
    #[error("{location}: record {seq} of `{conversation}` is malformed: {message}")]
    Malformed {
        /// The store.
        location: StoreLocation,
        /// The conversation.
        conversation: String,
        /// The record's sequence number.
        seq: i64,
        /// The parser's message.
        message: String,
    },
    /// A column of the store's tables holds a type this baton does not read
    /// there (a table changed by hand, or made by something else).
    #[error("{location}: column `{column}` of table `{table}` cannot be read: {message}")]
    BadColumn {
        /// The store.
        location: StoreLocation,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What it holds, and the client's message.
        message: String,
    },
    /// A name no store can give a conversation (see
    /// [`crate::store::MAX_CONVERSATION_BYTES`]); nothing was written.
    #[error("{location}: `{conversation}` cannot name a conversation: {reason}")]
    BadConversation {
        /// The store.
        location: StoreLocation,
        /// The name, its first 40 characters if longer, escaped.
        conversation: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded, or is larger than a row of the store
    /// holds: it can never be written, so nothing of its append was, and
    /// the append is not kept to go again.
    #[error("{location}: a record of `{conversation}` could not be encoded: {message}")]
    Unencodable {
        /// The store.
        location: StoreLocation,
        /// The conversation.
        conversation: String,
        /// The encoder's message, or the record's size and the limit.
        message: String,
    },
    /// The database refused a record of the conversation for its data (a
    /// value or constraint it can never take), while it takes rows: another
    /// append landed in the same try, or the writer's probe (a copy of a
    /// row it took before, or a minimal row) was taken (else the fault is
    /// the database's: [`StoreError::RefusesEveryRow`]; its append may have
    /// been answered so at first, and kept, until a try showed the database
    /// taking rows). The record is lost, so the
    /// conversation's journal takes no more (a later append answered `Ok`
    /// would claim it durable; [`StoreError::ends_journal`]). Resume the
    /// conversation from the store.
    #[error("{location}: the store refused a record of `{conversation}` ({message}): it is lost, and the conversation's journal takes no more (resume it from the store, opened again)")]
    Refused {
        /// The store.
        location: StoreLocation,
        /// The conversation.
        conversation: String,
        /// The database's reason.
        message: String,
    },
    /// The database refuses every row alike, not this conversation's data:
    /// no other append landed beside it, and the writer's probe was refused
    /// too, both a copy of a row it took before and a minimal row (an
    /// administrator's change to its tables, such as a new `NOT NULL`
    /// column, a constraint or a trigger, that no record of baton's can
    /// meet). The records are kept, not lost, and written again, ahead of
    /// the conversation's later ones, after the journal's retry pauses; they
    /// land once the database takes rows again. A failure that may pass:
    /// the journal stays open. Only this conversation's appends wait so:
    /// the other conversations' are written without them. Should the fault
    /// be the records' after all (a rule no row of this conversation meets,
    /// in a store with no other row to copy), the first try in which
    /// another conversation's append lands tells so: the records are then
    /// refused ([`StoreError::Refused`]).
    #[error("{location}: the database refuses every journal row alike, not only these records ({message}): they are kept and written again once it takes rows (was a column, a constraint or a trigger added to its tables?)")]
    RefusesEveryRow {
        /// The store.
        location: StoreLocation,
        /// The database's reason, for the append's own rows.
        message: String,
    },
    /// The store has been failing for so long that the records waiting for
    /// it in memory would pass the most the writer keeps
    /// (`MAX_KEPT_BYTES`, 256 MiB) with this append's: its records were
    /// refused, so they are lost, and the conversation's journal takes no
    /// more (a later append answered `Ok` would claim them durable). Its
    /// journal is closed for good ([`StoreError::ends_journal`]); resume
    /// the conversation from the store once the store works again. (An
    /// append with no records is never refused so; nor is any while no
    /// record of a failed batch waits: a store that works refuses nothing
    /// for this.)
    #[error("{location}: the store keeps failing and {kept_bytes} bytes of journal records already wait in memory; {bytes} more would pass the most it keeps ({max_bytes}): records of `{conversation}` were refused and are lost, and its journal takes no more (resume it from the store, opened again once it works)")]
    KeptFull {
        /// The store.
        location: StoreLocation,
        /// The conversation.
        conversation: String,
        /// The bytes of records waiting.
        kept_bytes: usize,
        /// The bytes of the refused append's records.
        bytes: usize,
        /// The most bytes of records kept.
        max_bytes: usize,
    },
    /// The operating system refused something (a thread, a file).
    #[error("{location}: {message}")]
    Io {
        /// The store.
        location: StoreLocation,
        /// What failed.
        message: String,
    },
    /// The store was closed: its writer is gone. (A writer that died says
    /// why: [`StoreError::WriterStopped`].)
    #[error("{location}: the store's writer has stopped")]
    Closed {
        /// The store.
        location: StoreLocation,
    },
    /// A read on the PostgreSQL store's reader thread failed for a reason
    /// of baton's own, not the database's: the read panicked (the thread
    /// goes on with the next read), or the thread died (reopen the store
    /// to read).
    #[error("{location}: the store's reader failed ({reason})")]
    ReaderFailed {
        /// The store.
        location: StoreLocation,
        /// What failed.
        reason: String,
    },
    /// The store's writer or encoder thread died (it panicked, also while
    /// opening the store): the appends it held, and every later one, fail
    /// with this. Reopen the store to write again.
    #[error(
        "{location}: the store's writer has stopped ({reason}); nothing more is written to it"
    )]
    WriterStopped {
        /// The store.
        location: StoreLocation,
        /// Why it stopped.
        reason: String,
    },
}

impl StoreError {
    /// Whether the store takes no more writes ([`StoreError::Closed`],
    /// [`StoreError::WriterStopped`]): an append failing with this will
    /// not succeed later.
    pub fn is_closed(&self) -> bool {
        matches!(
            self,
            StoreError::Closed { .. } | StoreError::WriterStopped { .. }
        )
    }
}

impl StoreError {
    /// What the database or the system said, without the store's location
    /// (for an error that wraps this one and names the store itself).
    pub fn reason(&self) -> String {
        match self {
            StoreError::Sqlite { message, .. }
            | StoreError::Postgres { message, .. }
            | StoreError::Io { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Whether the journal that got this takes no more records: the store
    /// is closed ([`StoreError::is_closed`]), or the journal lost records
    /// ([`StoreError::KeptFull`], [`StoreError::Refused`],
    /// [`StoreError::Unencodable`]): a later append answered `Ok` would
    /// claim them durable.
    pub fn ends_journal(&self) -> bool {
        self.is_closed()
            || matches!(
                self,
                StoreError::KeptFull { .. }
                    | StoreError::Refused { .. }
                    | StoreError::Unencodable { .. }
            )
    }
}

impl From<StoreError> for baton_core::JournalError {
    /// A closed store, or a journal that lost records, is a closed
    /// journal; any other failure may pass.
    fn from(e: StoreError) -> Self {
        if e.ends_journal() {
            baton_core::JournalError::closed(e.to_string())
        } else {
            baton_core::JournalError::new(e.to_string())
        }
    }
}

//! The [`Store`] trait both backends implement, and [`open`], which picks a
//! backend from a path or URL.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use baton_core::{Journal, JournalRecord, Replay};

use crate::error::{StoreError, StoreLocation};
use crate::postgres::{PgOptions, PgStore};
use crate::sqlite::SqliteStore;
use crate::tasks::StoredTask;
use crate::writer::StoreStats;

/// The longest conversation name a store takes, in bytes: PostgreSQL
/// indexes a conversation's rows by its name, and an index entry holds at
/// most about 2.7 kB.
pub const MAX_CONVERSATION_BYTES: usize = 1_024;

/// Checks that `conversation` can name a conversation in any store (so a
/// conversation can move between backends): at most
/// [`MAX_CONVERSATION_BYTES`], and no NUL character, which PostgreSQL's
/// `text` cannot hold. Either would fail every write of it, for good.
pub(crate) fn check_conversation(
    location: &StoreLocation,
    conversation: &str,
) -> Result<(), StoreError> {
    let reason = if conversation.contains('\0') {
        "it holds a NUL character".to_owned()
    } else if conversation.len() > MAX_CONVERSATION_BYTES {
        format!(
            "it is {} bytes long, more than {MAX_CONVERSATION_BYTES}",
            conversation.len()
        )
    } else {
        return Ok(());
    };
    let mut shown: String = conversation.chars().take(40).collect();
    if shown.len() < conversation.len() {
        shown.push('…');
    }
    Err(StoreError::BadConversation {
        location: location.clone(),
        conversation: shown.escape_debug().to_string(),
        reason,
    })
}

/// A durable store of conversations: one append-only journal per
/// conversation, written by one writer thread with group commit.
///
/// The reading methods block the calling thread until the database answers
/// (they are safe to call from async code, but hold its thread meanwhile).
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Where the store lives (a file, or a database and schema).
    fn location(&self) -> &StoreLocation;

    /// The journal of one conversation, to hand to
    /// `Orchestrator::builder(..).journal(..)`. One process should write a
    /// conversation at a time. A name no store can hold (see
    /// [`MAX_CONVERSATION_BYTES`]) is [`StoreError::BadConversation`].
    fn journal(&self, conversation: &str) -> Result<Arc<dyn Journal>, StoreError>;

    /// Every record of `conversation`, in order; empty for an unknown one.
    fn read(&self, conversation: &str) -> Result<Vec<JournalRecord>, StoreError>;

    /// The conversation rebuilt from its latest snapshot and the records
    /// after it (the whole journal if it has no snapshot), to hand to
    /// `Orchestrator::builder(..).resume(..)` after a crash. Equal to
    /// `Replay::from_records(self.read(conversation)?)`, read faster.
    fn replay(&self, conversation: &str) -> Result<Replay, StoreError> {
        Ok(Replay::from_records(self.read(conversation)?))
    }

    /// Writes a snapshot of `conversation` covering its records so far (if
    /// any came since the latest one) and returns the sequence number it
    /// covers. Journals also take them by themselves, every
    /// [`crate::snapshot::DEFAULT_SNAPSHOT_EVERY`] records unless set
    /// otherwise. The journal itself is kept whole.
    fn snapshot(&self, conversation: &str) -> Result<Option<i64>, StoreError>;

    /// From now on, each journal of this store snapshots its conversation
    /// every `records` records appended through it (0: never).
    fn set_snapshot_every(&self, records: u64);

    /// The conversations in the store, sorted.
    fn conversations(&self) -> Result<Vec<String>, StoreError>;

    /// The task table's rows for `conversation`, by task id: every task of
    /// the conversation's tree as its log describes it (kept by the writer
    /// in the same transaction as the records), read without a replay.
    fn tasks(&self, conversation: &str) -> Result<Vec<StoredTask>, StoreError>;

    /// The writer's counters (transactions, appends, records).
    fn stats(&self) -> &StoreStats;
}

/// Which store a command-line spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// An SQLite file: a plain path, or `sqlite:PATH`.
    Sqlite(PathBuf),
    /// A PostgreSQL database: `postgres://…` or `postgresql://…`, with an
    /// optional `schema=NAME` query parameter (default `baton`).
    Postgres {
        /// The connection URL, without the `schema` parameter.
        url: String,
        /// The schema holding the store's tables.
        schema: String,
    },
}

impl FromStr for StoreSpec {
    type Err = StoreError;

    fn from_str(spec: &str) -> Result<Self, StoreError> {
        let bad = |reason: &str| StoreError::BadSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            let (url, schema) = split_schema(spec).map_err(|r| bad(&r))?;
            return Ok(StoreSpec::Postgres {
                url,
                schema: schema.unwrap_or_else(|| PgOptions::default().schema),
            });
        }
        let path = match spec.strip_prefix("sqlite:") {
            Some(rest) => rest.strip_prefix("//").unwrap_or(rest),
            None => {
                if let Some((scheme, _)) = spec.split_once("://") {
                    return Err(bad(&format!(
                        "unknown scheme `{scheme}`: use a file path, sqlite:PATH or postgres://…"
                    )));
                }
                spec
            }
        };
        if path.is_empty() {
            return Err(bad("no file path"));
        }
        Ok(StoreSpec::Sqlite(PathBuf::from(path)))
    }
}

/// Takes a `schema=NAME` parameter out of a URL's query.
fn split_schema(url: &str) -> Result<(String, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut schema = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("schema=") {
            Some(name) => schema = Some(name.to_owned()),
            None => rest.push(pair),
        }
    }
    if let Some(name) = &schema {
        crate::postgres::check_schema_name(name)?;
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, schema))
}

/// Opens the store a spec names, creating it if there is none: a path or
/// `sqlite:PATH` is an SQLite file ([`SqliteStore`]), `postgres://…` a
/// PostgreSQL database ([`PgStore`]). Something that is not a baton store
/// is refused and left untouched.
pub fn open(spec: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match spec.parse()? {
        StoreSpec::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
        StoreSpec::Postgres { url, schema } => Arc::new(PgStore::open(&url, PgOptions { schema })?),
    })
}

/// Opens an existing store a spec names, for reading: where there is no
/// baton store yet, this is [`StoreError::Missing`] and nothing is created.
pub fn open_existing(spec: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match spec.parse()? {
        StoreSpec::Sqlite(path) => Arc::new(SqliteStore::open_existing(path)?),
        StoreSpec::Postgres { url, schema } => {
            Arc::new(PgStore::open_existing(&url, PgOptions { schema })?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_pick_a_backend() {
        assert_eq!(
            "research.db".parse::<StoreSpec>().unwrap(),
            StoreSpec::Sqlite("research.db".into())
        );
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<StoreSpec>().unwrap(),
            StoreSpec::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            "sqlite:///tmp/x.db".parse::<StoreSpec>().unwrap(),
            StoreSpec::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            "postgres://127.0.0.1/test".parse::<StoreSpec>().unwrap(),
            StoreSpec::Postgres {
                url: "postgres://127.0.0.1/test".into(),
                schema: "baton".into()
            }
        );
        assert_eq!(
            "postgresql://u@h/db?schema=research&sslmode=disable"
                .parse::<StoreSpec>()
                .unwrap(),
            StoreSpec::Postgres {
                url: "postgresql://u@h/db?sslmode=disable".into(),
                schema: "research".into()
            }
        );
    }

    #[test]
    fn bad_specs_say_why() {
        for spec in [
            "",
            "sqlite:",
            "mysql://h/db",
            "postgres://h/db?schema=a;drop",
        ] {
            let err = spec.parse::<StoreSpec>().unwrap_err();
            assert!(matches!(err, StoreError::BadSpec { .. }), "{spec}: {err}");
        }
        let err = "mysql://h/db".parse::<StoreSpec>().unwrap_err();
        assert!(err.to_string().contains("unknown scheme `mysql`"), "{err}");
    }
}

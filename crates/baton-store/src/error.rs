//! The store's error type.

use std::path::PathBuf;

/// What can go wrong opening or using a store. Every variant names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is not an SQLite database (it was left untouched).
    #[error("{path}: not an SQLite database (the file was left untouched)")]
    NotSqlite {
        /// The file.
        path: PathBuf,
    },
    /// The file is an SQLite database of something else (left untouched).
    #[error("{path}: an SQLite database, but not a baton store (it has tables {tables}); the file was left untouched")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Its tables, comma-separated.
        tables: String,
    },
    /// The store was written by a newer baton.
    #[error(
        "{path}: schema version {found} is newer than this baton knows ({known}); upgrade baton"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The file's version.
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
    /// A stored record did not parse.
    #[error("{path}: record {seq} of `{conversation}` is malformed: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The conversation.
        conversation: String,
        /// The record's sequence number.
        seq: i64,
        /// The parser's message.
        message: String,
    },
    /// The writer thread is gone (the store was closed or crashed).
    #[error("{path}: the store's writer has stopped")]
    Closed {
        /// The file.
        path: PathBuf,
    },
}

//! # baton-store
//!
//! Durable journals for baton conversations, behind one [`Store`] trait.
//!
//! * [`open`] picks a backend from a spec: a path or `sqlite:PATH` is an
//!   SQLite file, `postgres://…` (optionally `?schema=NAME`) a PostgreSQL
//!   database; [`open_existing`] opens only a store that exists.
//! * [`sqlite`]: [`SqliteStore`], the embedded default: one SQLite file
//!   (WAL, `synchronous=FULL`), one writer thread that commits whatever is
//!   queued in one transaction (group commit), and a [`SqliteJournal`] per
//!   conversation implementing `baton_core::Journal`.
//! * [`postgres`]: [`PgStore`], the same design on PostgreSQL, one schema
//!   per store.
//! * [`snapshot`]: a conversation's state as the shortest list of records
//!   that replays to it; `Store::replay` reads the latest snapshot and the
//!   records after it. Journals take one every
//!   [`snapshot::DEFAULT_SNAPSHOT_EVERY`] records.
//! * [`tasks`]: the task table, one row per task, kept by the writer in
//!   the same transaction as the records that change it ([`Store::tasks`]).
//! * [`migrations`]: the versioned schema, and the checks that refuse a
//!   corrupt or foreign file or schema without touching it.
//! * [`error`]: the [`StoreError`] type.
//!
//! ```no_run
//! use baton_store::Store;
//!
//! let store = baton_store::open("research.db")?;    // or "postgres://127.0.0.1/test"
//! let journal = store.journal("research-1")?;      // hand to Orchestrator::builder(..).journal(..)
//! let replay = store.replay("research-1")?;        // after a crash: .resume(replay)
//! # let _ = (journal, replay);
//! # Ok::<(), baton_store::StoreError>(())
//! ```

pub mod error;
pub mod migrations;
#[cfg(test)]
mod pg_testing;
pub mod postgres;
pub mod snapshot;
pub mod sqlite;
pub mod store;
pub mod tasks;
mod writer;

pub use error::{StoreError, StoreLocation};
pub use postgres::{PgJournal, PgOptions, PgStore};
pub use sqlite::{Durability, SqliteJournal, SqliteStore};
pub use store::{open, open_existing, Store, StoreSpec};
pub use tasks::StoredTask;
pub use writer::StoreStats;

//! # baton-store
//!
//! Durable journals for baton conversations.
//!
//! * [`sqlite`]: [`SqliteStore`], the embedded default: one SQLite file
//!   (WAL, `synchronous=FULL`), one writer thread that commits whatever is
//!   queued in one transaction (group commit), and a [`SqliteJournal`] per
//!   conversation implementing `baton_core::Journal`.
//! * [`migrations`]: the versioned schema, and the checks that refuse a
//!   corrupt or foreign file without touching it.
//! * [`error`]: the [`StoreError`] type.
//!
//! ```no_run
//! use std::sync::Arc;
//! use baton_core::Replay;
//! use baton_store::SqliteStore;
//!
//! let store = SqliteStore::open("research.db")?;
//! let journal = store.journal("research-1")?;          // hand to Orchestrator::builder(..).journal(..)
//! let replay = Replay::from_records(store.read("research-1")?); // after a crash: .resume(replay)
//! # let _ = (Arc::new(journal), replay);
//! # Ok::<(), baton_store::StoreError>(())
//! ```

pub mod error;
pub mod migrations;
pub mod sqlite;

pub use error::StoreError;
pub use sqlite::{Durability, SqliteJournal, SqliteStore, StoreStats};

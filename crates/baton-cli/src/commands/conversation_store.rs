//! `--store` / `--session`: where `run` and `chat` keep a conversation, and
//! how they pick it up again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use baton_core::{Journal, Replay};
use baton_store::SqliteStore;

/// A conversation opened in a store: its journal, and what to resume from
/// if the store already held it.
pub struct StoredConversation {
    /// Keep it alive for the whole run: dropping the store joins its writer.
    pub store: SqliteStore,
    /// Where the conversation writes.
    pub journal: Arc<dyn Journal>,
    /// The stored conversation, if there was one.
    pub resume: Option<Replay>,
}

/// Opens `conversation` in the SQLite store at `path` (created if missing;
/// a foreign or corrupt file is refused, never overwritten).
pub fn open(path: &Path, conversation: &str) -> anyhow::Result<StoredConversation> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let store = SqliteStore::open(path)
        .with_context(|| format!("cannot open the store {}", path.display()))?;
    let records = store
        .read(conversation)
        .with_context(|| format!("cannot read `{conversation}` from {}", path.display()))?;
    let resume = (!records.is_empty()).then(|| {
        eprintln!(
            "resuming conversation `{conversation}` from {} ({} records)",
            path.display(),
            records.len()
        );
        Replay::from_records(records)
    });
    let journal: Arc<dyn Journal> = Arc::new(store.journal(conversation.to_owned())?);
    Ok(StoredConversation {
        store,
        journal,
        resume,
    })
}

/// Where `baton chat --session` keeps sessions: `$XDG_DATA_HOME/baton/sessions.db`
/// (`~/.local/share/baton/sessions.db` on Linux).
pub fn default_sessions_path() -> anyhow::Result<PathBuf> {
    let dir = dirs::data_dir()
        .context("cannot tell where this user's data directory is; pass --store")?;
    Ok(dir.join("baton").join("sessions.db"))
}

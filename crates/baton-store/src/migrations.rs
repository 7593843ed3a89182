//! The versioned schema (SQLite and PostgreSQL, numbered alike), and the
//! checks run before anything is written.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::{StoreError, StoreLocation};
use crate::snapshot::decode_row;
use crate::tasks::TaskChanges;

/// The newest schema version this build writes.
pub const SCHEMA_VERSION: i64 = 4;

/// The migrations, in order: entry `i` takes the schema from version `i`
/// to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE baton_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE events (
        conversation TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (conversation, seq)
    );
",
    // 2: snapshots, each covering a conversation's records up to `seq`.
    "
    CREATE TABLE snapshots (
        conversation TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        records TEXT NOT NULL,
        PRIMARY KEY (conversation, seq)
    );
",
    // 3: the task table, one row per task, kept with the events (filled
    // from the events already there by `backfill_tasks`).
    "
    CREATE TABLE tasks (
        conversation TEXT NOT NULL,
        id INTEGER NOT NULL,
        parent INTEGER,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER,
        outcome TEXT,
        PRIMARY KEY (conversation, id)
    ) WITHOUT ROWID;
",
    // 4: how far the task table holds each conversation's task changes:
    // the writer writes the table when it is idle, not with each batch,
    // and readers fold the events after this (see `docs/store.md`). Until
    // now the table was written with the events: it holds them all.
    "
    CREATE TABLE tasks_folded (
        conversation TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO tasks_folded (conversation, seq)
        SELECT conversation, MAX(seq) FROM events GROUP BY conversation;
",
];

/// The version whose migration creates the task table.
const TASK_TABLE_VERSION: usize = 3;

/// How many `events` rows the task-table backfill folds before it writes
/// what they do to the task table (a task is one row of a statement per
/// page, however many of its records the page holds).
pub const BACKFILL_PAGE_ROWS: usize = 2_000;

/// The most `events` rows the PostgreSQL backfill fetches in one round
/// trip. Fewer than a page: a row written before appends were split may
/// hold up to 1,024 records (megabytes), and a fetch is held whole.
pub const BACKFILL_FETCH_ROWS: usize = 128;

/// About how many bytes of records one fetch of the PostgreSQL backfill
/// holds: each fetch takes as many rows as this holds at the average size
/// of the rows of the fetch before it (one at least, at most
/// [`BACKFILL_FETCH_ROWS`]).
pub const BACKFILL_FETCH_BYTES: usize = 8 << 20;

/// How the PostgreSQL backfill pages (the constants above; tests lower
/// them).
#[derive(Debug, Clone, Copy)]
struct Paging {
    page_rows: usize,
    fetch_rows: usize,
    fetch_bytes: usize,
}

const PAGING: Paging = Paging {
    page_rows: BACKFILL_PAGE_ROWS,
    fetch_rows: BACKFILL_FETCH_ROWS,
    fetch_bytes: BACKFILL_FETCH_BYTES,
};

/// What a backfill did, for the log (and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Backfilled {
    rows: usize,
    /// Round trips that fetched rows.
    fetches: usize,
    /// The most rows, and the most bytes of records, a fetch held.
    largest_fetch_rows: usize,
    largest_fetch_bytes: usize,
    /// Pages of task changes written.
    writes: usize,
}

fn sqlite_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Sqlite {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Checks an existing file without writing to it: it must be empty, or an
/// SQLite database that is a baton store of a version this build knows.
/// Returns the file's schema version (0 for a new or empty file).
pub fn inspect(path: &Path) -> Result<i64, StoreError> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(0);
    };
    let mut header = [0u8; 16];
    let read = file.read(&mut header).map_err(|e| sqlite_error(path, e))?;
    if read == 0 {
        return Ok(0);
    }
    if read < 16 || &header != b"SQLite format 3\0" {
        return Err(StoreError::NotSqlite {
            path: path.to_owned(),
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| sqlite_error(path, e))?;
    // Another process may be creating or migrating the file this moment.
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| sqlite_error(path, e))?;
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .map_err(|e| sqlite_error(path, e))?;
    let tables: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .and_then(Iterator::collect)
        .map_err(|_| StoreError::NotSqlite {
            path: path.to_owned(),
        })?;
    if tables.is_empty() {
        return Ok(0);
    }
    if !tables.iter().any(|t| t == "baton_meta") {
        return Err(StoreError::Foreign {
            location: path.to_owned().into(),
            tables: tables.join(", "),
        });
    }
    let version: i64 = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM baton_meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .map_err(|e| sqlite_error(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            location: path.to_owned().into(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

/// Applies the migrations after the file's version, in one transaction
/// that holds the write lock from its start: another process opening the
/// same file at the same moment waits, then finds it migrated (`from`, read
/// before the lock, is only a lower bound).
pub fn migrate(conn: &mut Connection, path: &Path, from: i64) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| sqlite_error(path, e))?;
    let has_meta: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'baton_meta')",
            [],
            |row| row.get(0),
        )
        .map_err(|e| sqlite_error(path, e))?;
    let current: i64 = if has_meta {
        tx.query_row(
            "SELECT CAST(value AS INTEGER) FROM baton_meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .map_err(|e| sqlite_error(path, e))?
    } else {
        0
    };
    let from = from.max(current);
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(from).unwrap_or(0))
    {
        tx.execute_batch(sql).map_err(|e| sqlite_error(path, e))?;
        if i + 1 == TASK_TABLE_VERSION {
            backfill_tasks(&tx, path)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO baton_meta (key, value) VALUES ('schema_version', ?1)",
            [(i + 1).to_string()],
        )
        .map_err(|e| sqlite_error(path, e))?;
    }
    tx.commit().map_err(|e| sqlite_error(path, e))
}

/// Fills a new task table from the events already stored, as the writer
/// would have, row after row, each at its own commit time: the rows are
/// read one at a time and their changes written [`BACKFILL_PAGE_ROWS`]
/// rows at a time.
fn backfill_tasks(tx: &rusqlite::Transaction<'_>, path: &Path) -> Result<(), StoreError> {
    use crate::sqlite::column;
    let location = StoreLocation::File(path.to_owned());
    let mut stmt = tx
        .prepare("SELECT conversation, seq, at_ms, record FROM events ORDER BY conversation, seq")
        .map_err(|e| sqlite_error(path, e))?;
    let mut rows = stmt.query([]).map_err(|e| sqlite_error(path, e))?;
    let mut changes = TaskChanges::default();
    let mut folded = 0;
    while let Some(row) = rows.next().map_err(|e| sqlite_error(path, e))? {
        let conversation: String = column(&location, "events", row, 0)?;
        let seq: i64 = column(&location, "events", row, 1)?;
        let at_ms: i64 = column(&location, "events", row, 2)?;
        let text: String = column(&location, "events", row, 3)?;
        let mut records = Vec::new();
        decode_row(&location, &conversation, seq, &text, &mut records)?;
        changes.add_at(&conversation, &records, at_ms);
        folded += 1;
        if folded == BACKFILL_PAGE_ROWS {
            crate::sqlite::write_tasks(tx, path, &std::mem::take(&mut changes), 0)?;
            folded = 0;
        }
    }
    // Every change carries its own time: the 0 is never used.
    crate::sqlite::write_tasks(tx, path, &changes, 0)
}

/// The PostgreSQL migrations, numbered as the SQLite ones: entry `i` takes
/// a schema from version `i` to version `i + 1`.
const PG_MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE baton_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE events (
        conversation TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (conversation, seq)
    );
",
    "
    CREATE TABLE snapshots (
        conversation TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        records TEXT NOT NULL,
        PRIMARY KEY (conversation, seq)
    );
",
    "
    CREATE TABLE tasks (
        conversation TEXT NOT NULL,
        id BIGINT NOT NULL,
        parent BIGINT,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        finished_at_ms BIGINT,
        outcome TEXT,
        PRIMARY KEY (conversation, id)
    );
",
    // 4: SQLite's `tasks_folded`; PostgreSQL writes its task table in each
    // batch's transaction (one statement for all of a batch's tasks) and
    // has no table to add. The version still matters here: version 4's
    // records leave absent and zero fields out (a `TaskCreated` without
    // `tokens`), which an older baton cannot read, so it must refuse the
    // store (`NewerSchema`) rather than open it.
    "SELECT 1;",
];

/// Checks the store's schema in PostgreSQL and brings it up to date, in one
/// transaction holding an advisory lock (so two processes opening the same
/// schema at once do not both migrate). An empty or missing schema is a new
/// store (created only when `create`); one holding other tables is refused
/// ([`StoreError::Foreign`]), as is a newer version, and neither is
/// touched.
pub fn pg_migrate(
    client: &mut postgres::Client,
    schema: &str,
    location: &StoreLocation,
    create: bool,
) -> Result<(), StoreError> {
    let pg = |e: postgres::Error| crate::postgres::pg_error(location, e);
    let mut tx = client.transaction().map_err(pg)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("baton-store:{schema}")],
    )
    .map_err(pg)?;
    let tables: Vec<String> = tx
        .query(
            "SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = $1 ORDER BY 1",
            &[&schema],
        )
        .map_err(pg)?
        .iter()
        .map(|row| crate::postgres::column(location, "pg_tables", row, 0))
        .collect::<Result<_, _>>()?;
    let version = if tables.is_empty() {
        if !create {
            return Err(StoreError::Missing {
                location: location.clone(),
            });
        }
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET search_path TO \"{schema}\";"
        ))
        .map_err(pg)?;
        0
    } else if !tables.iter().any(|t| t == "baton_meta") {
        return Err(StoreError::Foreign {
            location: location.clone(),
            tables: tables.join(", "),
        });
    } else {
        let row = tx
            .query_one(
                "SELECT CAST(value AS BIGINT) AS value FROM baton_meta WHERE key = 'schema_version'",
                &[],
            )
            .map_err(pg)?;
        crate::postgres::column(location, "baton_meta", &row, 0)?
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            location: location.clone(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in PG_MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.batch_execute(sql).map_err(pg)?;
        if i + 1 == TASK_TABLE_VERSION {
            let done = pg_backfill_tasks(&mut tx, location, PAGING)?;
            tracing::info!(store = %location, rows = done.rows, fetches = done.fetches, "task table filled from the events");
        }
        let to = i64::try_from(i + 1).unwrap_or(i64::MAX).to_string();
        tx.execute(
            "INSERT INTO baton_meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&to],
        )
        .map_err(pg)?;
    }
    tx.commit().map_err(pg)
}

/// [`backfill_tasks`] for PostgreSQL: the events are read through a
/// portal, a few rows a round trip (`paging`: at most `fetch_rows`, about
/// `fetch_bytes` of records), and the changes of every `page_rows` rows are
/// written in two statements.
fn pg_backfill_tasks(
    tx: &mut postgres::Transaction<'_>,
    location: &StoreLocation,
    paging: Paging,
) -> Result<Backfilled, StoreError> {
    use crate::postgres::column;
    let pg = |e: postgres::Error| crate::postgres::pg_error(location, e);
    let portal = tx
        .bind(
            "SELECT conversation, seq, at_ms, record FROM events ORDER BY conversation, seq",
            &[],
        )
        .map_err(pg)?;
    let mut done = Backfilled::default();
    let mut changes = TaskChanges::default();
    let mut folded = 0;
    // The first fetch knows nothing of the rows' sizes: one row.
    let mut fetch = 1;
    loop {
        let rows = tx
            .query_portal(&portal, i32::try_from(fetch).unwrap_or(i32::MAX))
            .map_err(pg)?;
        done.fetches += 1;
        let mut bytes = 0;
        for row in &rows {
            let conversation: &str = column(location, "events", row, 0)?;
            let seq: i64 = column(location, "events", row, 1)?;
            let at_ms: i64 = column(location, "events", row, 2)?;
            let text: &str = column(location, "events", row, 3)?;
            bytes += text.len();
            let mut records = Vec::new();
            decode_row(location, conversation, seq, text, &mut records)?;
            changes.add_at(conversation, &records, at_ms);
            folded += 1;
            if folded == paging.page_rows {
                // Every change carries its own time: the 0 is never used.
                crate::postgres::write_tasks(tx, location, &std::mem::take(&mut changes), 0)?;
                done.writes += 1;
                folded = 0;
            }
        }
        done.rows += rows.len();
        done.largest_fetch_rows = done.largest_fetch_rows.max(rows.len());
        done.largest_fetch_bytes = done.largest_fetch_bytes.max(bytes);
        if rows.len() < fetch {
            break;
        }
        let average = (bytes / rows.len().max(1)).max(1);
        fetch = (paging.fetch_bytes / average).clamp(1, paging.fetch_rows.max(1));
    }
    if folded > 0 {
        crate::postgres::write_tasks(tx, location, &changes, 0)?;
        done.writes += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg_testing::TestSchema;
    use baton_core::{JournalRecord, TaskId, TaskKind, TaskRecord, TaskStatus};

    /// A version-2 schema whose events are `rows`: one task created per
    /// row, with `padding` bytes of arguments.
    fn old_events(client: &mut postgres::Client, rows: usize, padding: usize) {
        client.batch_execute(PG_MIGRATIONS[0]).unwrap();
        client.batch_execute(PG_MIGRATIONS[1]).unwrap();
        let texts: Vec<String> = (0..rows)
            .map(|i| {
                let task = TaskRecord {
                    id: TaskId::new(i as u64 + 1),
                    parent: None,
                    owner: "lead".into(),
                    kind: TaskKind::Tool {
                        tool: "search".into(),
                    },
                    status: TaskStatus::Running,
                    created_ms: 0,
                    finished_ms: None,
                    outcome: None,
                    attempts: 1,
                    tokens: 0,
                    call: None,
                };
                serde_json::to_string(&JournalRecord::TaskCreated {
                    task,
                    arguments: Some("x".repeat(padding)),
                })
                .unwrap()
            })
            .collect();
        let seqs: Vec<i64> = (1..=rows as i64).collect();
        client
            .execute(
                "INSERT INTO events (conversation, seq, at_ms, record) \
                 SELECT 'c', s, s, r FROM unnest($1::bigint[], $2::text[]) AS t(s, r)",
                &[&seqs, &texts],
            )
            .unwrap();
        client.batch_execute(PG_MIGRATIONS[2]).unwrap();
    }

    fn backfill(client: &mut postgres::Client, paging: Paging) -> (Backfilled, i64) {
        let location = StoreLocation::File("backfill".into());
        let mut tx = client.transaction().unwrap();
        let done = pg_backfill_tasks(&mut tx, &location, paging).unwrap();
        let tasks: i64 = tx
            .query_one("SELECT count(*) FROM tasks", &[])
            .unwrap()
            .get(0);
        tx.commit().unwrap();
        (done, tasks)
    }

    /// Rows are fetched a few at a time (a row written before appends
    /// were split can be megabytes), while the task changes are still
    /// written a page of 2,000 rows at a time. Before, a fetch was a
    /// whole page.
    #[test]
    fn the_backfill_fetches_few_rows_at_a_time_and_writes_pages() {
        let Some(schema) = TestSchema::new() else {
            return;
        };
        let mut client = schema.client();
        let rows = 2 * BACKFILL_PAGE_ROWS + 500;
        old_events(&mut client, rows, 10);
        let (done, tasks) = backfill(&mut client, PAGING);
        assert_eq!(tasks, rows as i64);
        assert_eq!(done.rows, rows);
        assert_eq!(done.writes, 3, "{done:?}");
        assert!(
            done.largest_fetch_rows <= 200 && done.fetches > rows / 200,
            "{done:?}"
        );
    }

    /// Large rows are fetched fewer at a time, about `fetch_bytes` of them.
    #[test]
    fn large_rows_are_fetched_by_their_size() {
        let Some(schema) = TestSchema::new() else {
            return;
        };
        let mut client = schema.client();
        old_events(&mut client, 300, 10_000);
        let paging = Paging {
            page_rows: 100,
            fetch_rows: 128,
            fetch_bytes: 50_000,
        };
        let (done, tasks) = backfill(&mut client, paging);
        assert_eq!(tasks, 300);
        assert_eq!(done.writes, 3, "{done:?}");
        // About 10 kB a row: 4 rows a fetch.
        assert_eq!(done.largest_fetch_rows, 4, "{done:?}");
        assert!(done.largest_fetch_bytes <= 50_000, "{done:?}");
    }
}

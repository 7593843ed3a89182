//! The PostgreSQL store against a real server: the same behaviours as the
//! SQLite suite, each test in a fresh schema of its own, dropped at the end.
//!
//! The server is `BATON_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached the
//! tests say so and pass without running, unless `BATON_REQUIRE_POSTGRES=1`,
//! which makes that a failure (CI sets it).

mod common;

use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use baton_store::{PgOptions, PgStore, Store, StoreError, StoreLocation};
use common::Opener;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn server_url() -> String {
    std::env::var("BATON_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Runs `f` with a plain client of its own, on a thread of its own (the
/// synchronous client must not run inside an async runtime).
fn with_client<T: Send + 'static>(
    f: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
) -> Result<T, postgres::Error> {
    let url = server_url();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        Ok(f(&mut client))
    })
    .join()
    .expect("the client thread panicked")
}

/// A fresh schema for one test, dropped (with everything in it) at the end.
struct Schema {
    name: String,
}

impl Schema {
    /// A new schema name, or `None` (with a message) when there is no
    /// server to test against and it is not required.
    fn new() -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if let Err(e) = with_client(|c| c.batch_execute("SELECT 1")) {
            let e = match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            };
            let required = std::env::var("BATON_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "PostgreSQL at {} is required (BATON_REQUIRE_POSTGRES=1) but unreachable: {e}",
                server_url()
            );
            // Straight to stderr, past the test harness's capture.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL at {} is unreachable ({e}); set BATON_TEST_POSTGRES to a server, \
                 or BATON_REQUIRE_POSTGRES=1 to make this a failure",
                server_url()
            );
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "baton_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Some(Self { name })
    }

    fn options(&self) -> PgOptions {
        PgOptions {
            schema: self.name.clone(),
        }
    }

    /// The spec `baton_store::open` takes for this schema.
    fn spec(&self) -> String {
        format!("{}?schema={}", server_url(), self.name)
    }

    fn opener(&self) -> Opener {
        let spec = self.spec();
        Arc::new(move || baton_store::open(&spec).expect("open the PostgreSQL store"))
    }

    /// Runs SQL in this schema.
    fn execute(&self, sql: &str) {
        let sql = format!("SET search_path TO {}; {sql}", self.name);
        with_client(move |c| c.batch_execute(&sql))
            .and_then(|r| r)
            .expect("SQL in the test schema");
    }

    /// The tables in this schema, with the rows of `table`.
    fn tables(&self) -> Vec<String> {
        let name = self.name.clone();
        with_client(move |c| {
            c.query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
                &[&name],
            )
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        })
        .and_then(|r| r)
        .expect("list tables")
    }

    /// Has the server drop every connection of the store in this schema
    /// (as a restart would); returns how many it dropped.
    fn drop_connections(&self) -> i64 {
        let app = format!("baton-store {}", self.name);
        with_client(move |c| {
            c.query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .map(|r| r.get(0))
        })
        .and_then(|r| r)
        .expect("terminate the store's connections")
    }

    fn schema_exists(&self) -> bool {
        let name = self.name.clone();
        with_client(move |c| {
            c.query_one(
                "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                &[&name],
            )
            .map(|r| r.get::<_, i64>(0) == 1)
        })
        .and_then(|r| r)
        .expect("look up the schema")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(e) = with_client(move |c| c.batch_execute(&sql)).and_then(|r| r) {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

#[tokio::test]
async fn appends_come_back_in_order_and_survive_a_reopen() {
    let Some(schema) = Schema::new() else { return };
    common::round_trip(schema.opener()).await;
}

#[tokio::test(start_paused = true)]
async fn appends_do_not_let_a_paused_clock_skip_ahead() {
    let Some(schema) = Schema::new() else { return };
    common::appends_hold_a_paused_clock(schema.opener()).await;
}

#[tokio::test]
async fn concurrent_appends_land_once_each_and_share_transactions() {
    let Some(schema) = Schema::new() else { return };
    common::group_commit(schema.opener()).await;
}

#[test]
fn a_conversation_resumes_from_postgres_with_nothing_lost_or_doubled() {
    let Some(schema) = Schema::new() else { return };
    common::resume_through_the_runtime(schema.opener());
}

#[test]
fn a_store_failing_for_a_while_loses_nothing() {
    let Some(schema) = Schema::new() else { return };
    let schema = Arc::new(schema);
    // A trigger makes every insert of a row fail.
    let fail: common::Breaker = {
        let schema = Arc::clone(&schema);
        Arc::new(move |on: bool| {
            schema.execute(if on {
                "CREATE FUNCTION test_failure() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$; \
                 CREATE TRIGGER test_failure BEFORE INSERT ON events \
                 FOR EACH ROW EXECUTE FUNCTION test_failure();"
            } else {
                "DROP TRIGGER test_failure ON events;"
            });
        })
    };
    common::a_store_failing_for_a_while_loses_nothing(schema.opener(), fail);
}

/// An administrator adds a required column to `table` (a column, and a
/// check that it is set, `NOT VALID` so that the rows there pass; every
/// new row breaks it, SQLSTATE 23514, a refusal of the data): the writer
/// finds that the database refuses every row and waits, refusing nothing,
/// until the column is dropped.
fn a_database_refusing_every_row_is_waited_for(table: &'static str) {
    let Some(schema) = Schema::new() else { return };
    let schema = Arc::new(schema);
    let refuse: common::Breaker = {
        let schema = Arc::clone(&schema);
        Arc::new(move |on: bool| {
            schema.execute(&if on {
                format!(
                    "ALTER TABLE {table} ADD COLUMN tenant text; \
                     ALTER TABLE {table} ADD CONSTRAINT {table}_tenant \
                     CHECK (tenant IS NOT NULL) NOT VALID;"
                )
            } else {
                format!("ALTER TABLE {table} DROP COLUMN tenant;")
            });
        })
    };
    common::a_database_refusing_every_row_is_waited_for(
        schema.opener(),
        refuse,
        &format!("violates check constraint \"{table}_tenant\""),
    );
}

#[test]
fn a_database_refusing_every_event_row_is_waited_for() {
    a_database_refusing_every_row_is_waited_for("events");
}

#[test]
fn a_database_refusing_every_task_row_is_waited_for() {
    a_database_refusing_every_row_is_waited_for("tasks");
}

#[test]
fn snapshots_replay_as_the_whole_journal() {
    let Some(schema) = Schema::new() else { return };
    common::snapshots_replay_as_the_whole_journal(schema.opener());
}

#[test]
fn replay_through_the_store_equals_live() {
    let Some(schema) = Schema::new() else { return };
    common::replay_through_the_store_equals_live(schema.opener(), 24);
}

#[test]
fn names_no_store_can_hold_are_refused() {
    let Some(schema) = Schema::new() else { return };
    common::names_no_store_can_hold_are_refused(schema.opener());
}

#[test]
fn a_nul_in_a_task_is_kept() {
    let Some(schema) = Schema::new() else { return };
    common::a_nul_in_a_task_is_kept(schema.opener());
}

#[test]
fn a_second_writer_of_a_conversation_appends_after_the_other() {
    let Some(schema) = Schema::new() else { return };
    common::a_second_writer_of_a_conversation_appends_after_the_other(schema.opener());
}

#[test]
fn a_duplicate_completion_is_ignored() {
    let Some(schema) = Schema::new() else { return };
    common::duplicate_completion_is_ignored(schema.opener());
}

#[tokio::test]
async fn the_store_recovers_when_the_server_drops_its_connections() {
    let Some(schema) = Schema::new() else { return };
    let store = baton_store::open(&schema.spec()).unwrap();
    let journal = store.journal("c").unwrap();
    journal.append(vec![common::input("before")]).await.unwrap();
    assert_eq!(
        schema.drop_connections(),
        2,
        "the writer's and the reader's"
    );
    // The batch that meets the dropped connection fails (its callers are
    // told) but is kept; the writer connects again and writes it, once,
    // ahead of the next one.
    let _during = journal.append(vec![common::input("during")]).await;
    journal.append(vec![common::input("after")]).await.unwrap();
    assert_eq!(
        store.read("c").unwrap(),
        vec![
            common::input("before"),
            common::input("during"),
            common::input("after")
        ],
        "the reader reconnects too"
    );
}

#[tokio::test]
async fn a_burst_larger_than_a_row_is_split_over_rows() {
    let Some(schema) = Schema::new() else { return };
    let name = schema.name.clone();
    let rows_of: common::RowsOf = Box::new(move |conversation| {
        let (name, conversation) = (name.clone(), conversation.to_owned());
        with_client(move |c| {
            c.query(
                &format!(
                    "SELECT seq, octet_length(record) FROM {name}.events \
                     WHERE conversation = $1 ORDER BY seq"
                ),
                &[&conversation],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), usize::try_from(r.get::<_, i32>(1)).unwrap()))
                    .collect()
            })
        })
        .and_then(|r| r)
        .unwrap()
    });
    common::a_burst_larger_than_a_row_is_split(schema.opener(), rows_of).await;
}

#[tokio::test]
async fn a_new_snapshot_replaces_the_older_ones() {
    let Some(schema) = Schema::new() else { return };
    let store = baton_store::open(&schema.spec()).unwrap();
    let journal = store.journal("s").unwrap();
    for i in 0..3 {
        journal
            .append(vec![common::input(&format!("m{i}"))])
            .await
            .unwrap();
        assert_eq!(store.snapshot("s").unwrap(), Some(i + 1));
    }
    let name = schema.name.clone();
    let rows: Vec<i64> = with_client(move |c| {
        c.query(&format!("SELECT seq FROM {name}.snapshots"), &[])
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
    })
    .and_then(|r| r)
    .unwrap();
    assert_eq!(rows, [3]);
    assert_eq!(store.replay("s").unwrap().pending_inputs.len(), 3);
}

#[test]
fn a_new_schema_is_created_at_the_current_version() {
    let Some(schema) = Schema::new() else { return };
    assert!(!schema.schema_exists());
    let store = PgStore::open(&server_url(), schema.options()).unwrap();
    assert_eq!(
        schema.tables(),
        ["baton_meta", "events", "snapshots", "tasks"]
    );
    let name = schema.name.clone();
    let version: String = with_client(move |c| {
        c.query_one(
            &format!("SELECT value FROM {name}.baton_meta WHERE key = 'schema_version'"),
            &[],
        )
        .map(|r| r.get(0))
    })
    .and_then(|r| r)
    .unwrap();
    assert_eq!(version, baton_store::migrations::SCHEMA_VERSION.to_string());
    assert_eq!(
        store.location(),
        &StoreLocation::Postgres {
            url: server_url(),
            schema: schema.name.clone()
        }
    );
}

#[test]
fn processes_opening_one_new_schema_at_once_migrate_it_once() {
    let Some(schema) = Schema::new() else { return };
    let spec = schema.spec();
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let spec = spec.clone();
            std::thread::spawn(move || baton_store::open(&spec).map(|_| ()))
        })
        .collect();
    for o in opened {
        o.join().unwrap().unwrap();
    }
    assert_eq!(
        schema.tables(),
        ["baton_meta", "events", "snapshots", "tasks"]
    );
}

#[test]
fn a_version_1_store_is_migrated_and_keeps_its_records() {
    let Some(schema) = Schema::new() else { return };
    schema.execute(&format!(
        "CREATE SCHEMA {0}; SET search_path TO {0};
         CREATE TABLE baton_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE events (conversation TEXT NOT NULL, seq BIGINT NOT NULL,
             at_ms BIGINT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (conversation, seq));
         INSERT INTO baton_meta VALUES ('schema_version', '1');
         INSERT INTO events VALUES ('old', 1, 0, '{{\"record\":\"user_input\",\"text\":\"hello\"}}');",
        schema.name
    ));
    for (seq, record) in common::old_task_rows() {
        schema.execute(&format!(
            "INSERT INTO {}.events VALUES ('old', {seq}, 0, '{record}');",
            schema.name
        ));
    }
    let store = baton_store::open(&schema.spec()).unwrap();
    assert_eq!(
        schema.tables(),
        ["baton_meta", "events", "snapshots", "tasks"]
    );
    let records = store.read("old").unwrap();
    assert_eq!((records.len(), &records[0]), (4, &common::input("hello")));
    common::old_tasks_were_backfilled(store.as_ref());
    assert_eq!(store.snapshot("old").unwrap(), Some(4));
    assert_eq!(store.replay("old").unwrap().pending_inputs.len(), 2);
}

/// A version-2 schema (`events` with `columns`, and `snapshots`) holding
/// `rows`.
fn version_2_schema(schema: &Schema, columns: &str, rows: Vec<(String, i64, i64, String)>) {
    schema.execute(&format!(
        "CREATE SCHEMA {0}; SET search_path TO {0};
         CREATE TABLE baton_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE events ({columns}, PRIMARY KEY (conversation, seq));
         CREATE TABLE snapshots (conversation TEXT NOT NULL, seq BIGINT NOT NULL,
             at_ms BIGINT NOT NULL, records TEXT NOT NULL, PRIMARY KEY (conversation, seq));
         INSERT INTO baton_meta VALUES ('schema_version', '2');",
        schema.name
    ));
    let insert = format!(
        "INSERT INTO {}.events SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[])",
        schema.name
    );
    with_client(move |c| {
        let (mut conversations, mut seqs, mut times, mut records) =
            (vec![], vec![], vec![], vec![]);
        for (conversation, seq, at_ms, record) in rows {
            conversations.push(conversation);
            seqs.push(seq);
            times.push(at_ms);
            records.push(record);
        }
        c.execute(&insert, &[&conversations, &seqs, &times, &records])
    })
    .and_then(|r| r)
    .unwrap();
}

const EVENTS_V1: &str = "conversation TEXT NOT NULL, seq BIGINT NOT NULL, \
                         at_ms BIGINT NOT NULL, record TEXT NOT NULL";

#[test]
fn a_large_old_store_has_its_task_table_filled_page_by_page() {
    let Some(schema) = Schema::new() else { return };
    let old = common::many_old_events(1_200);
    assert!(old.rows.len() > 3 * baton_store::migrations::BACKFILL_PAGE_ROWS);
    version_2_schema(&schema, EVENTS_V1, old.rows.clone());
    let store = baton_store::open(&schema.spec()).unwrap();
    common::many_old_events_were_backfilled(store.as_ref(), &old);
}

#[test]
fn a_column_of_an_unexpected_type_is_a_clear_error_not_a_panic() {
    let Some(schema) = Schema::new() else { return };
    let rows = common::many_old_events(3).rows;
    let columns = "conversation TEXT NOT NULL, seq INTEGER NOT NULL, \
                   at_ms BIGINT NOT NULL, record TEXT NOT NULL";
    version_2_schema(&schema, columns, rows);
    let err = PgStore::open(&server_url(), schema.options()).unwrap_err();
    assert!(
        matches!(&err, StoreError::BadColumn { table, column, .. } if table == "events" && column == "seq"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("column `seq` of table `events` cannot be read: it is int4"),
        "{err}"
    );
    assert_eq!(
        schema.tables(),
        ["baton_meta", "events", "snapshots"],
        "left as it was"
    );
}

#[test]
fn another_programs_schema_is_refused_and_left_untouched() {
    let Some(schema) = Schema::new() else { return };
    schema.execute(&format!(
        "CREATE SCHEMA {0}; CREATE TABLE {0}.users (id INTEGER); INSERT INTO {0}.users VALUES (1);",
        schema.name
    ));
    let err = PgStore::open(&server_url(), schema.options()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Foreign { tables, .. } if tables == "users"),
        "{err}"
    );
    assert!(err.to_string().contains(&schema.name), "{err}");
    assert_eq!(schema.tables(), ["users"]);
    let name = schema.name.clone();
    let rows: i64 = with_client(move |c| {
        c.query_one(&format!("SELECT count(*) FROM {name}.users"), &[])
            .map(|r| r.get(0))
    })
    .and_then(|r| r)
    .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn a_store_from_a_newer_baton_is_refused() {
    let Some(schema) = Schema::new() else { return };
    drop(PgStore::open(&server_url(), schema.options()).unwrap());
    schema.execute("UPDATE baton_meta SET value = '99' WHERE key = 'schema_version'");
    let err = PgStore::open(&server_url(), schema.options()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 99,
                known: baton_store::migrations::SCHEMA_VERSION,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn opening_an_existing_store_that_is_not_there_creates_nothing() {
    let Some(schema) = Schema::new() else { return };
    let err = baton_store::open_existing(&schema.spec()).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(!schema.schema_exists());
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let err =
        PgStore::open("postgres://postgres@127.0.0.1:1/test", PgOptions::default()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Postgres { message, .. } if message.starts_with("cannot connect")),
        "{err}"
    );
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

/// An append the server can never take (here a check, added by the test,
/// refusing one conversation's rows with SQLSTATE 23514, a data error)
/// fails alone, with the server's error, and is not kept: the other
/// conversations' appends, in its batch and later, are written. (Before, it
/// was kept and written again ahead of every later batch, so every
/// conversation of the store failed from then on, for good.) Its records
/// are lost, so its own journal takes no more: it is closed.
#[test]
fn an_append_that_can_never_land_does_not_stall_other_conversations() {
    let Some(schema) = Schema::new() else { return };
    let store = (schema.opener())();
    schema.execute(
        "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.conversation = 'bad' THEN \
         RAISE EXCEPTION 'no rows of bad' USING ERRCODE = 'check_violation'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_bad BEFORE INSERT ON events \
         FOR EACH ROW EXECUTE FUNCTION refuse_bad();",
    );
    let block = futures::executor::block_on;
    let (good, bad) = (
        store.journal("good").unwrap(),
        store.journal("bad").unwrap(),
    );
    // Queued at once, so that they may share a batch.
    let pending = vec![
        good.append(vec![common::input("a")]),
        bad.append(vec![common::input("x")]),
        good.append(vec![common::input("b")]),
    ];
    let results: Vec<_> = pending.into_iter().map(block).collect();
    assert_eq!(results[0], Ok(()));
    let error = results[1].clone().unwrap_err();
    assert!(error.is_closed(), "{error}");
    assert!(error.message().contains("no rows of bad"), "{error}");
    assert!(
        block(bad.append(Vec::new())).is_err_and(|e| e.is_closed()),
        "a later append of `bad` would claim the lost record durable"
    );
    assert_eq!(results[2], Ok(()));
    for text in ["c", "d", "e"] {
        let r = block(good.append(vec![common::input(text)]));
        assert!(r.is_ok(), "another conversation cannot write: {r:?}");
    }
    let texts: Vec<_> = ["a", "b", "c", "d", "e"].map(common::input).into();
    assert_eq!(store.read("good").unwrap(), texts);
    assert_eq!(store.read("bad").unwrap(), vec![]);
}

/// A TCP proxy to the test server that, once armed, lets one `COMMIT`
/// through and drops the connection instead of passing its answer back:
/// the commit lands, the store hears only that the connection went.
struct LosingProxy {
    port: u16,
    armed: Arc<std::sync::atomic::AtomicBool>,
    dropped: Arc<AtomicU32>,
    /// While set, new connections are closed at once (the server is down).
    refusing: Arc<std::sync::atomic::AtomicBool>,
}

impl LosingProxy {
    fn start() -> Self {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::AtomicBool;
        let config: postgres::Config = server_url().parse().unwrap();
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Self {
            port: listener.local_addr().unwrap().port(),
            armed: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU32::new(0)),
            refusing: Arc::new(AtomicBool::new(false)),
        };
        let (armed, dropped) = (Arc::clone(&proxy.armed), Arc::clone(&proxy.dropped));
        let refusing = Arc::clone(&proxy.refusing);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect((host.as_str(), port)) else {
                    return;
                };
                let commit_sent = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (sent, armed_up) = (Arc::clone(&commit_sent), Arc::clone(&armed));
                // Client to server: notes a COMMIT (simple query) while armed.
                std::thread::spawn(move || {
                    let mut buf = vec![0; 1 << 16];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let commit = b"Q\0\0\0\x0bCOMMIT\0";
                        if armed_up.load(Ordering::SeqCst)
                            && buf[..n].windows(commit.len()).any(|w| w == commit)
                        {
                            sent.store(true, Ordering::SeqCst);
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                let (armed, dropped) = (Arc::clone(&armed), Arc::clone(&dropped));
                // Server to client: drops the connection instead of passing
                // on the COMMIT's answer (the commit is done by then).
                std::thread::spawn(move || {
                    let mut buf = vec![0; 1 << 16];
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let done = b"COMMIT\0";
                        if commit_sent.load(Ordering::SeqCst)
                            && buf[..n].windows(done.len()).any(|w| w == done)
                            && armed.swap(false, Ordering::SeqCst)
                        {
                            dropped.fetch_add(1, Ordering::SeqCst);
                            let _ = c_out.shutdown(Shutdown::Both);
                            let _ = s_in.shutdown(Shutdown::Both);
                            return;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Write);
                });
            }
        });
        proxy
    }

    /// The test server's URL, through the proxy.
    fn url(&self) -> String {
        let config: postgres::Config = server_url().parse().unwrap();
        let user = config.get_user().unwrap_or("postgres");
        let db = config.get_dbname().unwrap_or("test");
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }
}

/// A commit that lands on the server but whose answer is lost (the
/// connection drops right after it): the append fails, the store connects
/// again, and before writing the batch again it finds that it landed, so
/// its records are in the log once. (This is the writer's "landed after
/// all" check on a real server; without it the records would be written
/// twice.)
#[test]
fn a_commit_that_landed_but_whose_answer_was_lost_is_not_written_twice() {
    let Some(schema) = Schema::new() else { return };
    let proxy = LosingProxy::start();
    let store = PgStore::open(&proxy.url(), schema.options()).unwrap();
    let journal = Store::journal(&store, "c").unwrap();
    let block = futures::executor::block_on;
    block(journal.append(vec![common::input("a")])).unwrap();
    proxy.armed.store(true, Ordering::SeqCst);
    let lost = block(journal.append(vec![common::input("b")]));
    assert_eq!(proxy.dropped.load(Ordering::SeqCst), 1, "{lost:?}");
    assert!(lost.is_err(), "the answer was lost");
    block(journal.append(vec![common::input("c")])).unwrap();
    assert_eq!(
        store.read("c").unwrap(),
        ["a", "b", "c"].map(common::input).to_vec()
    );
}

/// A commit's answer is lost and the server is still down when the writer
/// tries to reconnect. Once it is back, the writer reconnects: the "landed
/// after all" check that failed on the dead connection makes it try
/// again. (Before, every later try started with that check on the dead
/// connection, failed, and never reached the reconnect: the store wrote
/// nothing more, for good.)
#[test]
fn a_lost_commit_answer_while_the_server_is_down_does_not_wedge_the_writer() {
    let Some(schema) = Schema::new() else { return };
    let proxy = LosingProxy::start();
    let store = PgStore::open(&proxy.url(), schema.options()).unwrap();
    let journal = Store::journal(&store, "c").unwrap();
    let block = futures::executor::block_on;
    block(journal.append(vec![common::input("a")])).unwrap();
    proxy.refusing.store(true, Ordering::SeqCst);
    proxy.armed.store(true, Ordering::SeqCst);
    let lost = block(journal.append(vec![common::input("b")]));
    assert_eq!(proxy.dropped.load(Ordering::SeqCst), 1, "{lost:?}");
    assert!(lost.is_err());
    // The server is back.
    proxy.refusing.store(false, Ordering::SeqCst);
    // The first try's check meets the dead connection and reconnects; the
    // next one writes.
    let tries: Vec<_> = (0..2).map(|_| block(journal.append(vec![]))).collect();
    assert_eq!(
        tries.last(),
        Some(&Ok(())),
        "still failing after the server came back: {tries:?}"
    );
    assert_eq!(
        store.read("c").unwrap(),
        ["a", "b"].map(common::input).to_vec()
    );
}

/// A check added `NOT VALID` (rows stored before may break it) refuses
/// records of 1,000 bytes or more. An append of such a record is refused
/// for its data and its journal closed, though the probe's copy of another
/// conversation's latest row breaks the check too (that row is as large):
/// the probe's minimal row is taken, so the database takes rows. The other
/// conversations write on. (Before, the copy's refusal alone was taken for
/// a database refusing every row: the append was kept at the head of the
/// batches, and every later append of every conversation failed behind
/// it, for good.)
#[test]
fn an_append_refused_with_the_probes_copy_does_not_stall_other_conversations() {
    let Some(schema) = Schema::new() else { return };
    let store = schema.opener()();
    let block = futures::executor::block_on;
    let big = "x".repeat(2000);
    let zeta = store.journal("zeta").unwrap();
    block(zeta.append(vec![common::input(&big)])).unwrap();
    schema.execute(
        "ALTER TABLE events ADD CONSTRAINT record_size \
         CHECK (octet_length(record) < 1000) NOT VALID;",
    );
    let (alpha, beta) = (
        store.journal("alpha").unwrap(),
        store.journal("beta").unwrap(),
    );
    let refused = block(alpha.append(vec![common::input(&big)])).unwrap_err();
    assert!(
        refused.is_closed() && refused.message().contains("record_size"),
        "alpha's append is refused for its data, its journal closed: {refused}"
    );
    assert_eq!(
        block(beta.append(vec![common::input("small")])),
        Ok(()),
        "beta does not stall behind alpha"
    );
    assert_eq!(block(beta.append(vec![common::input("small 2")])), Ok(()));
    assert!(block(alpha.append(Vec::new())).is_err_and(|e| e.is_closed()));
    assert_eq!(store.read("alpha").unwrap(), vec![]);
    assert_eq!(
        store.read("beta").unwrap(),
        vec![common::input("small"), common::input("small 2")]
    );
    assert_eq!(
        store.conversations().unwrap(),
        vec!["beta".to_owned(), "zeta".to_owned()],
        "the probe left nothing"
    );
}

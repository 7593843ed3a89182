//! [`PgSchema`]: a fresh PostgreSQL schema for one test on the local server,
//! dropped with everything in it when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};

/// The server tests use unless `BATON_TEST_POSTGRES` names another.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server's URL: `BATON_TEST_POSTGRES`, else [`DEFAULT_URL`].
pub fn server_url() -> String {
    std::env::var("BATON_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema of its own for one test.
#[derive(Debug)]
pub struct PgSchema {
    name: String,
}

impl PgSchema {
    /// A new, unique schema name, or `None` (saying why on stderr) when the
    /// server is unreachable. With `BATON_REQUIRE_POSTGRES=1` (as `.ci/run`
    /// sets) an unreachable server panics instead.
    pub fn new_or_skip() -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if let Err(e) = execute("SELECT 1".to_owned()) {
            if std::env::var("BATON_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "PostgreSQL at {} is required (BATON_REQUIRE_POSTGRES=1) but unreachable: {e}",
                    server_url()
                );
            }
            eprintln!(
                "skipping: PostgreSQL at {} is unreachable ({e})",
                server_url()
            );
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Some(Self {
            name: format!(
                "baton_test_{}_{}_{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        })
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store spec for `baton_store::open` / `--store`: the server's URL
    /// with `?schema=NAME`.
    pub fn store_spec(&self) -> String {
        format!("{}?schema={}", server_url(), self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Err(e) = execute(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)) {
            eprintln!("could not drop the test schema {}: {e}", self.name);
        }
    }
}

/// Runs `sql` on a connection of its own, on a thread of its own (the
/// synchronous client must not run inside an async runtime).
fn execute(sql: String) -> Result<(), String> {
    let url = server_url();
    std::thread::spawn(move || {
        let mut client =
            postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        client.batch_execute(&sql).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the client thread panicked".to_owned())?
}

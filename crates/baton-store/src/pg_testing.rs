//! A PostgreSQL schema for the crate's own tests, on the server the
//! integration tests use (`BATON_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`): without one the tests pass
//! without running, unless `BATON_REQUIRE_POSTGRES=1`.

use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};

use postgres::{Client, NoTls};

/// A fresh schema, dropped with everything in it at the end.
pub(crate) struct TestSchema {
    pub(crate) url: String,
    pub(crate) name: String,
}

impl TestSchema {
    /// A new schema name, or `None` (said on stderr) when there is no
    /// server and none is required.
    pub(crate) fn new() -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let url = std::env::var("BATON_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        if let Err(e) = Client::connect(&url, NoTls) {
            let required = std::env::var("BATON_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "PostgreSQL at {url} is required but unreachable: {e}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL at {url} is unreachable ({e})"
            );
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "baton_unit_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Some(Self { url, name })
    }

    /// A client with this schema (created if missing) on its search path.
    pub(crate) fn client(&self) -> Client {
        let mut client = Client::connect(&self.url, NoTls).expect("connect to PostgreSQL");
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {0}; SET search_path TO {0}",
                self.name
            ))
            .expect("the test schema");
        client
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Ok(mut client) = Client::connect(&self.url, NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

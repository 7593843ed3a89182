//! Many SSE subscribers on one conversation while a 1,000-task tree runs
//! (issue 8): the conversation's turn latency with and without them.
//!
//! The lead delegates to `SSE_BRANCHES` branches, each of which delegates
//! leaves, `SSE_TASKS` tasks in all; leaves answer after 0.5–2.5 s, so
//! results arrive throughout the run. Meanwhile a probe says `ping k` to
//! the conversation every 25 ms over HTTP and measures
//!
//! * input → turn (in-process): from `Conversation::send_user` (through
//!   `ServerHandle::conversation`) to the lead's model being asked, i.e.
//!   the conversation's own turn latency (odd k);
//! * input → turn over HTTP: the same from sending `POST /messages` (even k);
//! * input → answer on SSE: from sending to the lead's `pong k` arriving on
//!   the probe's own event stream (what a client sees).
//!
//! Each run is done with no other subscriber, then with `SSE_SUBSCRIBERS`
//! HTTP clients reading the same event stream (on their own thread).
//!
//! ```text
//! cargo bench -p baton-server --bench sse_subscribers
//! SSE_SUBSCRIBERS=100 SSE_RUNS=1 cargo bench -p baton-server --bench sse_subscribers
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_core::{Limits, Message};
use baton_llm::{ChatRequest, ScriptedModel, ScriptedTurn};
use baton_runtime::{Agent, Orchestrator};
use baton_server::{serve, ConversationFactory, ServerConfig};
use futures::StreamExt;
use serde_json::{json, Value};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// When the lead's model was asked to answer `ping k`, by k.
type Seen = Arc<Mutex<HashMap<u64, Instant>>>;

fn model(branches: usize, leaves: usize, seen: Seen) -> ScriptedModel {
    let next_leaf = Arc::new(AtomicU64::new(0));
    ScriptedModel::from_fn(move |req: &ChatRequest| {
        let last = req.messages.last();
        match req.agent.as_str() {
            "lead" => match last {
                Some(Message::User { content }) if content.starts_with("ping ") => {
                    if let Ok(k) = content[5..].parse::<u64>() {
                        seen.lock().unwrap().insert(k, Instant::now());
                    }
                    ScriptedTurn::text(format!("pong {}", &content[5..]))
                }
                Some(Message::User { .. }) => fan_out("branch", branches),
                _ => ScriptedTurn::text("noted"),
            },
            "branch" => match last {
                Some(Message::User { .. }) => fan_out("leaf", leaves),
                _ => ScriptedTurn::text("branch noted"),
            },
            _ => {
                let i = next_leaf.fetch_add(1, Ordering::Relaxed);
                // Spread over 0.5–2.5 s, deterministically.
                let ms = 500 + (i * 7919) % 2000;
                ScriptedTurn::text("leaf done").after(Duration::from_millis(ms))
            }
        }
    })
}

fn fan_out(agent: &str, n: usize) -> ScriptedTurn {
    ScriptedTurn::calls(
        "create_task",
        (0..n).map(|i| json!({"agent": agent, "prompt": i.to_string()})),
    )
}

fn factory(tasks: usize, seen: Seen) -> ConversationFactory {
    let branches = env("SSE_BRANCHES", 10).max(1);
    let leaves = (tasks.saturating_sub(branches) / branches).max(1);
    ConversationFactory::new().with("lead", move || {
        let m = model(branches, leaves, seen.clone());
        let leaf = Agent::builder("leaf").model(m.clone()).build();
        let limits = Limits {
            max_depth: 3,
            max_children: 10_000,
            max_concurrent: 10_000,
            max_tokens: u64::MAX,
        };
        let branch = Agent::builder("branch")
            .model(m.clone())
            .delegates_to([leaf])
            .build();
        let lead = Agent::builder("lead")
            .model(m)
            .delegates_to([branch])
            .limits(limits)
            .build();
        Orchestrator::builder(lead)
    })
}

/// Reads SSE frames (as text chunks) from a response.
struct Probe {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>>>>,
    buf: String,
}

impl Probe {
    /// The next event's JSON.
    async fn next(&mut self) -> Option<Value> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                if let Some(data) = raw.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return serde_json::from_str(data).ok();
                }
            }
            let chunk = self.body.next().await?.ok()?;
            self.buf.push_str(std::str::from_utf8(&chunk).ok()?);
        }
    }
}

struct RunResult {
    turn: Vec<Duration>,
    http_turn: Vec<Duration>,
    answer: Vec<Duration>,
    tree: Duration,
    delivered_bytes: u64,
    dropped_notices: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Opens `n` event streams on their own thread, as bare TCP clients that
/// read and count bytes (so the clients' own CPU, which here is taken from
/// the server's two cores, is as small as it can be), until told to stop;
/// returns (bytes read, dropped notices seen) when joined.
fn subscribers(
    n: usize,
    addr: std::net::SocketAddr,
    path: String,
    token: String,
    ready: std::sync::mpsc::Sender<()>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let bytes = Arc::new(AtomicU64::new(0));
            let dropped = Arc::new(AtomicU64::new(0));
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            );
            let mut tasks = Vec::new();
            for _ in 0..n {
                let mut conn = tokio::net::TcpStream::connect(addr)
                    .await
                    .expect("a subscriber connects");
                conn.write_all(request.as_bytes()).await.expect("request");
                let mut buf = vec![0u8; 64 * 1024];
                let got = conn.read(&mut buf).await.expect("response");
                assert!(buf[..got].starts_with(b"HTTP/1.1 200"), "the stream opens");
                let bytes = bytes.clone();
                let dropped = dropped.clone();
                let mut stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    let finder = memchr::memmem::Finder::new(b"event: dropped");
                    loop {
                        tokio::select! {
                            got = conn.read(&mut buf) => match got {
                                Ok(0) | Err(_) => break,
                                Ok(k) => {
                                    bytes.fetch_add(k as u64, Ordering::Relaxed);
                                    let found = finder.find_iter(&buf[..k]).count();
                                    dropped.fetch_add(found as u64, Ordering::Relaxed);
                                }
                            },
                            _ = stop.changed() => break,
                        }
                    }
                }));
            }
            let _ = ready.send(());
            for t in tasks {
                let _ = t.await;
            }
            (bytes.load(Ordering::Relaxed), dropped.load(Ordering::Relaxed))
        })
    })
}

fn run(subscribers_n: usize, tasks: usize, window_ms: usize) -> RunResult {
    actix_rt::System::new().block_on(async move {
        let seen: Seen = Arc::default();
        let config = ServerConfig {
            sse_batch_window: Duration::from_millis(window_ms as u64),
            ..ServerConfig::ephemeral()
        };
        let server = serve(config, factory(tasks, seen.clone()))
            .await
            .expect("the server starts");
        let base = server.base_url();
        let token = server.token().expose().to_owned();
        let http = reqwest::Client::new();
        let created: Value = http
            .post(format!("{base}/v1/conversations"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let convo = created["id"].as_str().expect("an id").to_owned();
        let handle = server.conversation(&convo).expect("the conversation");
        let events_url = format!("{base}/v1/conversations/{convo}/events");

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let subs = subscribers(
            subscribers_n,
            server.addr(),
            format!("/v1/conversations/{convo}/events"),
            token.clone(),
            ready_tx,
            stop_rx,
        );
        while ready_rx.try_recv().is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let res = http
            .get(&events_url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("the probe connects");
        let mut probe = Probe {
            body: Box::pin(res.bytes_stream()),
            buf: String::new(),
        };
        let post = |text: String| {
            http.post(format!("{base}/v1/conversations/{convo}/messages"))
                .bearer_auth(&token)
                .json(&json!({ "text": text }))
                .send()
        };
        let tick_every = Duration::from_millis(25);
        // The tree's end, seen in-process (not through the probe's stream).
        let done = Arc::new(Mutex::new(None::<Duration>));
        let mut bus = handle.subscribe();
        let start = Instant::now();
        let done_w = done.clone();
        actix_rt::spawn(async move {
            let mut finished = 0;
            while let Ok(env) = bus.recv().await {
                if matches!(env.event, baton_core::Event::TaskFinished { .. }) {
                    finished += 1;
                    if finished == tasks {
                        *done_w.lock().unwrap() = Some(start.elapsed());
                        break;
                    }
                }
            }
        });
        post("go".into()).await.expect("go");
        let mut sent: HashMap<u64, Instant> = HashMap::new();
        let mut answer = Vec::new();
        let mut k = 0u64;
        let mut answered = 0u64;
        let mut tree = Duration::ZERO;
        let mut tick = tokio::time::interval(tick_every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(t) = *done.lock().unwrap() {
                        tree = t;
                        // The last answers, unless the probe lost them
                        // (it is told so, and gives up after 10 s).
                        if answered == k || start.elapsed() > tree + Duration::from_secs(10) {
                            break;
                        }
                        continue;
                    }
                    k += 1;
                    sent.insert(k, Instant::now());
                    if k % 2 == 1 {
                        handle.send_user(format!("ping {k}")).await.expect("ping");
                    } else {
                        // Not awaited here, so a slow HTTP answer does not
                        // space the pings out.
                        let req = post(format!("ping {k}"));
                        actix_rt::spawn(async move {
                            req.await.expect("ping");
                        });
                    }
                }
                ev = probe.next() => {
                    let Some(ev) = ev else { break };
                    match ev["type"].as_str() {
                        Some("assistant_message") if ev["task"].is_null() => {
                            let text = ev["text"].as_str().unwrap_or_default();
                            if let Some(n) = text.strip_prefix("pong ").and_then(|n| n.parse::<u64>().ok()) {
                                if let Some(at) = sent.get(&n) {
                                    answer.push(at.elapsed());
                                }
                                answered = answered.max(n);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let seen = seen.lock().unwrap().clone();
        let latency = |odd: bool| -> Vec<Duration> {
            sent.iter()
                .filter(|(k, _)| (*k % 2 == 1) == odd)
                .filter_map(|(k, at)| seen.get(k).map(|t| t.duration_since(*at)))
                .collect()
        };
        let (turn, http_turn) = (latency(true), latency(false));
        let _ = stop_tx.send(true);
        server.stop().await.expect("stop");
        let (delivered_bytes, dropped_notices) = subs.join().expect("subscribers");
        RunResult {
            turn,
            http_turn,
            answer,
            tree,
            delivered_bytes,
            dropped_notices,
        }
    })
}

/// p50 and p99 of every run's samples.
fn stats(
    results: &[RunResult],
    pick: impl Fn(&RunResult) -> &Vec<Duration>,
) -> (Duration, Duration, usize) {
    let mut all: Vec<Duration> = results.iter().flat_map(|r| pick(r).clone()).collect();
    all.sort();
    (percentile(&all, 0.5), percentile(&all, 0.99), all.len())
}

type Figures = [(Duration, Duration, usize); 3];

fn report(label: &str, results: &[RunResult]) -> Figures {
    let figures = [
        stats(results, |r| &r.turn),
        stats(results, |r| &r.http_turn),
        stats(results, |r| &r.answer),
    ];
    let names = [
        "input→turn (in-process)",
        "input→turn (HTTP)",
        "input→answer on SSE",
    ];
    println!("{label}:");
    for (name, (p50, p99, n)) in names.iter().zip(figures) {
        println!("  {name:<24} p50 {p50:>12.3?}  p99 {p99:>12.3?}  (n={n})");
    }
    let tree: Vec<String> = results.iter().map(|r| format!("{:.2?}", r.tree)).collect();
    let bytes: u64 = results.iter().map(|r| r.delivered_bytes).sum();
    let dropped: u64 = results.iter().map(|r| r.dropped_notices).sum();
    println!(
        "  tree wall {}; {} MiB delivered to subscribers; {} dropped notices",
        tree.join(", "),
        bytes / (1 << 20),
        dropped
    );
    figures
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("sse_subscribers: benchmark");
        return;
    }
    let n = env("SSE_SUBSCRIBERS", 1000);
    let tasks = env("SSE_TASKS", 1000);
    let runs = env("SSE_RUNS", 3);
    let window = env("SSE_BATCH_MS", 20);
    println!("{tasks}-task tree, {n} subscribers vs none, {runs} runs each (alternating), SSE batch window {window} ms");
    let mut none = Vec::new();
    let mut many = Vec::new();
    for _ in 0..runs {
        none.push(run(0, tasks, window));
        many.push(run(n, tasks, window));
    }
    let a = report("  0 subscribers", &none);
    let b = report(&format!("{n:>3} subscribers"), &many);
    let ratio = |x: Duration, y: Duration| y.as_secs_f64() / x.as_secs_f64().max(1e-9);
    println!("ratio with/without:");
    for (i, name) in [
        "input→turn (in-process)",
        "input→turn (HTTP)",
        "input→answer on SSE",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "  {name:<24} p50 {:.2}×  p99 {:.2}×",
            ratio(a[i].0, b[i].0),
            ratio(a[i].1, b[i].1)
        );
    }
}

//! Fan-out benchmark for delegation trees (issue 4): one lead delegates N
//! subtasks in one turn; each sub-agent answers after a fixed model
//! latency. Reports
//!
//! * orchestration CPU per delegated task with a zero-latency model,
//! * wall time of N sub-agents at 100 ms against the ideal 100 ms,
//! * heap bytes per pending task (every sub-agent waiting on its model).
//!
//! ```text
//! cargo bench --bench fanout                 # N = 100,000
//! FANOUT_N=10000 cargo bench --bench fanout
//! FANOUT_ALLOC=mimalloc cargo bench --bench fanout
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baton::{Agent, ChatRequest, Message, Orchestrator, ScriptedModel, ScriptedTurn};
use cpu_time::ProcessTime;
use mimalloc::MiMalloc;
use serde_json::json;

/// Counts live heap bytes, to measure memory per pending task, over the
/// allocator `FANOUT_ALLOC` names: `system` (glibc's malloc, the default)
/// or `mimalloc`. The choice is read at the first allocation, before
/// `main`, so every block is freed by the allocator that made it.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Allocation calls while counting.
static CALLS: AtomicUsize = AtomicUsize::new(0);
/// Counting is on from the start until memory has been measured, so the
/// timing runs after it pay for no shared counter.
static COUNTING: AtomicBool = AtomicBool::new(true);
/// 0: not chosen yet; 1: the system allocator; 2: mimalloc.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

fn use_mimalloc() -> bool {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // `getenv` does not allocate, so it may run inside the allocator.
            // SAFETY: the name is a NUL-terminated C string; nothing sets the
            // environment this early.
            let value = unsafe { libc::getenv(c"FANOUT_ALLOC".as_ptr()) };
            let mi = !value.is_null()
                // SAFETY: `getenv` returned a NUL-terminated string.
                && unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() == b"mimalloc";
            CHOSEN.store(if mi { 2 } else { 1 }, Ordering::Relaxed);
            mi
        }
    }
}

fn allocator_name() -> &'static str {
    if use_mimalloc() {
        "mimalloc"
    } else {
        "the system allocator (glibc malloc)"
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        if use_mimalloc() {
            unsafe { MiMalloc.alloc(layout) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        if use_mimalloc() {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        if use_mimalloc() {
            unsafe { MiMalloc.realloc(ptr, layout, new_size) }
        } else {
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

enum Leaf {
    After(Duration),
    Hang,
}

/// The lead delegates `n` tasks in its first turn, then says "ok" to every
/// batch of results; each leaf answers per `leaf`.
///
/// The lead's first reply (n `create_task` calls) is built here, before
/// any measurement, and handed over as the lead's script: building n JSON
/// argument strings is the model's work, not the orchestrator's.
fn model(n: usize, leaf: Leaf) -> ScriptedModel {
    let (latency, hang) = match leaf {
        Leaf::After(d) => (d, false),
        Leaf::Hang => (Duration::ZERO, true),
    };
    let delegate_all = ScriptedTurn::calls(
        "create_task",
        (0..n).map(|i| json!({"agent": "leaf", "prompt": i.to_string()})),
    );
    ScriptedModel::from_fn(move |req: &ChatRequest| match req.agent.as_str() {
        "lead" => match req.messages.last() {
            Some(Message::User { .. }) => unreachable!("the lead's first turn is scripted"),
            _ => ScriptedTurn::text("ok"),
        },
        _ if hang => ScriptedTurn::hang(),
        _ => ScriptedTurn::text("done").after(latency),
    })
    .script("lead", [delegate_all])
}

fn lead(model: &ScriptedModel) -> Agent {
    let leaf = Agent::builder("leaf").model(model.clone()).build();
    Agent::builder("lead")
        .model(model.clone())
        .delegates_to([leaf])
        .build()
}

/// Runs the fan-out to completion on `threads` worker arbiters (`None`:
/// the default, one per core); returns wall time and process CPU time.
fn run(n: usize, latency: Duration, threads: Option<usize>) -> (Duration, Duration) {
    actix_rt::System::new().block_on(async move {
        let model = model(n, Leaf::After(latency));
        let mut builder = Orchestrator::builder(lead(&model));
        if let Some(threads) = threads {
            builder = builder.worker_threads(threads);
        }
        let convo = builder.spawn();
        let wall = Instant::now();
        let cpu = ProcessTime::now();
        convo.send_user("go").await.expect("send");
        convo.settled().await.expect("settled");
        let out = (wall.elapsed(), cpu.elapsed());
        assert_eq!(convo.registry().running_count(), 0);
        convo.shutdown().await.expect("shutdown");
        out
    })
}

/// Heap bytes per task while `n` sub-agents wait on their model.
fn bytes_per_pending(n: usize) -> f64 {
    actix_rt::System::new().block_on(async move {
        let model = model(n, Leaf::Hang);
        let convo = Orchestrator::builder(lead(&model))
            .worker_threads(0)
            .spawn();
        let before = LIVE.load(Ordering::Relaxed);
        convo.send_user("go").await.expect("send");
        // Let every worker start and send its (hanging) request.
        while convo.live_agents() < n + 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let during = LIVE.load(Ordering::Relaxed);
        COUNTING.store(false, Ordering::Relaxed);
        convo.shutdown().await.expect("shutdown");
        (during.saturating_sub(before)) as f64 / n as f64
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("fanout: benchmark");
        return;
    }
    let n: usize = std::env::var("FANOUT_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    println!(
        "delegation fan-out, N = {n}, {} cores, {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        allocator_name()
    );

    // One measurement alone, for profilers (`perf`, `callgrind`):
    // FANOUT_ONLY=one-thread | pool | wall | allocs.
    if let Ok(only) = std::env::var("FANOUT_ONLY") {
        if only == "allocs" {
            let before = CALLS.load(Ordering::Relaxed);
            run(n, Duration::ZERO, Some(0));
            let calls = CALLS.load(Ordering::Relaxed) - before;
            println!(
                "  allocs: {:.1} allocations (incl. reallocations) per delegated task, zero-latency model, one thread",
                calls as f64 / n as f64
            );
            return;
        }
        COUNTING.store(false, Ordering::Relaxed);
        let (latency, threads) = match only.as_str() {
            "one-thread" => (Duration::ZERO, Some(0)),
            "pool" => (Duration::ZERO, None),
            "wall" => (Duration::from_millis(100), None),
            other => panic!("FANOUT_ONLY={other}: expected one-thread, pool or wall"),
        };
        let (wall, cpu) = run(n, latency, threads);
        println!(
            "  {only}: wall {:.3} s, CPU {:.2} µs per task",
            wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n as f64
        );
        return;
    }

    // Memory first: the allocator counts until this is measured.
    let bytes = bytes_per_pending(n);
    println!(
        "  memory: {:.0} bytes of heap per pending task ({:.2} KiB; goal ≤ 4 KiB)",
        bytes,
        bytes / 1024.0
    );

    for (label, threads) in [("one thread", Some(0)), ("arbiter pool", None)] {
        let mut per_task = Vec::new();
        for _ in 0..3 {
            let (_, cpu) = run(n, Duration::ZERO, threads);
            per_task.push(cpu.as_secs_f64() * 1e6 / n as f64);
        }
        per_task.sort_by(f64::total_cmp);
        println!(
            "  zero-latency model, {label}: CPU per delegated task, median of 3: {:.2} µs (goal ≤ 5 µs)",
            per_task[1]
        );
    }

    let ideal = Duration::from_millis(100);
    let mut walls = Vec::new();
    for _ in 0..3 {
        walls.push(run(n, ideal, None).0.as_secs_f64());
    }
    walls.sort_by(f64::total_cmp);
    println!(
        "  100 ms model: wall median of 3: {:.3} s = {:.2}x the ideal 0.100 s (goal ≤ 1.3x)",
        walls[1],
        walls[1] / ideal.as_secs_f64()
    );
}

//! Running actors on tokio's paused clock, for deterministic tests.
//!
//! Under a paused clock, time advances only when every task is waiting on a
//! timer, and then jumps straight to the next deadline: a scenario with
//! five one-second tools takes no real time, and `Instant::now()` reports
//! exactly one virtual second.

use std::cell::Cell;
use std::future::Future;

thread_local! {
    static PAUSED: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread runs [`block_on_paused`]: conversations started here
/// then keep every agent on this thread (no arbiter pool), so that all of
/// them see the same virtual clock.
pub fn is_paused() -> bool {
    PAUSED.with(Cell::get)
}

/// Runs `fut` to completion inside a fresh actix system whose tokio runtime
/// starts with the clock paused.
///
/// ```
/// use std::time::Duration;
///
/// let elapsed = baton_runtime::virtual_time::block_on_paused(async {
///     let start = tokio::time::Instant::now();
///     tokio::time::sleep(Duration::from_secs(3600)).await;
///     start.elapsed()
/// });
/// assert_eq!(elapsed, Duration::from_secs(3600));
/// ```
pub fn block_on_paused<F: Future>(fut: F) -> F::Output {
    let was = PAUSED.with(|p| p.replace(true));
    let output = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap_or_else(|e| panic!("cannot build a paused tokio runtime: {e}"))
    })
    .block_on(fut);
    PAUSED.with(|p| p.set(was));
    output
}

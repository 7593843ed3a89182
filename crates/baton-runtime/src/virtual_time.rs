//! Running actors on tokio's paused clock, for deterministic tests.
//!
//! Under a paused clock, time advances only when every task is waiting on a
//! timer, and then jumps straight to the next deadline: a scenario with
//! five one-second tools takes no real time, and `Instant::now()` reports
//! exactly one virtual second.

use std::future::Future;

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
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap_or_else(|e| panic!("cannot build a paused tokio runtime: {e}"))
    })
    .block_on(fut)
}

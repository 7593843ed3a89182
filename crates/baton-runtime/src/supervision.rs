//! [`Supervision`]: how an agent supervises the tasks it creates — how long
//! an attempt may run, how often a failed task is retried, and the backoff
//! between attempts.

use std::time::Duration;

/// The longest wait between two attempts, however many have failed.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How an agent supervises the tasks it creates (background tools and
/// delegations). The default runs each task once, with no time limit.
///
/// ```
/// use baton_runtime::Supervision;
/// use std::time::Duration;
///
/// let s = Supervision::retry(3).backoff_ms(200).timeout_s(120);
/// assert_eq!(s.max_attempts(), 4);
/// assert_eq!(s.backoff_before(2), Duration::from_millis(200));
/// assert_eq!(s.backoff_before(4), Duration::from_millis(800));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervision {
    retries: u32,
    backoff: Duration,
    timeout: Option<Duration>,
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            retries: 0,
            backoff: Duration::from_millis(100),
            timeout: None,
        }
    }
}

impl Supervision {
    /// Retries a failed or timed-out task up to `retries` times (so at most
    /// `retries + 1` attempts).
    pub fn retry(retries: u32) -> Self {
        Self {
            retries,
            ..Self::default()
        }
    }

    /// No retries and no time limit.
    pub fn none() -> Self {
        Self::default()
    }

    /// The wait before the first retry; each later retry waits twice as
    /// long as the one before, up to [`MAX_BACKOFF`].
    pub fn backoff_ms(mut self, ms: u64) -> Self {
        self.backoff = Duration::from_millis(ms);
        self
    }

    /// The time limit of one attempt, in seconds.
    pub fn timeout_s(self, secs: u64) -> Self {
        self.timeout(Duration::from_secs(secs))
    }

    /// The time limit of one attempt.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// The most attempts a task gets.
    pub fn max_attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The time limit of one attempt, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The wait before attempt number `attempt` (2 is the first retry).
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(16);
        self.backoff.saturating_mul(1 << doublings).min(MAX_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = Supervision::retry(30).backoff_ms(1000);
        assert_eq!(s.backoff_before(2), Duration::from_secs(1));
        assert_eq!(s.backoff_before(3), Duration::from_secs(2));
        assert_eq!(s.backoff_before(20), MAX_BACKOFF);
        assert_eq!(Supervision::none().max_attempts(), 1);
        assert_eq!(Supervision::none().attempt_timeout(), None);
    }
}

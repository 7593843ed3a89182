//! [`RetryPolicy`]: which failures are retried, and how long to wait.

use std::time::Duration;

/// Retries with exponential backoff and full jitter, honouring a server's
/// `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The backoff ceiling before the first retry; it doubles each retry.
    pub base: Duration,
    /// The longest wait, whatever the attempt or `Retry-After`.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Whether an HTTP status is worth retrying: 408, 429 and 5xx. 400,
    /// 401, 403 and 404 (and every other 4xx) are not.
    pub fn retryable_status(status: u16) -> bool {
        status == 408 || status == 429 || (500..600).contains(&status)
    }

    /// The wait before retry number `retry` (1 for the first): the server's
    /// `Retry-After` if it gave one, else a random wait up to
    /// `base * 2^(retry-1)`; never more than `max`.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max);
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(millis / 2..=millis.max(1)))
    }
}

/// Parses a `Retry-After` header given in seconds.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_statuses_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(RetryPolicy::retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!RetryPolicy::retryable_status(s), "{s}");
        }
    }

    #[test]
    fn backoff_grows_is_jittered_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_retries: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let first = p.backoff(1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = p.backoff(3, None);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(p.backoff(20, None) <= Duration::from_secs(1));
        }
        assert_eq!(
            p.backoff(1, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
        assert_eq!(parse_retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(Some("soon")), None);
    }
}

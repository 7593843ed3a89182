//! [`HttpSettings`] and the send loop shared by every HTTP provider: one
//! connection pool, a concurrency limit, a request timeout and retries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::chat_model::LlmError;
use crate::retry::{parse_retry_after, RetryPolicy};

/// Reliability settings of one provider client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// At most this many requests in flight at once (the rest wait for a
    /// permit, so 10,000 tasks never open 10,000 sockets).
    pub max_concurrency: usize,
    /// The longest one attempt may take, headers and body.
    pub request_timeout: Duration,
    /// The longest a stream may stay silent between two chunks.
    pub stream_idle_timeout: Duration,
    /// The longest connecting may take.
    pub connect_timeout: Duration,
    /// Which failures are retried, and how long to wait between attempts.
    pub retry: RetryPolicy,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_concurrency: 64,
            request_timeout: Duration::from_secs(120),
            stream_idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// A provider's pool, limit and settings; cheap to share.
#[derive(Debug, Clone)]
pub(crate) struct HttpCore {
    pub(crate) provider: &'static str,
    pub(crate) client: reqwest::Client,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) settings: HttpSettings,
}

impl HttpCore {
    pub(crate) fn new(provider: &'static str, settings: HttpSettings) -> Result<Self, LlmError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .pool_max_idle_per_host(settings.max_concurrency.max(1))
            .build()
            .map_err(|e| LlmError::Transport {
                provider: provider.to_string(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            provider,
            client,
            permits: Arc::new(Semaphore::new(settings.max_concurrency.max(1))),
            settings,
        })
    }

    /// The process-wide core for `(provider, base_url, settings)`, created
    /// on first use.
    pub(crate) fn shared(
        provider: &'static str,
        base_url: &str,
        settings: HttpSettings,
    ) -> Result<Self, LlmError> {
        type Pools = std::sync::Mutex<Vec<(&'static str, String, HttpCore)>>;
        static POOLS: std::sync::OnceLock<Pools> = std::sync::OnceLock::new();
        let pools = POOLS.get_or_init(Default::default);
        let mut pools = pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, _, core)) = pools
            .iter()
            .find(|(p, url, core)| *p == provider && url == base_url && core.settings == settings)
        {
            return Ok(core.clone());
        }
        let core = Self::new(provider, settings)?;
        pools.push((provider, base_url.to_string(), core.clone()));
        Ok(core)
    }

    /// Whether two cores share one pool and limit.
    #[cfg(test)]
    pub(crate) fn same_pool(&self, other: &HttpCore) -> bool {
        Arc::ptr_eq(&self.permits, &other.permits)
    }

    fn transport(&self, message: impl Into<String>) -> LlmError {
        LlmError::Transport {
            provider: self.provider.to_string(),
            message: message.into(),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry
    /// budget is spent. Each attempt holds a concurrency permit from start
    /// to end (body included). Between attempts it waits with backoff and
    /// jitter, honouring the server's `Retry-After`.
    pub(crate) async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, LlmError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let policy = self.settings.retry;
        let mut retry = 0u32;
        loop {
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| self.transport("the client was shut down"))?;
            let failure = match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            drop(permit);
            if !failure.retryable || retry >= policy.max_retries {
                return Err(failure.error);
            }
            retry += 1;
            let wait = policy.backoff(retry, failure.retry_after);
            tracing::debug!(provider = self.provider, retry, ?wait, error = %failure.error, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Posts `body` as JSON once and returns the response if its status is
    /// 2xx; an error status becomes a typed [`Failure`]. The headers must
    /// arrive by `deadline`; a streamed body is then bounded by the idle
    /// timeout instead, so long generations are not cut.
    pub(crate) async fn post(
        &self,
        request: reqwest::RequestBuilder,
        body: &serde_json::Value,
        deadline: tokio::time::Instant,
    ) -> Result<reqwest::Response, Failure> {
        let response = tokio::time::timeout_at(deadline, request.json(body).send())
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.failure(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let text = match tokio::time::timeout_at(deadline, response.text()).await {
            Ok(Ok(text)) => text,
            _ => String::new(),
        };
        Err(Failure {
            error: LlmError::Http {
                provider: self.provider.to_string(),
                status,
                message: error_message(&text),
            },
            retryable: RetryPolicy::retryable_status(status),
            retry_after,
        })
    }

    /// The attempt's deadline, from now.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.settings.request_timeout
    }

    /// The request took longer than `request_timeout`; retried.
    pub(crate) fn timed_out(&self) -> Failure {
        Failure::retry(LlmError::Timeout {
            provider: self.provider.to_string(),
            after_ms: u64::try_from(self.settings.request_timeout.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Reads a whole (non-streamed) body by `deadline`.
    pub(crate) async fn body(
        &self,
        response: reqwest::Response,
        deadline: tokio::time::Instant,
    ) -> Result<bytes::Bytes, Failure> {
        tokio::time::timeout_at(deadline, response.bytes())
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.failure(&e))
    }

    /// A reqwest failure as a retryable [`Failure`].
    pub(crate) fn failure(&self, e: &reqwest::Error) -> Failure {
        Failure::retry(self.classify(e))
    }

    /// A reply that made no sense; retried, as a cut or garbled body is
    /// usually a transport fault.
    pub(crate) fn invalid(&self, message: impl Into<String>) -> Failure {
        Failure::retry(LlmError::InvalidResponse {
            provider: self.provider.to_string(),
            message: message.into(),
        })
    }

    /// The stream went quiet for longer than the idle timeout.
    pub(crate) fn idle(&self) -> Failure {
        Failure::retry(LlmError::Timeout {
            provider: self.provider.to_string(),
            after_ms: u64::try_from(self.settings.stream_idle_timeout.as_millis())
                .unwrap_or(u64::MAX),
        })
    }

    /// Maps a reqwest failure to a typed error (never including the URL's
    /// query or any header).
    pub(crate) fn classify(&self, e: &reqwest::Error) -> LlmError {
        if e.is_timeout() {
            return LlmError::Timeout {
                provider: self.provider.to_string(),
                after_ms: u64::try_from(self.settings.request_timeout.as_millis())
                    .unwrap_or(u64::MAX),
            };
        }
        let kind = if e.is_connect() {
            "cannot connect"
        } else if e.is_body() || e.is_decode() {
            "reading the reply failed"
        } else {
            "the request failed"
        };
        let mut message = kind.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        self.transport(message)
    }
}

/// Why one attempt failed, and whether another is worth making.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: LlmError,
    pub(crate) retryable: bool,
    pub(crate) retry_after: Option<Duration>,
}

impl Failure {
    pub(crate) fn retry(error: LlmError) -> Self {
        Self {
            error,
            retryable: true,
            retry_after: None,
        }
    }
}

/// The error text from a provider's JSON error body (`{"error": {"message":
/// …}}`, the shape both OpenAI and Anthropic use), else the body itself,
/// shortened.
pub(crate) fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    if let Some(msg) = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
    {
        return msg.to_string();
    }
    let mut text: String = body.chars().take(300).collect();
    if text.is_empty() {
        text = "(empty body)".into();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(max_retries: u32) -> HttpCore {
        HttpCore::new(
            "openai",
            HttpSettings {
                retry: RetryPolicy {
                    max_retries,
                    base: Duration::from_millis(100),
                    max: Duration::from_secs(10),
                },
                ..HttpSettings::default()
            },
        )
        .expect("client")
    }

    fn http(status: u16, retry_after: Option<Duration>) -> Failure {
        Failure {
            error: LlmError::Http {
                provider: "openai".into(),
                status,
                message: "m".into(),
            },
            retryable: RetryPolicy::retryable_status(status),
            retry_after,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_loop_waits_retry_after_then_succeeds() {
        let core = core(3);
        let start = tokio::time::Instant::now();
        let mut attempts = 0;
        let result = core
            .run(|| {
                attempts += 1;
                let n = attempts;
                async move {
                    if n < 3 {
                        Err(http(429, Some(Duration::from_secs(2))))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result, Ok(3));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(4),
            "two waits of Retry-After"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_loop_backs_off_exponentially_and_gives_up_after_the_budget() {
        let core = core(3);
        let start = tokio::time::Instant::now();
        let mut attempts = 0;
        let result: Result<(), LlmError> = core
            .run(|| {
                attempts += 1;
                async { Err(http(503, None)) }
            })
            .await;
        assert!(matches!(result, Err(LlmError::Http { status: 503, .. })));
        assert_eq!(attempts, 4);
        // Jittered waits of 50–100, 100–200 and 200–400 ms.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(350) && waited <= Duration::from_millis(700),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_not_retried() {
        let core = core(3);
        let mut attempts = 0;
        let result: Result<(), LlmError> = core
            .run(|| {
                attempts += 1;
                async { Err(http(401, None)) }
            })
            .await;
        assert!(matches!(result, Err(LlmError::Http { status: 401, .. })));
        assert_eq!(attempts, 1);
    }

    #[test]
    fn shared_cores_are_one_per_provider_url_and_settings() {
        let s = HttpSettings::default();
        let a = HttpCore::shared("openai", "http://x/v1", s).expect("core");
        let b = HttpCore::shared("openai", "http://x/v1", s).expect("core");
        let c = HttpCore::shared("ollama", "http://x/v1", s).expect("core");
        assert!(a.same_pool(&b));
        assert!(!a.same_pool(&c));
        assert!(!a.same_pool(&HttpCore::new("openai", s).expect("core")));
    }

    #[test]
    fn error_message_prefers_the_json_message() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad key","type":"auth"}}"#),
            "bad key"
        );
        assert_eq!(error_message("oops"), "oops");
        assert_eq!(error_message(""), "(empty body)");
    }
}

//! Retries with exponential backoff, and what counts as retryable.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// How often and how patiently to retry an operation that failed with a retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in total, including the first (at least 1).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff: Duration,
    /// Upper bound on any one delay.
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryConfig {
    /// No retries at all.
    pub fn none() -> Self {
        RetryConfig {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The delay after failed attempt number `attempt` (1-based), with jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = base.min(self.max_backoff);
        let jitter: f64 = 0.75 + rand::random::<f64>() * 0.5;
        capped.mul_f64(jitter)
    }

    /// Run `op` until it succeeds, fails with a non-retryable error, or attempts run out.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_attempts.max(1) => {
                    let delay = self.backoff(attempt);
                    tracing::warn!(what, attempt, error = %e, ?delay, "retrying after error");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Blocking variant of [`run`](Self::run) for code on blocking threads.
    pub fn run_blocking<T>(&self, what: &str, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 1;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_attempts.max(1) => {
                    let delay = self.backoff(attempt);
                    tracing::warn!(what, attempt, error = %e, ?delay, "retrying after error");
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Convenience: is this error worth another attempt?
pub fn is_retryable(e: &Error) -> bool {
    e.is_retryable()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn flaky() -> Error {
        Error::Backend {
            kind: "test",
            message: "503".into(),
            retryable: true,
            source: None,
        }
    }

    #[tokio::test]
    async fn retries_retryable_errors_then_succeeds() {
        let cfg = RetryConfig {
            initial_backoff: Duration::from_millis(1),
            ..Default::default()
        };
        let calls = AtomicU32::new(0);
        let v = cfg
            .run("op", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(flaky())
                } else {
                    Ok(7)
                }
            })
            .await
            .expect("eventually ok");
        assert_eq!(v, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn does_not_retry_permanent_errors() {
        let cfg = RetryConfig::default();
        let calls = AtomicU32::new(0);
        let r: Result<()> = cfg
            .run("op", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::not_found("x"))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

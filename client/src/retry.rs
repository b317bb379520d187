//! The one retry policy: honour `Retry-After`, else back off exponentially with jitter,
//! and give up after a bounded total time.

use std::future::Future;
use std::time::Duration;

use crate::{ClientError, Result};

/// How a caller retries a request the node could not serve yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first pause, when the node gave no `Retry-After`.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub total: Duration,
}

impl Default for RetryPolicy {
    /// 100 ms, doubling up to 2 s, for at most 30 s.
    fn default() -> RetryPolicy {
        RetryPolicy {
            first: Duration::from_millis(100),
            max: Duration::from_secs(2),
            total: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            first: Duration::ZERO,
            max: Duration::ZERO,
            total: Duration::ZERO,
        }
    }

    /// The same policy, giving up after `total`.
    pub fn with_total(self, total: Duration) -> RetryPolicy {
        RetryPolicy { total, ..self }
    }

    /// The pause before retry number `attempt` (from 0): what the node asked for
    /// (`retry_after`), else `first` doubled per attempt up to `max`; either way scaled by
    /// a random factor in [0.5, 1.5), so that clients refused together do not come back
    /// together.
    pub fn pause(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let base = retry_after.unwrap_or_else(|| {
            self.first
                .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
                .min(self.max)
        });
        base.mul_f64(0.5 + rand::random::<f64>())
    }

    /// Runs `op` until it succeeds, fails for good ([`ClientError::is_retryable`] false), or
    /// the next pause would end past `total`; returns the last result. (`total` bounds the
    /// pauses: the last attempt may still take up to its own request timeout.)
    ///
    /// # Errors
    /// The last error of `op`.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let give_up = tokio::time::Instant::now() + self.total;
        let mut attempt = 0;
        loop {
            let err: ClientError = match op().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => e,
            };
            let pause = self.pause(attempt, err.retry_after());
            if tokio::time::Instant::now() + pause >= give_up {
                return Err(err);
            }
            tracing::debug!(error = %err, ?pause, "retrying");
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_api::{ErrorBody, ErrorCode};

    fn busy() -> ClientError {
        ClientError::Api {
            url: "http://node".into(),
            status: 503,
            error: ErrorBody::new(ErrorCode::Busy, "full"),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn pauses_follow_retry_after_else_double_up_to_the_max_with_jitter() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            let d = p.pause(0, Some(Duration::from_secs(1)));
            assert!(d >= Duration::from_millis(500) && d < Duration::from_millis(1500));
            let d = p.pause(0, None);
            assert!(d >= Duration::from_millis(50) && d < Duration::from_millis(150));
            let d = p.pause(3, None);
            assert!(d >= Duration::from_millis(400) && d < Duration::from_millis(1200));
            let d = p.pause(40, None);
            assert!(d >= Duration::from_secs(1) && d < Duration::from_secs(3));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_may_pass_later_and_gives_up_in_bounded_time() {
        let p = RetryPolicy::default().with_total(Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let mut calls = 0;
        let out: Result<()> = p
            .run(|| {
                calls += 1;
                async { Err(busy()) }
            })
            .await;
        assert_eq!(out.expect_err("gives up").code(), Some(ErrorCode::Busy));
        assert!(started.elapsed() <= Duration::from_secs(10));
        // About one retry per second (Retry-After, jittered), for ten seconds.
        assert!((5..=21).contains(&calls), "{calls}");

        let mut calls = 0;
        let out: Result<u32> = p
            .run(|| {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err(busy()) } else { Ok(n) } }
            })
            .await;
        assert_eq!(out.expect("third call passes"), 3);

        // A refusal for good is not retried.
        let mut calls = 0;
        let out: Result<()> = p
            .run(|| {
                calls += 1;
                async {
                    Err(ClientError::Api {
                        url: "http://node".into(),
                        status: 400,
                        error: ErrorBody::new(ErrorCode::BadSignature, "no"),
                        retry_after: None,
                    })
                }
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls, 1);
    }
}

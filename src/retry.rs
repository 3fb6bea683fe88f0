//! Patience for a batch job. The SDK retries a request a few times and stops early once its
//! shared retry quota is spent, which in a throttling storm is at once. A transient failure
//! (throttling, a 5xx answer, a timeout, a dropped connection) is therefore tried again here,
//! with exponential backoff and full jitter, until a time limit (`--retry-for`); only then is
//! it a failure.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::RemoteFailure;

/// How long, and how, transient failures are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Give up once this much time has passed since the first try.
    pub max_elapsed: Duration,
    /// The ceiling of the first pause; each pause's ceiling doubles up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_elapsed: Duration::from_secs(300),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// A policy that gives up after `max_elapsed`.
    pub fn for_duration(max_elapsed: Duration) -> Self {
        RetryPolicy {
            max_elapsed,
            ..RetryPolicy::default()
        }
    }

    /// The longest pause before try `attempt + 1` (`attempt` counts from 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// The pause before try `attempt + 1`: "full jitter", a uniform fraction of the ceiling, so
    /// that thousands of throttled requests do not come back at the same instant.
    pub fn pause(&self, attempt: u32, fraction: f64) -> Duration {
        self.ceiling(attempt).mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// The tries of one operation under a policy.
#[derive(Debug)]
pub struct Retrier {
    policy: RetryPolicy,
    started: Instant,
    attempts: u32,
}

impl Retrier {
    pub fn new(policy: RetryPolicy) -> Self {
        Retrier {
            policy,
            started: Instant::now(),
            attempts: 0,
        }
    }

    /// Tries made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a failed try: sleeps and returns true when the failure is transient and the time
    /// limit allows another try; returns false at once otherwise.
    pub async fn again(&mut self, failure: &RemoteFailure) -> bool {
        self.attempts += 1;
        if !failure.is_transient() {
            return false;
        }
        let pause = self.policy.pause(self.attempts, fastrand::f64());
        if self.started.elapsed() + pause > self.policy.max_elapsed {
            return false;
        }
        tokio::time::sleep(pause).await;
        true
    }

    /// Why the last failure is final, for the message that reports it.
    pub fn gave_up(&self, failure: &RemoteFailure) -> RemoteFailure {
        match failure {
            RemoteFailure::Throttled(detail) | RemoteFailure::Transient(detail) => {
                let detail = format!(
                    "{detail}; gave up after {} tries in {:.0?} (--retry-for {:?})",
                    self.attempts,
                    self.started.elapsed(),
                    self.policy.max_elapsed
                );
                if matches!(failure, RemoteFailure::Throttled(_)) {
                    RemoteFailure::Throttled(detail)
                } else {
                    RemoteFailure::Transient(detail)
                }
            }
            other => other.clone(),
        }
    }
}

/// Runs `operation` until it succeeds, fails for good, or the policy's time is up.
pub async fn retrying<T, F, Fut>(
    policy: RetryPolicy,
    what: impl Display,
    mut operation: F,
) -> Result<T, RemoteFailure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RemoteFailure>>,
{
    let mut retrier = Retrier::new(policy);
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(failure) => {
                if !retrier.again(&failure).await {
                    return Err(retrier.gave_up(&failure));
                }
                let tries = retrier.attempts();
                // Quiet at first (a storm is normal), then a line now and again for an operator.
                if tries >= 8 && tries.is_power_of_two() {
                    tracing::warn!("{what}: still failing after {tries} tries ({failure}); trying again until --retry-for is up");
                } else {
                    tracing::debug!("{what} failed ({failure}); try {}", tries + 1);
                }
            }
        }
    }
}

/// Parses `--retry-for`: seconds, or a number with `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: use seconds, or 90s, 5m, 1h"))?;
    let scale = match unit.trim() {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("`{other}` is not a time unit: use s, m or h")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_jitter_stays_below_the_ceiling() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.ceiling(2), Duration::from_millis(200));
        assert_eq!(policy.ceiling(5), Duration::from_millis(1600));
        assert_eq!(policy.ceiling(40), Duration::from_secs(20));
        assert_eq!(policy.pause(3, 0.5), Duration::from_millis(200));
        assert_eq!(policy.pause(3, 7.0), Duration::from_millis(400));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_they_succeed_permanent_ones_never() {
        let policy = RetryPolicy {
            max_elapsed: Duration::from_secs(5),
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let mut tries = 0;
        let result = retrying(policy, "test", || {
            tries += 1;
            let outcome = if tries < 20 {
                Err(RemoteFailure::Throttled("SlowDown".into()))
            } else {
                Ok(tries)
            };
            async move { outcome }
        })
        .await;
        assert_eq!(
            result,
            Ok(20),
            "twenty throttled tries in a row still succeed"
        );

        let mut tries = 0;
        let result: Result<(), _> = retrying(policy, "test", || {
            tries += 1;
            async { Err(RemoteFailure::AccessDenied) }
        })
        .await;
        assert_eq!(result, Err(RemoteFailure::AccessDenied));
        assert_eq!(tries, 1);
    }

    #[tokio::test]
    async fn transient_failures_give_up_when_the_time_is_up_and_say_so() {
        let policy = RetryPolicy {
            max_elapsed: Duration::from_millis(50),
            first_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
        };
        let started = Instant::now();
        let result: Result<(), _> = retrying(policy, "test", || async {
            Err(RemoteFailure::Transient("HTTP 500 InternalError".into()))
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(2));
        match result {
            Err(RemoteFailure::Transient(detail)) => {
                assert!(detail.contains("gave up after"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("soon").is_err());
    }
}

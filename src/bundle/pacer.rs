//! Adaptive GET concurrency. Under a throttling storm (503 SlowDown) the number of GETs in
//! flight is halved, at most once per cool-down so that one burst of answers counts once, and
//! it climbs back by one for every `limit` GETs that succeed in a row (additive increase,
//! multiplicative decrease, as TCP does). Each change is logged at INFO.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::info;

/// How long after one cut the next throttled answer is taken as the same burst.
const COOL_DOWN: Duration = Duration::from_secs(1);

/// The limit itself: pure, so it is tested without time or tasks.
#[derive(Debug, Clone)]
pub struct AimdLimit {
    limit: usize,
    max: usize,
    last_cut: Option<Instant>,
    successes: usize,
}

impl AimdLimit {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        AimdLimit {
            limit: max,
            max,
            last_cut: None,
            successes: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A throttled answer at `now`: halves the limit unless it was cut within the cool-down.
    /// Returns the new limit when it changed.
    pub fn throttled(&mut self, now: Instant) -> Option<usize> {
        self.successes = 0;
        if self
            .last_cut
            .is_some_and(|cut| now.saturating_duration_since(cut) < COOL_DOWN)
            || self.limit == 1
        {
            return None;
        }
        self.last_cut = Some(now);
        self.limit = (self.limit / 2).max(1);
        Some(self.limit)
    }

    /// A successful answer: after `limit` of them in a row the limit grows by one. Returns the
    /// new limit when it changed.
    pub fn succeeded(&mut self) -> Option<usize> {
        if self.limit >= self.max {
            return None;
        }
        self.successes += 1;
        if self.successes < self.limit {
            return None;
        }
        self.successes = 0;
        self.limit += 1;
        Some(self.limit)
    }
}

#[derive(Debug)]
struct State {
    limit: AimdLimit,
    in_flight: usize,
}

/// A gate that lets at most the current limit of GETs through.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<State>,
    freed: Notify,
}

/// One GET's place in the gate; freed on drop.
#[derive(Debug)]
pub struct PacerSlot {
    pacer: Arc<Pacer>,
}

impl Pacer {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Pacer {
            state: Mutex::new(State {
                limit: AimdLimit::new(max),
                in_flight: 0,
            }),
            freed: Notify::new(),
        })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut state)
    }

    /// Waits for a place under the current limit.
    pub async fn acquire(self: &Arc<Self>) -> PacerSlot {
        loop {
            let freed = self.freed.notified();
            let admitted = self.with_state(|state| {
                let open = state.in_flight < state.limit.limit();
                if open {
                    state.in_flight += 1;
                }
                open
            });
            if admitted {
                return PacerSlot {
                    pacer: self.clone(),
                };
            }
            freed.await;
        }
    }

    /// S3 answered SlowDown: fewer GETs at once.
    pub fn throttled(&self) {
        if let Some(limit) = self.with_state(|state| state.limit.throttled(Instant::now())) {
            info!("S3 is throttling GETs (SlowDown): lowered the GETs in flight to {limit}");
        }
    }

    /// A GET succeeded: after enough of them, one more at once.
    pub fn succeeded(&self) {
        let raised = self.with_state(|state| {
            let before = state.limit.limit();
            state
                .limit
                .succeeded()
                .map(|now| (before, now, state.limit.max))
        });
        if let Some((before, now, max)) = raised {
            // One line per doubling, and when the full concurrency is back.
            if now == max || now.is_power_of_two() {
                info!(
                    "S3 answers again: raised the GETs in flight from {before} to {now} (of {max})"
                );
            }
            self.freed.notify_one();
        }
    }

    pub fn limit(&self) -> usize {
        self.with_state(|state| state.limit.limit())
    }
}

impl Drop for PacerSlot {
    fn drop(&mut self) {
        self.pacer
            .with_state(|state| state.in_flight = state.in_flight.saturating_sub(1));
        self.pacer.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_once_per_burst_and_success_climbs_back_one_at_a_time() {
        let mut limit = AimdLimit::new(64);
        let t0 = Instant::now();
        assert_eq!(limit.throttled(t0), Some(32));
        assert_eq!(
            limit.throttled(t0 + Duration::from_millis(500)),
            None,
            "same burst"
        );
        assert_eq!(limit.throttled(t0 + Duration::from_secs(2)), Some(16));
        for _ in 0..15 {
            assert_eq!(limit.succeeded(), None);
        }
        assert_eq!(limit.succeeded(), Some(17));
        let mut grown = 0;
        while limit.limit() < 64 {
            limit.succeeded();
            grown += 1;
        }
        assert!(grown < 64 * 64, "climbs back within bounded successes");
        assert_eq!(limit.succeeded(), None, "never above the maximum");
    }

    #[test]
    fn the_limit_never_falls_below_one() {
        let mut limit = AimdLimit::new(2);
        let mut now = Instant::now();
        for _ in 0..5 {
            now += Duration::from_secs(5);
            limit.throttled(now);
        }
        assert_eq!(limit.limit(), 1);
    }

    #[tokio::test]
    async fn the_gate_admits_only_the_current_limit() {
        let pacer = Pacer::new(4);
        let mut slots = Vec::new();
        for _ in 0..4 {
            slots.push(pacer.acquire().await);
        }
        let waiting = tokio::spawn({
            let pacer = pacer.clone();
            async move { pacer.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        pacer.throttled();
        assert_eq!(pacer.limit(), 2);
        slots.truncate(2);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "2 in flight under a limit of 2");
        slots.pop();
        let admitted = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(admitted, Ok(Ok(_))));
    }
}

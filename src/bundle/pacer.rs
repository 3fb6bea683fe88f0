//! Adaptive GET concurrency. Under a throttling storm (503 SlowDown) the number of GETs in
//! flight is halved, at most once per cool-down so that one burst of answers counts once, and
//! it climbs back by one for every `limit` GETs that succeed in a row (additive increase,
//! multiplicative decrease, as TCP does).
//!
//! Above the starting limit it grows by a quarter at a time, up to a ceiling, while GETs wait
//! for the gate and S3 still answers (first byte) within a quarter of the fastest answer seen:
//! at real S3's 10-30 ms, a fixed number in flight caps a worker long before its cores do.
//! Once answers slow down (the client's cores, the network or S3 are the bound: more GETs at
//! once would only queue) it stops growing. Each change is logged at INFO.

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
    /// What the limit climbs back to after throttling: the start, or as far as it grew.
    max: usize,
    /// How far `max` may grow while answers stay fast.
    ceiling: usize,
    last_cut: Option<Instant>,
    successes: usize,
    growth: Growth,
}

/// What decides whether more GETs at once would help: answer times since the last decision.
#[derive(Debug, Clone, Default)]
struct Growth {
    fastest: Option<Duration>,
    total: Duration,
    answers: usize,
    /// A GET waited for the gate since the last decision: the limit, not the work fed to it,
    /// is what bounds the GETs in flight.
    waited: bool,
}

/// How much slower than the fastest answer the answers since the last decision may be on
/// average for the limit to grow: a quarter, which queueing anywhere exceeds.
const GROWTH_SLOWDOWN: f64 = 1.25;

impl AimdLimit {
    /// A limit of `start` GETs in flight that may grow to `ceiling` (at least `start`).
    pub fn new(start: usize, ceiling: usize) -> Self {
        let start = start.max(1);
        AimdLimit {
            limit: start,
            max: start,
            ceiling: ceiling.max(start),
            last_cut: None,
            successes: 0,
            growth: Growth::default(),
        }
    }

    /// A GET had to wait for the gate.
    pub fn waited(&mut self) {
        self.growth.waited = true;
    }

    /// A GET answered with its headers after `took`. After `limit` answers, grows the limit by a
    /// quarter when GETs waited for the gate and the answers averaged within
    /// [`GROWTH_SLOWDOWN`] of the fastest; returns the new limit when it grew.
    pub fn answered(&mut self, took: Duration) -> Option<usize> {
        let growth = &mut self.growth;
        growth.fastest = Some(growth.fastest.map_or(took, |fastest| fastest.min(took)));
        if self.limit < self.max || self.max >= self.ceiling {
            return None;
        }
        growth.total += took;
        growth.answers += 1;
        if growth.answers < self.limit {
            return None;
        }
        let mean = growth.total.as_secs_f64() / growth.answers as f64;
        let fast = growth
            .fastest
            .is_some_and(|fastest| mean <= fastest.as_secs_f64() * GROWTH_SLOWDOWN);
        let grow = growth.waited && fast;
        self.growth = Growth {
            fastest: growth.fastest,
            ..Growth::default()
        };
        if !grow {
            return None;
        }
        self.limit = (self.limit + (self.limit / 4).max(1)).min(self.ceiling);
        self.max = self.limit;
        Some(self.limit)
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
        self.growth.total = Duration::ZERO;
        self.growth.answers = 0;
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
    /// A gate of `start` GETs in flight that may grow to `ceiling`.
    pub fn new(start: usize, ceiling: usize) -> Arc<Self> {
        Arc::new(Pacer {
            state: Mutex::new(State {
                limit: AimdLimit::new(start, ceiling),
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
                } else {
                    state.limit.waited();
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

    /// A GET answered with its headers after `took`: while answers stay as fast as the
    /// fastest, more at once.
    pub fn answered(&self, took: Duration) {
        let grown = self.with_state(|state| {
            let before = state.limit.limit();
            state
                .limit
                .answered(took)
                .map(|now| (before, now, state.limit.ceiling))
        });
        if let Some((before, now, ceiling)) = grown {
            info!(
                "S3 answers as fast with more GETs at once: raised the GETs in flight from {before} to {now} (at most {ceiling})"
            );
            self.freed.notify_waiters();
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
        let mut limit = AimdLimit::new(64, 64);
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

    /// `limit` answers after `took` each, with a GET waiting for the gate first when `waited`;
    /// the last answer's decision.
    fn window(limit: &mut AimdLimit, took: Duration, waited: bool) -> Option<usize> {
        if waited {
            limit.waited();
        }
        (0..limit.limit()).fold(None, |_, _| limit.answered(took))
    }

    #[test]
    fn the_limit_grows_by_a_quarter_while_answers_stay_fast_up_to_the_ceiling() {
        let ms = Duration::from_millis;
        let mut limit = AimdLimit::new(256, 1024);
        assert_eq!(window(&mut limit, ms(20), true), Some(320));
        assert_eq!(window(&mut limit, ms(24), true), Some(400), "within 1.25x");
        let mut steps = 0;
        while window(&mut limit, ms(21), true).is_some() {
            steps += 1;
        }
        assert_eq!((limit.limit(), steps), (1024, 5), "500 625 781 976 1024");
        assert_eq!(
            window(&mut limit, ms(20), true),
            None,
            "never past the ceiling"
        );
    }

    #[test]
    fn the_limit_stops_growing_once_answers_slow_down_or_nothing_waits() {
        let ms = Duration::from_millis;
        let mut limit = AimdLimit::new(256, 1024);
        assert_eq!(window(&mut limit, ms(20), true), Some(320));
        assert_eq!(
            window(&mut limit, ms(26), true),
            None,
            "queueing: 1.3x the fastest"
        );
        assert_eq!(
            window(&mut limit, ms(20), false),
            None,
            "the gate was not the bound"
        );
        assert_eq!(limit.limit(), 320);
        assert_eq!(window(&mut limit, ms(20), true), Some(400), "fast again");
    }

    #[test]
    fn a_chosen_concurrency_never_grows_and_throttling_climbs_back_to_the_grown_limit() {
        let ms = Duration::from_millis;
        let mut chosen = AimdLimit::new(64, 64);
        assert_eq!(window(&mut chosen, ms(20), true), None);
        let mut limit = AimdLimit::new(256, 1024);
        assert_eq!(window(&mut limit, ms(20), true), Some(320));
        assert_eq!(limit.throttled(Instant::now()), Some(160));
        assert_eq!(
            window(&mut limit, ms(20), true),
            None,
            "no growth while recovering"
        );
        while limit.succeeded().is_some() || limit.limit() < 320 {}
        assert_eq!(limit.limit(), 320, "climbs back to where it had grown");
    }

    #[test]
    fn the_limit_never_falls_below_one() {
        let mut limit = AimdLimit::new(2, 2);
        let mut now = Instant::now();
        for _ in 0..5 {
            now += Duration::from_secs(5);
            limit.throttled(now);
        }
        assert_eq!(limit.limit(), 1);
    }

    /// A gate of 4 that may grow to `ceiling`, its 4 places taken, and a GET waiting at it.
    async fn full_gate(
        ceiling: usize,
    ) -> (
        Arc<Pacer>,
        Vec<PacerSlot>,
        tokio::task::JoinHandle<PacerSlot>,
    ) {
        let pacer = Pacer::new(4, ceiling);
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
        (pacer, slots, waiting)
    }

    #[tokio::test]
    async fn the_gate_admits_only_the_current_limit() {
        let (pacer, mut slots, waiting) = full_gate(4).await;
        pacer.throttled();
        assert_eq!(pacer.limit(), 2);
        slots.truncate(2);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "2 in flight under a limit of 2");
        slots.pop();
        let admitted = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(admitted, Ok(Ok(_))));
    }

    #[tokio::test]
    async fn growing_admits_the_gets_waiting_at_the_gate() {
        let (pacer, _slots, waiting) = full_gate(8).await;
        for _ in 0..4 {
            pacer.answered(Duration::from_millis(20));
        }
        assert_eq!(pacer.limit(), 5);
        let admitted = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(
            matches!(admitted, Ok(Ok(_))),
            "admitted without a slot freed"
        );
    }
}

//! The byte budget: the one memory bound of `bundle`. A permit for an object's bytes is taken
//! before its GET and travels with those bytes into a part; it is given back when S3 has
//! acknowledged that part.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits are counted in KiB so that one acquisition of up to 4 TiB fits a `u32`.
const UNIT: u64 = 1024;

#[derive(Clone, Debug)]
pub struct ByteBudget {
    semaphore: Arc<Semaphore>,
    capacity_units: u32,
}

/// Bytes held against the budget; released on drop.
#[derive(Debug, Default)]
pub struct BudgetPermit(Option<OwnedSemaphorePermit>);

/// The budget of an archive cut in parts of `part_size`: `--max-in-flight` itself, never more.
/// A part must be able to fill while other objects are in flight (buffered objects are at most
/// a third of the budget), so a budget under two parts is refused, saying what to change.
pub fn budget_for(max_in_flight: u64, part_size: u64) -> Result<u64, String> {
    if max_in_flight >= 2 * part_size {
        return Ok(max_in_flight);
    }
    Err(format!(
        "--max-in-flight {} is less than two {} MiB parts, the part size this archive needs to \
         fit S3's 10,000 parts; raise --max-in-flight to at least {} MiB, or split the objects \
         into smaller manifests (group -s)",
        crate::size::human_bytes(max_in_flight),
        part_size >> 20,
        (2 * part_size).div_ceil(1 << 20)
    ))
}

impl ByteBudget {
    pub fn new(bytes: u64) -> Self {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        ByteBudget {
            semaphore: Arc::new(Semaphore::new(units as usize)),
            capacity_units: units,
        }
    }

    pub fn capacity(&self) -> u64 {
        u64::from(self.capacity_units) * UNIT
    }

    /// Waits until `bytes` fit. A request larger than the whole budget takes the whole budget,
    /// so it waits for everything else but never forever.
    pub async fn acquire(&self, bytes: u64) -> BudgetPermit {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(self.capacity_units);
        match self.semaphore.clone().acquire_many_owned(units).await {
            Ok(permit) => BudgetPermit(Some(permit)),
            // The semaphore is never closed; an empty permit is the harmless answer if it were.
            Err(_) => BudgetPermit(None),
        }
    }

    /// Bytes not held by anyone, for tests and progress.
    pub fn available(&self) -> u64 {
        self.semaphore.available_permits() as u64 * UNIT
    }
}

impl BudgetPermit {
    /// Joins another permit into this one, so both are released together.
    pub fn merge(&mut self, other: BudgetPermit) {
        match (&mut self.0, other.0) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (slot @ None, theirs) => *slot = theirs,
            (Some(_), None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_max_in_flight_and_too_small_a_one_is_refused_with_what_to_do() {
        assert_eq!(budget_for(192 << 20, 8 << 20), Ok(192 << 20));
        assert_eq!(budget_for(16 << 20, 8 << 20), Ok(16 << 20));
        let refused = budget_for(192 << 20, 120 << 20).err().unwrap_or_default();
        assert!(
            refused.contains("at least 240 MiB") && refused.contains("group -s"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn permits_are_held_until_dropped_and_merge() {
        let budget = ByteBudget::new(10 * 1024);
        let mut first = budget.acquire(4 * 1024).await;
        let second = budget.acquire(6 * 1024).await;
        assert_eq!(budget.available(), 0);
        first.merge(second);
        assert_eq!(budget.available(), 0);
        drop(first);
        assert_eq!(budget.available(), 10 * 1024);
    }

    #[tokio::test]
    async fn oversized_requests_take_the_whole_budget_instead_of_waiting_forever() {
        let budget = ByteBudget::new(8 * 1024);
        let big = budget.acquire(1 << 40).await;
        assert_eq!(budget.available(), 0);
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(big);
        let small = waiter.await.unwrap_or_default();
        drop(small);
        assert_eq!(budget.available(), budget.capacity());
    }
}

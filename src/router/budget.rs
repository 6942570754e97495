//! The retry budget: how many retries one core may make.
//!
//! Retries help when one provider fails among healthy ones, and hurt when
//! all of them are failing: each retry is more load on a service already in
//! trouble. So retries are limited to a share of the requests the core has
//! seen over a sliding window, plus a small floor so a quiet core can still
//! retry at all. Past the budget the error goes to the client.

use std::time::Instant;

/// Share of requests that may be retried.
pub const RETRY_RATIO: f64 = 0.2;

/// Retries allowed per window regardless of traffic.
pub const RETRY_FLOOR: u32 = 10;

/// The window is this many one-second buckets.
const WINDOW_S: usize = 10;

#[derive(Debug)]
pub struct RetryBudget {
    started: Instant,
    /// Requests and retries per second, as a ring over the window.
    buckets: [(u32, u32); WINDOW_S],
    /// The second (since `started`) that `buckets[second % WINDOW_S]` holds.
    second: u64,
}

impl RetryBudget {
    pub fn new(now: Instant) -> Self {
        RetryBudget { started: now, buckets: [(0, 0); WINDOW_S], second: 0 }
    }

    /// Moves the ring to `now`, clearing the seconds that went by.
    fn advance(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.started).as_secs();
        let gone = second.saturating_sub(self.second).min(WINDOW_S as u64);
        for step in 1..=gone {
            self.buckets[((self.second + step) % WINDOW_S as u64) as usize] = (0, 0);
        }
        self.second = self.second.max(second);
    }

    fn current(&mut self) -> &mut (u32, u32) {
        &mut self.buckets[(self.second % WINDOW_S as u64) as usize]
    }

    pub fn record_request(&mut self, now: Instant) {
        self.advance(now);
        self.current().0 += 1;
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.advance(now);
        let (requests, retries) =
            self.buckets.iter().fold((0u32, 0u32), |(a, b), (r, t)| (a + r, b + t));
        let allowed = (f64::from(requests) * RETRY_RATIO) as u32 + RETRY_FLOOR;
        if retries >= allowed {
            return false;
        }
        self.current().1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_are_a_share_of_requests_plus_a_floor() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(start);
        for _ in 0..100 {
            budget.record_request(start);
        }
        let granted = (0..100).filter(|_| budget.try_retry(start)).count();
        assert_eq!(granted, 20 + RETRY_FLOOR as usize);
    }

    #[test]
    fn the_window_slides() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(start);
        let granted = (0..100).filter(|_| budget.try_retry(start)).count();
        assert_eq!(granted, RETRY_FLOOR as usize);
        let later = start + Duration::from_secs(WINDOW_S as u64 + 1);
        assert!(budget.try_retry(later));
    }
}

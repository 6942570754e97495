//! Counters kept per core.
//!
//! Each core counts into its own plain cells: no atomics shared between
//! cores on the request path. Readers sum the cores' counters when asked.

use std::cell::Cell;

/// One core's counters.
#[derive(Debug, Default)]
pub struct CoreMetrics {
    /// Responses sent to clients by status class: index 1 for 1xx to 5 for
    /// 5xx, 0 for anything else.
    pub responses_by_class: [Cell<u64>; 6],
    pub connections_accepted: Cell<u64>,
    /// Connections closed at once because the core was at its share of
    /// `--max-connections`.
    pub connections_refused: Cell<u64>,
}

impl CoreMetrics {
    pub fn count_status(&self, status: u16) {
        let class = match status / 100 {
            class @ 1..=5 => class as usize,
            _ => 0,
        };
        bump(&self.responses_by_class[class]);
    }
}

pub fn bump(cell: &Cell<u64>) {
    cell.set(cell.get() + 1);
}

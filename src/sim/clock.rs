//! Time in the simulation: simulated time, the nodes' wall clocks, and start times
//! relative to the base epoch. Every other part of the simulation reads time from here.

use std::time::Duration;

use crate::net::WallClock;

/// Epoch seconds every node's clock shows at simulated time zero, before its own offset
/// (2023-11-14 22:13:20 UTC). Start times in snapshots are relative to it.
pub const BASE_EPOCH: f64 = 1_700_000_000.0;

/// Simulated time inside the host being run, for timestamps; zero outside a simulation.
pub(crate) fn sim_now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Milliseconds between the base epoch and `epoch_secs`, rounded.
pub(crate) fn relative_ms(epoch_secs: f64) -> i64 {
    ((epoch_secs - BASE_EPOCH) * 1000.0).round() as i64
}

/// A node's wall clock in the simulation: its reading at simulated time zero, plus the
/// simulated time elapsed. Start times (seniority) are read from it, so they are exact
/// and repeatable; give nodes different readings to simulate clock skew.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimClock {
    /// Epoch seconds this clock shows at simulated time zero.
    pub at_zero: f64,
}

impl WallClock for SimClock {
    fn now_epoch(&self) -> f64 {
        self.at_zero + sim_now().as_secs_f64()
    }
}

//! Quorum mode: no two nodes act as leader at the same instant.
//!
//! Checked on ground truth, not on samples: each node incarnation's spans of acting
//! leadership come from its own observations, the core's decision to lead or stop and
//! its `LeaderChanged` handler's calls, at the simulated instant they happened, taking
//! the earlier start and the later end of the two; a crash or a stop ends a span, and
//! a paused node does nothing, so its pauses are cut out (see `les::sim::ActingSpan`).
//! It fails when one span begins before another one, of a different node or
//! incarnation, has ended: a new leader that did not wait for the old one's lease, or
//! an old leader that acted on a lease that had run out (after a pause, or on a clock
//! running slow).

use crate::quorum_run::{acting, quorum_runs};
use crate::run::check_in;

#[test]
fn quorum_no_two_nodes_act_as_leader_at_the_same_instant() {
    check_in(quorum_runs(), "one acting leader at a time", |run| {
        let spans = acting(run);
        match les::sim::first_overlap(&spans) {
            None => Ok(()),
            Some((a, b)) => Err(format!("two leaders at once: {a}, and {b}")),
        }
    });
}

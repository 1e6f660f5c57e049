//! Quorum mode, liveness: after the last heal — every link repaired, no loss, no pause,
//! a quorum up with an eligible node among them, no more faults — within
//! [`liveness_bound`] (about 11.3 s with the defaults: request timeout 1 s + suspicion
//! 2 s + a promise `lease × (1+ρ)/(1−ρ)` 3.3 s + five 1 s rounds) one node acts as
//! leader and every up node follows it, and from then on, for [`STABLE`] (5 s, more
//! than a lease), no node changes leader.
//!
//! It fails when a connected quorum elects no one (a promise or a lease that never
//! runs out, a vote that is never read), elects too slowly, or flaps (a lease that is
//! not renewed while every link works).

use crate::quorum_run::{liveness_bound, quorum_runs, STABLE};
use crate::run::{check_in, leader_changes};

#[test]
fn quorum_after_healing_one_leader_acts_and_all_follow_it_within_the_bound() {
    check_in(quorum_runs(), "a leader after healing", |run| {
        let bound = liveness_bound(&les::config::Config::new("n1:4000", vec![]));
        let (Some(since), Some(_)) = (run.agreed_since, run.stable_from) else {
            return Err(format!(
                "healed at {} ms; no acting leader that every up node followed for {STABLE:?} within {bound:?} + {STABLE:?}: the up nodes follow {:?}",
                run.healed_at.as_millis(),
                run.leaders_at_end
            ));
        };
        if since - run.healed_at > bound {
            return Err(format!(
                "healed at {} ms, but every up node followed one acting leader only from {} ms: more than {bound:?}",
                run.healed_at.as_millis(),
                since.as_millis()
            ));
        }
        let changes: Vec<String> = leader_changes(run)
            .filter(|(at, ..)| *at > since)
            .map(|(at, (node, _), to, term)| {
                format!("{} ms {node} -> {to:?} (term {term})", at.as_millis())
            })
            .collect();
        if !changes.is_empty() {
            return Err(format!(
                "agreed from {} ms, then leader changes: {}",
                since.as_millis(),
                changes.join(", ")
            ));
        }
        Ok(())
    });
}

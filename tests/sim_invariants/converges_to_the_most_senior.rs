//! After the last fault heals, every live node agrees on one leader within
//! [`CONVERGENCE_ROUNDS`] rounds, it is the most senior live node, and the agreement
//! lasts to the end of the run (through the stable period).

use crate::run::{check, ROUND};

/// The bound, in gossip rounds (500 ms each with the default configuration): a removed
/// node is refused re-entry with its old start time for the rejoin hold-off (10 rounds),
/// a timed-out request and the suspicion that follows take 6 more, and joining and
/// electing take a few round trips.
pub const CONVERGENCE_ROUNDS: u32 = 24;

#[test]
fn after_healing_every_live_node_follows_the_most_senior_within_the_bound() {
    // For whoever tunes the bound (`--nocapture`): how many rounds agreement took.
    let mut rounds = std::collections::BTreeMap::new();
    for run in crate::run::runs() {
        if let Some(since) = run.agreed_since {
            let r = (since.saturating_sub(run.healed_at)).as_millis() / ROUND.as_millis();
            *rounds.entry(r).or_insert(0) += 1;
        }
    }
    println!("rounds from healing to lasting agreement: {rounds:?}");
    check("agreement on the most senior after healing", |run| {
        let bound = ROUND * CONVERGENCE_ROUNDS;
        match run.agreed_since {
            Some(since) if run.stable_from.is_some() && since - run.healed_at <= bound => Ok(()),
            _ => Err(format!(
                "healed at {} ms, but no lasting agreement within {CONVERGENCE_ROUNDS} rounds (agreed since {:?}): the most senior up node is {:?}, the up nodes follow {:?}",
                run.healed_at.as_millis(),
                run.agreed_since,
                run.most_senior,
                run.leaders_at_end
            )),
        }
    });
}

//! A node's term never decreases: not in what it reports at any tick, not in the
//! changes its `LeaderChanged` handler hears. (A restarted node is a new incarnation and
//! starts from zero; it is checked on its own.)

use std::collections::BTreeMap;

use crate::run::{check, leader_changes};

#[test]
fn no_node_ever_sees_its_term_go_down() {
    check("terms never decrease", |run| {
        for ((node, incarnation), samples) in &run.terms {
            for pair in samples.windows(2) {
                if pair[1].1 < pair[0].1 {
                    return Err(format!(
                        "{node} (incarnation {incarnation}): term {} at {} ms, then {} at {} ms",
                        pair[0].1,
                        pair[0].0.as_millis(),
                        pair[1].1,
                        pair[1].0.as_millis()
                    ));
                }
            }
        }
        let mut last = BTreeMap::new();
        for (at, key, _, term) in leader_changes(run) {
            if let Some(previous) = last.insert(key.clone(), term) {
                if term < previous {
                    return Err(format!(
                        "{} (incarnation {}): a change at {} ms carries term {term} after term {previous}",
                        key.0,
                        key.1,
                        at.as_millis()
                    ));
                }
            }
        }
        Ok(())
    });
}

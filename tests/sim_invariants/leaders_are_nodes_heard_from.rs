//! No node reports as leader a node it has never heard from: whenever a node names
//! another as leader, the network has delivered to it, in this incarnation, an answer
//! from that node (ground truth recorded by the simulated network, not by les).

use std::collections::BTreeMap;
use std::time::Duration;

use les::sim::TraceEvent;

use crate::run::{check, leader_changes, Incarnation};

#[test]
fn every_leader_a_node_names_has_answered_it() {
    check("leaders are nodes heard from", |run| {
        let mut first_heard: BTreeMap<(Incarnation, &str), Duration> = BTreeMap::new();
        for e in &run.trace {
            if let TraceEvent::FirstHeard {
                node,
                incarnation,
                peer,
            } = &e.event
            {
                first_heard
                    .entry(((node.clone(), *incarnation), peer.as_str()))
                    .or_insert(e.at);
            }
        }
        let heard = |key: &Incarnation, leader: &str, at: Duration| {
            leader == key.0
                || first_heard
                    .get(&(key.clone(), leader))
                    .is_some_and(|t| *t <= at)
        };
        for (at, key, to, _) in leader_changes(run) {
            if let Some(leader) = to {
                if !heard(&key, leader, at) {
                    return Err(format!(
                        "{} (incarnation {}) adopted {leader} at {} ms without ever hearing from it",
                        key.0,
                        key.1,
                        at.as_millis()
                    ));
                }
            }
        }
        for (key, samples) in &run.leaders {
            for (at, leader) in samples {
                if let Some(leader) = leader {
                    if !heard(key, leader, *at) {
                        return Err(format!(
                            "{} (incarnation {}) named {leader} as leader at {} ms without ever hearing from it",
                            key.0,
                            key.1,
                            at.as_millis()
                        ));
                    }
                }
            }
        }
        Ok(())
    });
}

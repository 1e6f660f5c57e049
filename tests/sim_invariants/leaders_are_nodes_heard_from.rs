//! No node reports as leader a node it has never heard of first hand or from a node it
//! heard from: whenever a node names another as leader, the network has delivered to
//! it, in this incarnation, an answer from that node, or from a node that had named it
//! as leader by then (a node follows the leader its most senior member names when it
//! cannot reach that leader itself, so a one-way link does not split views). "Heard"
//! is ground truth recorded by the simulated network, not by les.

use std::collections::BTreeMap;
use std::time::Duration;

use les::sim::TraceEvent;

use crate::run::{check, leader_changes, Incarnation, Run};

/// `node` as a name borrowed from the run's schedule, which outlives the check.
fn node_name<'a>(run: &'a Run, node: &str) -> &'a str {
    run.schedule
        .nodes
        .iter()
        .map(|(n, _)| n.as_str())
        .find(|n| *n == node)
        .unwrap_or("?")
}

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
        // When each node first named each leader (any incarnation of it).
        let mut named: BTreeMap<(&str, &str), Duration> = BTreeMap::new();
        for (at, (node, _), to, _) in leader_changes(run) {
            if let Some(to) = to {
                named.entry((node_name(run, &node), to)).or_insert(at);
            }
        }
        let heard_from = |key: &Incarnation, peer: &str, at: Duration| {
            first_heard
                .get(&(key.clone(), peer))
                .is_some_and(|t| *t <= at)
        };
        let heard = |key: &Incarnation, leader: &str, at: Duration| {
            leader == key.0
                || heard_from(key, leader, at)
                || named.iter().any(|((m, l), t)| {
                    *l == leader && *t <= at && *m != key.0 && heard_from(key, m, at)
                })
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

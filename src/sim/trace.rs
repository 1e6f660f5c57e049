//! What the simulation saw happen, in order: the trace the observers and invariants read.
//!
//! Nodes are named by their simulation name (`n1`), not their address (`n1:4000`), so a
//! trace reads like a story. Times are simulated time since the start of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

/// One thing that happened in a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TraceEvent {
    /// The node's software started (first start or restart); `start_time_ms` is its
    /// seniority, read from its own clock, relative to the simulation's base epoch.
    Started {
        /// Simulation name of the node this happened on (`n1`).
        node: String,
        /// Which run of the node: 1 for its first start, one more for each restart.
        incarnation: u32,
        /// Its start time (seniority) in ms relative to [`crate::sim::BASE_EPOCH`], as its own
        /// clock read it.
        start_time_ms: i64,
    },
    /// The node was killed: no goodbye, its port is closed.
    Crashed {
        /// Simulation name of the node killed.
        node: String,
    },
    /// The node was frozen (SIGSTOP): it does nothing until [`TraceEvent::Resumed`].
    Paused {
        /// Simulation name of the node frozen.
        node: String,
    },
    /// The frozen node runs again (SIGCONT).
    Resumed {
        /// Simulation name of the node resumed.
        node: String,
    },
    /// A graceful stop was requested: the node gives up leadership and says goodbye.
    Leaving {
        /// Simulation name of the node leaving.
        node: String,
    },
    /// The graceful stop finished: the node's software has ended.
    Stopped {
        /// Simulation name of the node stopped.
        node: String,
    },
    /// The node's core started (`leading: true`) or stopped leading: what
    /// `NodeHandle::is_leader` shows from this instant. Its `LeaderChanged` handler
    /// hears of it at the same instant or, if busy or paused, later.
    Leading {
        /// Simulation name of the node this happened on (`n1`).
        node: String,
        /// Which run of the node: 1 for its first start, one more for each restart.
        incarnation: u32,
        /// `true` when it started leading, `false` when it stopped.
        leading: bool,
        /// The node's term at this instant (its fencing token while leading).
        term: u64,
    },
    /// The node's `LeaderChanged` handler was called.
    LeaderChanged {
        /// Simulation name of the node this happened on (`n1`).
        node: String,
        /// Which run of the node: 1 for its first start, one more for each restart.
        incarnation: u32,
        /// The leader before the change (simulation name), `None` if there was none.
        from: Option<String>,
        /// The leader after the change, `None` while there is none.
        to: Option<String>,
        /// The node's term after the change.
        term: u64,
    },
    /// The node added `member` to its member list.
    MemberAdded {
        /// Simulation name of the node this happened on (`n1`).
        node: String,
        /// Which run of the node: 1 for its first start, one more for each restart.
        incarnation: u32,
        /// Simulation name of the member added.
        member: String,
    },
    /// The node removed `member` from its member list.
    MemberRemoved {
        /// Simulation name of the node this happened on (`n1`).
        node: String,
        /// Which run of the node: 1 for its first start, one more for each restart.
        incarnation: u32,
        /// Simulation name of the member removed.
        member: String,
        /// Why, as [`crate::core::RemoveReason`] displays it (`unreachable`, `timed out`, `left`, …).
        reason: String,
    },
    /// The node took a new start time (it became the most junior member).
    StartTimeChanged {
        /// Simulation name of the node this happened on (`n1`).
        node: String,
        /// Which run of the node: 1 for its first start, one more for each restart.
        incarnation: u32,
        /// The new start time in ms relative to [`crate::sim::BASE_EPOCH`].
        start_time_ms: i64,
    },
    /// Ground truth from the network: the node read, for the first time in this
    /// incarnation, an answer from `peer` on a connection it opened.
    FirstHeard {
        /// Simulation name of the node this happened on (`n1`).
        node: String,
        /// Which run of the node: 1 for its first start, one more for each restart.
        incarnation: u32,
        /// Simulation name of the peer that answered.
        peer: String,
    },
    /// A change to the network made by the test: partition, heal, loss, latency.
    Network {
        /// What changed, in words: `partition …`, `cut n1 -> n2`, `heal`, `loss 5%`, …
        change: String,
    },
}

/// A [`TraceEvent`] and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceEntry {
    /// Simulated time since the start of the run.
    #[serde(rename = "at_ms", serialize_with = "as_millis")]
    pub at: Duration,
    /// What happened.
    #[serde(flatten)]
    pub event: TraceEvent,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// A leader change as the snapshot lists it: when, on which node, from whom to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderChangeRecord {
    /// Simulated milliseconds since the start of the run.
    pub at_ms: u64,
    /// Simulation name of the node whose `LeaderChanged` handler was called.
    pub node: String,
    /// The leader before the change, `None` if there was none.
    pub from: Option<String>,
    /// The leader after the change, `None` while there is none.
    pub to: Option<String>,
    /// The node's term after the change.
    pub term: u64,
}

impl TraceEntry {
    /// This entry as a leader-change record, if it is one.
    pub fn leader_change(&self) -> Option<LeaderChangeRecord> {
        match &self.event {
            TraceEvent::LeaderChanged {
                node,
                from,
                to,
                term,
                ..
            } => Some(LeaderChangeRecord {
                at_ms: self.at.as_millis() as u64,
                node: node.clone(),
                from: from.clone(),
                to: to.clone(),
                term: *term,
            }),
            _ => None,
        }
    }
}

/// The shared, growing trace of one simulation.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    entries: Vec<TraceEntry>,
    /// (node, incarnation, peer) already reported as [`TraceEvent::FirstHeard`].
    first_contacts: BTreeSet<(String, u32, String)>,
    /// Address → simulation name, to name nodes rather than addresses.
    names: BTreeMap<String, String>,
}

impl Journal {
    pub(crate) fn set_names(&mut self, names: BTreeMap<String, String>) {
        self.names = names;
    }

    /// The simulation name of the node at `addr`, or `addr` itself if none.
    pub(crate) fn name_of(&self, addr: &str) -> String {
        self.names
            .get(addr)
            .cloned()
            .unwrap_or_else(|| addr.to_string())
    }

    pub(crate) fn push(&mut self, at: Duration, event: TraceEvent) {
        self.entries.push(TraceEntry { at, event });
    }

    /// The network read an answer from `peer` on a connection `node` opened: record
    /// [`TraceEvent::FirstHeard`] the first time in this incarnation.
    pub(crate) fn heard(&mut self, at: Duration, node: &str, incarnation: u32, peer: &str) {
        if self
            .first_contacts
            .insert((node.to_string(), incarnation, peer.to_string()))
        {
            self.push(
                at,
                TraceEvent::FirstHeard {
                    node: node.to_string(),
                    incarnation,
                    peer: peer.to_string(),
                },
            );
        }
    }

    /// The start time (ms relative to the base epoch) incarnation `number` of `name`
    /// last took for itself, if it took one after it started.
    pub(crate) fn retaken_start_ms(&self, name: &str, number: u32) -> Option<i64> {
        self.entries.iter().rev().find_map(|e| match &e.event {
            TraceEvent::StartTimeChanged {
                node,
                incarnation,
                start_time_ms,
            } if node == name && *incarnation == number => Some(*start_time_ms),
            _ => None,
        })
    }

    /// Every entry, ordered by time (entries of one tick keep the order they were made in).
    pub(crate) fn entries(&self) -> Vec<TraceEntry> {
        let mut entries = self.entries.clone();
        entries.sort_by_key(|e| e.at);
        entries
    }
}

//! What the simulation saw happen, in order: the trace the observers and invariants read.
//!
//! Nodes are named by their simulation name (`n1`), not their address (`n1:4000`), so a
//! trace reads like a story. Times are simulated time since the start of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::core::Action;
use crate::hooks::{HookError, LeaderChange, LeaderChanged};
use crate::node::ActionObserver;
use crate::sim::net::{sim_now, Shared};

/// One thing that happened in a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TraceEvent {
    /// The node's software started (first start or restart); `start_time_ms` is its
    /// seniority, read from its own clock, relative to the simulation's base epoch.
    Started {
        node: String,
        incarnation: u32,
        start_time_ms: i64,
    },
    /// The node was killed: no goodbye, its port is closed.
    Crashed { node: String },
    /// A graceful stop was requested: the node gives up leadership and says goodbye.
    Leaving { node: String },
    /// The graceful stop finished: the node's software has ended.
    Stopped { node: String },
    /// The node's `LeaderChanged` handler was called.
    LeaderChanged {
        node: String,
        incarnation: u32,
        from: Option<String>,
        to: Option<String>,
        term: u64,
    },
    /// The node added `member` to its member list.
    MemberAdded {
        node: String,
        incarnation: u32,
        member: String,
    },
    /// The node removed `member` from its member list.
    MemberRemoved {
        node: String,
        incarnation: u32,
        member: String,
        reason: String,
    },
    /// The node took a new start time (it became the most junior member).
    StartTimeChanged {
        node: String,
        incarnation: u32,
        start_time_ms: i64,
    },
    /// Ground truth from the network: the node read, for the first time in this
    /// incarnation, an answer from `peer` on a connection it opened.
    FirstHeard {
        node: String,
        incarnation: u32,
        peer: String,
    },
    /// A change to the network made by the test: partition, heal, loss, latency.
    Network { change: String },
}

/// A [`TraceEvent`] and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceEntry {
    /// Simulated time since the start of the run.
    #[serde(rename = "at_ms", serialize_with = "as_millis")]
    pub at: Duration,
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
    pub node: String,
    pub from: Option<String>,
    pub to: Option<String>,
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
    pub(crate) first_contacts: BTreeSet<(String, u32, String)>,
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

/// The `LeaderChanged` handler every simulated node gets: it writes the change to the
/// trace, stamped with simulated time.
pub(crate) struct Recorder {
    pub(crate) shared: Arc<Shared>,
    pub(crate) node: String,
    pub(crate) incarnation: u32,
}

impl LeaderChanged for Recorder {
    async fn leader_changed(&self, change: LeaderChange) -> Result<(), HookError> {
        let mut journal = self.shared.journal();
        let event = TraceEvent::LeaderChanged {
            node: self.node.clone(),
            incarnation: self.incarnation,
            from: change.previous.as_deref().map(|a| journal.name_of(a)),
            to: change.current.as_deref().map(|a| journal.name_of(a)),
            term: change.term,
        };
        journal.push(sim_now(), event);
        Ok(())
    }
}

/// Writes the membership actions of one node incarnation's core to the trace.
pub(crate) fn membership_observer(
    shared: Arc<Shared>,
    node: String,
    incarnation: u32,
) -> ActionObserver {
    Arc::new(move |action: &Action| {
        let mut journal = shared.journal();
        let event = match action {
            Action::MemberAdded { addr } => TraceEvent::MemberAdded {
                node: node.clone(),
                incarnation,
                member: journal.name_of(addr),
            },
            Action::MemberRemoved { addr, reason } => TraceEvent::MemberRemoved {
                node: node.clone(),
                incarnation,
                member: journal.name_of(addr),
                reason: reason.to_string(),
            },
            Action::StartTimeChanged { start_time } => TraceEvent::StartTimeChanged {
                node: node.clone(),
                incarnation,
                start_time_ms: crate::sim::cluster::relative_ms(*start_time),
            },
            _ => return,
        };
        journal.push(sim_now(), event);
    })
}

//! Counters a node keeps about itself, served as Prometheus text on `GET /metrics`
//! and readable in-process through [`crate::node::NodeHandle::metrics`].
//!
//! Plain relaxed atomics: they are statistics, read rarely, written on every request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::auth::Rejection;

/// Per-node counters. All counts are since the node started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests this node sent to peers (state fetches, probes, leave notices).
    pub requests_sent: AtomicU64,
    /// Requests that failed (refused, timed out, bad answer).
    pub requests_failed: AtomicU64,
    /// Body bytes received in answers to our requests.
    pub bytes_received: AtomicU64,
    /// Requests served by this node's HTTP API.
    pub requests_served: AtomicU64,
    /// Body bytes this node's HTTP API sent.
    pub bytes_served: AtomicU64,
    /// Changes of leader seen by this node.
    pub leader_changes: AtomicU64,
    /// Current member count, this node excluded.
    pub members: AtomicU64,
    /// This node's current term.
    pub term: AtomicU64,
    /// 1 while this node is the leader.
    pub is_leader: AtomicU64,
    /// Requests refused by authentication or cluster name, by reason (in the order of
    /// [`Rejection::ALL`]).
    pub refused: [AtomicU64; Rejection::ALL.len()],
    /// Connections currently open to the HTTP API.
    pub connections_open: AtomicU64,
    /// Connections closed because the cap was reached: the oldest silent one closed to
    /// make room, or the newcomer when every open one is a peer's.
    pub connections_shed: AtomicU64,
    /// Announcements of unknown addresses not fetched back (over the core's bounds).
    pub announces_dropped: AtomicU64,
    /// Peer states refused for a term no real history can produce.
    pub terms_rejected: AtomicU64,
    /// The failure detector's local health score (0 healthy ..= 8).
    pub health_score: AtomicU64,
    /// Consecutive failed observations that remove a member now.
    pub evidence_needed: AtomicU64,
    /// Members suspect now.
    pub suspects: AtomicU64,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// See [`Metrics::requests_sent`].
    pub requests_sent: u64,
    /// See [`Metrics::requests_failed`].
    pub requests_failed: u64,
    /// See [`Metrics::bytes_received`].
    pub bytes_received: u64,
    /// See [`Metrics::requests_served`].
    pub requests_served: u64,
    /// See [`Metrics::bytes_served`].
    pub bytes_served: u64,
    /// See [`Metrics::leader_changes`].
    pub leader_changes: u64,
    /// See [`Metrics::members`].
    pub members: u64,
    /// See [`Metrics::term`].
    pub term: u64,
    /// See [`Metrics::is_leader`].
    pub is_leader: u64,
    /// All refused requests, whatever the reason.
    pub requests_refused: u64,
    /// See [`Metrics::connections_open`].
    pub connections_open: u64,
    /// See [`Metrics::connections_shed`].
    pub connections_shed: u64,
    /// See [`Metrics::announces_dropped`].
    pub announces_dropped: u64,
    /// See [`Metrics::terms_rejected`].
    pub terms_rejected: u64,
    /// See [`Metrics::health_score`].
    pub health_score: u64,
    /// See [`Metrics::evidence_needed`].
    pub evidence_needed: u64,
    /// See [`Metrics::suspects`].
    pub suspects: u64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// Count a refused request.
    pub(crate) fn count_rejection(&self, why: Rejection) {
        if let Some(i) = Rejection::ALL.iter().position(|r| *r == why) {
            Metrics::add(&self.refused[i], 1);
        }
    }

    /// Copy every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            requests_sent: g(&self.requests_sent),
            requests_failed: g(&self.requests_failed),
            bytes_received: g(&self.bytes_received),
            requests_served: g(&self.requests_served),
            bytes_served: g(&self.bytes_served),
            leader_changes: g(&self.leader_changes),
            members: g(&self.members),
            term: g(&self.term),
            is_leader: g(&self.is_leader),
            requests_refused: self.refused.iter().map(g).sum(),
            connections_open: g(&self.connections_open),
            connections_shed: g(&self.connections_shed),
            announces_dropped: g(&self.announces_dropped),
            terms_rejected: g(&self.terms_rejected),
            health_score: g(&self.health_score),
            evidence_needed: g(&self.evidence_needed),
            suspects: g(&self.suspects),
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let s = self.snapshot();
        let mut out = String::new();
        let rows: [(&str, &str, &str, u64); 16] = [
            (
                "les_requests_sent_total",
                "counter",
                "Requests sent to peers.",
                s.requests_sent,
            ),
            (
                "les_requests_failed_total",
                "counter",
                "Requests to peers that failed.",
                s.requests_failed,
            ),
            (
                "les_bytes_received_total",
                "counter",
                "Answer body bytes received from peers.",
                s.bytes_received,
            ),
            (
                "les_requests_served_total",
                "counter",
                "Requests served by the HTTP API.",
                s.requests_served,
            ),
            (
                "les_bytes_served_total",
                "counter",
                "Body bytes sent by the HTTP API.",
                s.bytes_served,
            ),
            (
                "les_leader_changes_total",
                "counter",
                "Changes of leader seen by this node.",
                s.leader_changes,
            ),
            (
                "les_members",
                "gauge",
                "Members known, this node excluded.",
                s.members,
            ),
            ("les_term", "gauge", "This node's term.", s.term),
            (
                "les_is_leader",
                "gauge",
                "1 if this node is the leader.",
                s.is_leader,
            ),
            (
                "les_connections_open",
                "gauge",
                "Connections open to the HTTP API.",
                s.connections_open,
            ),
            (
                "les_connections_shed_total",
                "counter",
                "Connections closed because the connection cap was reached (oldest silent one, or the newcomer).",
                s.connections_shed,
            ),
            (
                "les_announces_dropped_total",
                "counter",
                "Announcements of unknown addresses not fetched back (rate and count bounds).",
                s.announces_dropped,
            ),
            (
                "les_terms_rejected_total",
                "counter",
                "Peer states refused for a term more than a day ahead of the wall clock.",
                s.terms_rejected,
            ),
            (
                "les_health_score",
                "gauge",
                "Local health score, 0 (healthy) to 8: this node's own timers fire late; its timeouts are multiplied by 1 + score.",
                s.health_score,
            ),
            (
                "les_evidence_needed",
                "gauge",
                "Consecutive failed observations that remove a member at the loss rate measured now.",
                s.evidence_needed,
            ),
            (
                "les_suspects",
                "gauge",
                "Members suspect now (a request timed out; being probed).",
                s.suspects,
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let name = "les_requests_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests refused by authentication or cluster name.\n# TYPE {name} counter"
        );
        for (why, n) in Rejection::ALL.iter().zip(&self.refused) {
            let (reason, n) = (why.label(), n.load(Ordering::Relaxed));
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
        }
        out
    }
}

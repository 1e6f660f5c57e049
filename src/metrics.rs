//! Counters and gauges a node keeps about itself, served on `GET /metrics` in the
//! Prometheus / OpenMetrics text format and readable in-process through
//! [`crate::node::NodeHandle::metrics`].
//!
//! The metric types and the text encoding are `prometheus-client`'s: counters end in
//! `_total`, units are in the names (`_bytes`, `_seconds`), every metric has its help
//! text once. They are lock-free atomics, written on every request and read rarely.
//! `dist/prometheus/les.rules.yml` alerts on them, and a test checks that every metric
//! the rules name is one this module serves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::auth::Rejection;

/// The `reason` label of `les_requests_refused_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refusal {
    reason: &'static str,
}

/// A gauge of seconds (a timestamp), as a float.
type Seconds = Gauge<f64, AtomicU64>;

/// Per-node counters and gauges. All counts are since the node started.
#[derive(Debug)]
pub struct Metrics {
    /// Requests this node sent to peers (state fetches, probes, leave notices).
    pub requests_sent: Counter,
    /// Requests that failed (refused, timed out, bad answer).
    pub requests_failed: Counter,
    /// Body bytes received in answers to our requests.
    pub bytes_received: Counter,
    /// Requests served by this node's HTTP API.
    pub requests_served: Counter,
    /// Body bytes this node's HTTP API sent.
    pub bytes_served: Counter,
    /// Changes of leader seen by this node.
    pub leader_changes: Counter,
    /// When (epoch seconds) this node last saw the leader change; 0 before the first.
    pub last_leader_change: Seconds,
    /// Current member count, this node excluded.
    pub members: Gauge,
    /// This node's current term.
    pub term: Gauge,
    /// 1 while this node is the leader.
    pub is_leader: Gauge,
    /// Requests refused by authentication or cluster name, by reason.
    refused: Family<Refusal, Counter>,
    /// Connections currently open to the HTTP API.
    pub connections_open: Gauge,
    /// Connections closed because the cap was reached: the oldest silent one closed to
    /// make room, or the newcomer when every open one is a peer's.
    pub connections_shed: Counter,
    /// Announcements of unknown addresses not fetched back (over the core's bounds).
    pub announces_dropped: Counter,
    /// Peer states refused for a term no real history can produce.
    pub terms_rejected: Counter,
    /// The failure detector's local health score (0 healthy ..= 8).
    pub health_score: Gauge,
    /// Consecutive failed observations that remove a member now.
    pub evidence_needed: Gauge,
    /// Members suspect now.
    pub suspects: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("les");
        let m = Metrics {
            requests_sent: Counter::default(),
            requests_failed: Counter::default(),
            bytes_received: Counter::default(),
            requests_served: Counter::default(),
            bytes_served: Counter::default(),
            leader_changes: Counter::default(),
            last_leader_change: Seconds::default(),
            members: Gauge::default(),
            term: Gauge::default(),
            is_leader: Gauge::default(),
            refused: Family::default(),
            connections_open: Gauge::default(),
            connections_shed: Counter::default(),
            announces_dropped: Counter::default(),
            terms_rejected: Counter::default(),
            health_score: Gauge::default(),
            evidence_needed: Gauge::default(),
            suspects: Gauge::default(),
            registry: Registry::default(),
        };
        let counters = [
            ("requests_sent", "Requests sent to peers", &m.requests_sent),
            ("requests_failed", "Requests to peers that failed", &m.requests_failed),
            ("bytes_received", "Answer body bytes received from peers", &m.bytes_received),
            ("requests_served", "Requests served by the HTTP API", &m.requests_served),
            ("bytes_served", "Body bytes sent by the HTTP API", &m.bytes_served),
            ("leader_changes", "Changes of leader seen by this node", &m.leader_changes),
            ("connections_shed", "Connections closed because the connection cap was reached (oldest silent one, or the newcomer)", &m.connections_shed),
            ("announces_dropped", "Announcements of unknown addresses not fetched back (rate and count bounds)", &m.announces_dropped),
            ("terms_rejected", "Peer states refused for a term more than a day ahead of the wall clock", &m.terms_rejected),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        let gauges = [
            ("members", "Members known, this node excluded", &m.members),
            ("term", "This node's term (the leader's is the fencing token)", &m.term),
            ("is_leader", "1 if this node is the leader and may act as one", &m.is_leader),
            ("connections_open", "Connections open to the HTTP API", &m.connections_open),
            ("health_score", "Local health score, 0 (healthy) to 8: this node's own timers fire late; its timeouts are multiplied by 1 + score", &m.health_score),
            ("evidence_needed", "Consecutive failed observations that remove a member at the loss rate measured now", &m.evidence_needed),
            ("suspects", "Members suspect now (a request timed out; being probed)", &m.suspects),
        ];
        for (name, help, g) in gauges {
            r.register(name, help, g.clone());
        }
        r.register(
            "last_leader_change_timestamp_seconds",
            "When this node last saw the leader change, epoch seconds (0 before the first)",
            m.last_leader_change.clone(),
        );
        r.register(
            "requests_refused",
            "Requests refused by authentication or cluster name, by reason",
            m.refused.clone(),
        );
        for why in Rejection::ALL {
            // Every reason from the start, at 0, so a rate() over it is defined.
            let _ = m.refused.get_or_create(&Refusal {
                reason: why.label(),
            });
        }
        Metrics { registry: r, ..m }
    }
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

/// A counter or gauge that can be brought to an absolute value ([`Metrics::set`]).
pub(crate) trait SetTo {
    /// Bring the metric to `v`; a counter only ever moves up.
    fn set_to(&self, v: u64);
}

impl SetTo for Counter {
    fn set_to(&self, v: u64) {
        let now = self.get();
        if v > now {
            self.inc_by(v - now);
        }
    }
}

impl SetTo for Gauge {
    fn set_to(&self, v: u64) {
        self.set(i64::try_from(v).unwrap_or(i64::MAX));
    }
}

impl Metrics {
    pub(crate) fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    /// Set a gauge, or bring a counter kept elsewhere (the core's) up to its total.
    pub(crate) fn set(metric: &impl SetTo, v: u64) {
        metric.set_to(v);
    }

    /// Count a refused request.
    pub(crate) fn count_rejection(&self, why: Rejection) {
        self.refused
            .get_or_create(&Refusal {
                reason: why.label(),
            })
            .inc();
    }

    /// Note a change of leader seen at `epoch_seconds` (wall clock).
    pub(crate) fn leader_changed(&self, epoch_seconds: f64) {
        self.leader_changes.inc();
        self.last_leader_change.set(epoch_seconds);
    }

    /// Copy every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &Gauge| u64::try_from(c.get()).unwrap_or(0);
        MetricsSnapshot {
            requests_sent: self.requests_sent.get(),
            requests_failed: self.requests_failed.get(),
            bytes_received: self.bytes_received.get(),
            requests_served: self.requests_served.get(),
            bytes_served: self.bytes_served.get(),
            leader_changes: self.leader_changes.get(),
            members: g(&self.members),
            term: g(&self.term),
            is_leader: g(&self.is_leader),
            requests_refused: Rejection::ALL
                .iter()
                .map(|why| {
                    self.refused
                        .get_or_create(&Refusal {
                            reason: why.label(),
                        })
                        .get()
                })
                .sum(),
            connections_open: g(&self.connections_open),
            connections_shed: self.connections_shed.get(),
            announces_dropped: self.announces_dropped.get(),
            terms_rejected: self.terms_rejected.get(),
            health_score: g(&self.health_score),
            evidence_needed: g(&self.evidence_needed),
            suspects: g(&self.suspects),
        }
    }

    /// The OpenMetrics text exposition format (Prometheus reads it).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

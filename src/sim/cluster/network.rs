//! The network controls of a [`Cluster`]: partitions, loss and latency.

use std::time::Duration;

use super::Cluster;
use crate::sim::trace::TraceEvent;

impl Cluster {
    /// Cut every link between nodes of different groups, both ways: connections and
    /// messages between them are silently dropped (callers time out). Links of nodes in
    /// no group are untouched. Adds to the cuts already in force.
    ///
    /// ```
    /// # let mut sim = les::sim::Cluster::builder().nodes(["n1", "n2", "n3"]).build();
    /// sim.partition(&[&["n1", "n2"], &["n3"]]); // 2 | 1
    /// sim.heal();
    /// sim.partition(&[&["n1"], &["n2"], &["n3"]]); // 1 | 1 | 1
    /// ```
    #[track_caller]
    pub fn partition(&mut self, groups: &[&[&str]]) {
        for name in groups.iter().flat_map(|g| g.iter()) {
            self.index(name);
        }
        {
            let mut faults = self.shared.faults();
            for (gi, a_group) in groups.iter().enumerate() {
                for (gj, b_group) in groups.iter().enumerate() {
                    if gi == gj {
                        continue;
                    }
                    for a in a_group.iter() {
                        for b in b_group.iter() {
                            faults.cut(a, b);
                        }
                    }
                }
            }
        }
        let change = groups
            .iter()
            .map(|g| g.join(" "))
            .collect::<Vec<_>>()
            .join(" | ");
        self.journal(TraceEvent::Network {
            change: format!("partition {change}"),
        });
    }

    /// Cut the link one way: connections that `from` opens to `to` are dropped, while `to`
    /// can still open connections to `from` and get answers (a stateful firewall rule).
    #[track_caller]
    pub fn partition_oneway(&mut self, from: &str, to: &str) {
        self.index(from);
        self.index(to);
        self.shared.faults().cut(from, to);
        self.journal(TraceEvent::Network {
            change: format!("cut {from} -> {to}"),
        });
    }

    /// Repair every cut link. Connections that were blackholed stay dead until their
    /// owners give up on them; new ones go through.
    pub fn heal(&mut self) {
        self.shared.faults().heal();
        self.journal(TraceEvent::Network {
            change: "heal".to_string(),
        });
    }

    /// Lose each message (connection request, request or answer) with probability `rate`
    /// on every link without a rate of its own. A lost message stalls its exchange until
    /// the sender's deadline, as a long outage would.
    pub fn set_loss(&mut self, rate: f64) {
        self.shared.faults().set_loss(rate.clamp(0.0, 1.0));
        self.journal(TraceEvent::Network {
            change: format!("loss {}%", rate * 100.0),
        });
    }

    /// Like [`Cluster::set_loss`], for the link between `a` and `b` only (both ways).
    #[track_caller]
    pub fn set_link_loss(&mut self, a: &str, b: &str, rate: f64) {
        self.index(a);
        self.index(b);
        self.shared
            .faults()
            .set_link_loss(a, b, rate.clamp(0.0, 1.0));
        self.journal(TraceEvent::Network {
            change: format!("loss {}% on {a} - {b}", rate * 100.0),
        });
    }

    /// One-way latency between `a` and `b` (both ways): from `min` to `max`, mostly near
    /// `min`. `max - min` is the jitter.
    #[track_caller]
    pub fn set_link_latency(&mut self, a: &str, b: &str, min: Duration, max: Duration) {
        self.index(a);
        self.index(b);
        let key = if a <= b { (a, b) } else { (b, a) };
        self.link_latency
            .insert((key.0.to_string(), key.1.to_string()), (min, max.max(min)));
        self.apply_link_latency();
        self.journal(TraceEvent::Network {
            change: format!(
                "latency {a} - {b}: {}..{} ms",
                min.as_millis(),
                max.max(min).as_millis()
            ),
        });
    }

    /// turmoil knows a link only once both its hosts exist: apply what it can.
    pub(super) fn apply_link_latency(&mut self) {
        for ((a, b), (min, max)) in &self.link_latency {
            let known = |n: &str| self.nodes.iter().any(|s| s.name == n && s.registered);
            if known(a) && known(b) {
                self.sim.set_link_latency(a.as_str(), b.as_str(), *min);
                self.sim
                    .set_link_max_message_latency(a.as_str(), b.as_str(), *max);
            }
        }
    }
}

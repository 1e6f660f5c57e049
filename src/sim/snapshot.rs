//! What a snapshot test compares: each node's view and the story of leader changes.
//!
//! Everything in a [`Snapshot`] is a function of the seed: start times come from the
//! simulated clocks, times are simulated time. Contact ages (`last_contact_ms`) are left
//! out, being noise to a reader; terms, member order and change times are kept.

use std::fmt;

use serde::Serialize;

use crate::sim::clock::relative_ms;
use crate::sim::trace::LeaderChangeRecord;
use crate::wire::Diag;

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Never started.
    NotStarted,
    /// Running.
    Up,
    /// Frozen (SIGSTOP): see [`crate::sim::Cluster::pause`].
    Paused,
    /// A graceful stop is under way.
    Leaving,
    /// Killed without a goodbye.
    Crashed,
    /// Stopped gracefully.
    Stopped,
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeStatus::NotStarted => "not started",
            NodeStatus::Up => "up",
            NodeStatus::Paused => "paused",
            NodeStatus::Leaving => "leaving",
            NodeStatus::Crashed => "crashed",
            NodeStatus::Stopped => "stopped",
        })
    }
}

/// One node's view of the cluster, from its `/diag/` document. Nodes are named by their
/// simulation names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// Simulation name of the node (`n1`).
    pub name: String,
    /// Whether it is up, paused, leaving, crashed or stopped (or never started) at the snapshot's time.
    pub status: NodeStatus,
    /// Its seniority: start time in ms relative to [`crate::sim::BASE_EPOCH`] (`None` if
    /// the node is not up).
    pub start_time_ms: Option<i64>,
    /// Its term (`None` if the node is not up).
    pub term: Option<u64>,
    /// The leader it follows or is.
    pub leader: Option<String>,
    /// Its member list: itself first, then in the order it added them.
    pub members: Vec<String>,
    /// Members it currently suspects (a request timed out; being probed).
    pub suspects: Vec<String>,
}

impl NodeView {
    pub(crate) fn new(
        name: &str,
        status: NodeStatus,
        diag: Option<&Diag>,
        name_of: impl Fn(&str) -> String,
    ) -> Self {
        let mut view = NodeView {
            name: name.to_string(),
            status,
            start_time_ms: None,
            term: None,
            leader: None,
            members: Vec::new(),
            suspects: Vec::new(),
        };
        if let Some(d) = diag {
            view.start_time_ms = Some(relative_ms(d.state.start_time));
            view.term = Some(d.state.term);
            view.leader = d.state.leader.as_deref().map(&name_of);
            view.members = d.state.members.iter().map(|a| name_of(a)).collect();
            view.suspects = d
                .member_info
                .iter()
                .filter(|(_, info)| info.suspect)
                .map(|(a, _)| name_of(a))
                .collect();
        }
        view
    }
}

/// The final views and the ordered leader changes of a run. `Display` renders a table a
/// reviewer can read (member lists in full up to 12 nodes; beyond, `all N up` or the
/// differences from the nodes that are up); `Serialize` gives all the data, for JSON or
/// YAML snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// The seed of the run; the snapshot is a function of it.
    pub seed: u64,
    /// Simulated milliseconds since the start of the run.
    pub at_ms: u64,
    /// Every node's view, one per node.
    pub nodes: Vec<NodeView>,
    /// Every leader change of the run, in the order they happened.
    pub leader_changes: Vec<LeaderChangeRecord>,
}

/// `12.345 s`, from milliseconds.
fn secs(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03} s", ms / 1000, ms % 1000)
}

/// Clusters up to this size show every member list in full; larger ones show counts and
/// differences from the set of nodes that are up, which is what a reader can check.
const LIST_MEMBERS_UP_TO: usize = 12;

/// A view's member list: in full (its order is the order of joining), or for large
/// clusters `all N up` or `K: +extra -missing` relative to the nodes that are up.
fn members_cell(view: &NodeView, up: &[&str], large: bool) -> Option<String> {
    if view.members.is_empty() {
        return None;
    }
    if !large {
        return Some(view.members.join(" "));
    }
    let extra: Vec<&str> = view
        .members
        .iter()
        .map(String::as_str)
        .filter(|m| !up.contains(m))
        .collect();
    let missing: Vec<&str> = up
        .iter()
        .copied()
        .filter(|u| !view.members.iter().any(|m| m == u))
        .collect();
    if extra.is_empty() && missing.is_empty() {
        return Some(format!("all {} up", up.len()));
    }
    let mut cell = view.members.len().to_string() + ":";
    for e in extra {
        cell.push_str(&format!(" +{e}"));
    }
    for m in missing {
        cell.push_str(&format!(" -{m}"));
    }
    Some(cell)
}

fn or_dash(s: Option<String>) -> String {
    s.unwrap_or_else(|| "-".to_string())
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}, at {} simulated",
            self.seed,
            secs(self.at_ms as i64)
        )?;
        let up: Vec<&str> = self
            .nodes
            .iter()
            .filter(|v| v.status == NodeStatus::Up)
            .map(|v| v.name.as_str())
            .collect();
        let large = self.nodes.len() > LIST_MEMBERS_UP_TO;
        let header = [
            "node",
            "status",
            "start time",
            "term",
            "leader",
            "members",
            "suspects",
        ];
        let rows: Vec<[String; 7]> = self
            .nodes
            .iter()
            .map(|v| {
                [
                    v.name.clone(),
                    v.status.to_string(),
                    or_dash(v.start_time_ms.map(|t| {
                        let s = secs(t);
                        if t >= 0 {
                            format!("+{s}")
                        } else {
                            s
                        }
                    })),
                    or_dash(v.term.map(|t| t.to_string())),
                    or_dash(v.leader.clone()),
                    or_dash(members_cell(v, &up, large)),
                    or_dash((!v.suspects.is_empty()).then(|| v.suspects.join(" "))),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 7]| -> fmt::Result {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<w$}  "));
                }
            }
            writeln!(f, "{}", out.trim_end())
        };
        line(f, header)?;
        for row in &rows {
            line(f, row.each_ref().map(String::as_str))?;
        }
        writeln!(f)?;
        writeln!(f, "leader changes (time, node: from -> to, term):")?;
        if self.leader_changes.is_empty() {
            writeln!(f, "  none")?;
        }
        for c in &self.leader_changes {
            writeln!(
                f,
                "  {:>10}  {}: {} -> {}  term {}",
                secs(c.at_ms as i64),
                c.node,
                c.from.as_deref().unwrap_or("none"),
                c.to.as_deref().unwrap_or("none"),
                c.term
            )?;
        }
        Ok(())
    }
}

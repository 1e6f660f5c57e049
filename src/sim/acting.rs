//! Who acted as leader, and when: ground truth for "never two leaders at once", read
//! from the trace.
//!
//! A node *acts* as leader from the instant it takes leadership until the instant it
//! gives it up, crashes or leaves, except while it is paused (a frozen process does
//! nothing). "Takes" and "gives up" are the node's own observations, from two sources,
//! and a span covers both: its core's decision ([`TraceEvent::Leading`], what
//! `NodeHandle::is_leader` shows from that instant) and its `LeaderChanged` handler's
//! call ([`TraceEvent::LeaderChanged`], what an application acts on, which may come
//! later if the handler is busy or the node paused). So a span starts at the earlier of
//! the two and ends at the later: the most a node could have acted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::sim::trace::{TraceEntry, TraceEvent};

/// An unbroken span of simulated time during which one node incarnation acted as
/// leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActingSpan {
    /// Simulation name of the node (`n1`).
    pub node: String,
    /// Which run of the node: 1 for its first start, one more for each restart.
    pub incarnation: u32,
    /// The node's term when the span began (its fencing token).
    pub term: u64,
    /// When the span began.
    pub from: Duration,
    /// When it ended (leadership given up, paused, crashed, left); `None` if the node
    /// still acted at the end of the trace.
    pub until: Option<Duration>,
    /// `true` if the node took leadership at `from`; `false` if it already held it and
    /// was resuming from a pause.
    pub took_leadership: bool,
}

impl ActingSpan {
    /// Whether the two spans share an instant (spans of zero length share none).
    pub fn overlaps(&self, other: &ActingSpan) -> bool {
        let before = |a: &ActingSpan, b: &ActingSpan| a.until.is_some_and(|u| u <= b.from);
        self.from < self.until.unwrap_or(Duration::MAX)
            && other.from < other.until.unwrap_or(Duration::MAX)
            && !before(self, other)
            && !before(other, self)
    }
}

impl std::fmt::Display for ActingSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let until = self
            .until
            .map_or("end".to_string(), |u| format!("{} ms", u.as_millis()));
        write!(
            f,
            "{} (incarnation {}, term {}) acts from {} ms to {until}",
            self.node,
            self.incarnation,
            self.term,
            self.from.as_millis()
        )
    }
}

/// What one node incarnation is, as the trace so far says.
#[derive(Default)]
struct NodeState {
    incarnation: u32,
    /// Its core leads (last [`TraceEvent::Leading`]).
    core: bool,
    /// Its handler was last told it leads.
    handler: bool,
    paused: bool,
    term: u64,
    /// The span in progress, as an index into the output.
    open: Option<usize>,
}

impl NodeState {
    fn leads(&self) -> bool {
        self.core || self.handler
    }
}

/// Every span of acting leadership in `trace` (which must be in time order, as
/// [`crate::sim::Cluster::trace`] returns it), ordered by start.
pub fn acting_spans(trace: &[TraceEntry]) -> Vec<ActingSpan> {
    let mut nodes: BTreeMap<&str, NodeState> = BTreeMap::new();
    let mut spans: Vec<ActingSpan> = Vec::new();
    for entry in trace {
        let Some((node, incarnation)) = subject(&entry.event) else {
            continue;
        };
        let state = nodes.entry(node).or_default();
        let led = state.leads();
        match &entry.event {
            TraceEvent::Started { incarnation, .. } => {
                if let Some(i) = state.open {
                    spans[i].until = Some(entry.at);
                }
                *state = NodeState {
                    incarnation: *incarnation,
                    ..NodeState::default()
                };
            }
            TraceEvent::Crashed { .. } | TraceEvent::Stopped { .. } => {
                (state.core, state.handler) = (false, false);
            }
            TraceEvent::Paused { .. } => state.paused = true,
            TraceEvent::Resumed { .. } => state.paused = false,
            TraceEvent::Leading { leading, term, .. } if incarnation == state.incarnation => {
                state.core = *leading;
                state.term = *term;
            }
            TraceEvent::LeaderChanged { to, term, .. } if incarnation == state.incarnation => {
                state.handler = to.as_deref() == Some(node);
                state.term = *term;
            }
            _ => {}
        }
        let acting = state.leads() && !state.paused;
        match (state.open, acting) {
            (None, true) => {
                state.open = Some(spans.len());
                spans.push(ActingSpan {
                    node: node.to_string(),
                    incarnation: state.incarnation,
                    term: state.term,
                    from: entry.at,
                    until: None,
                    took_leadership: !led,
                });
            }
            (Some(i), false) => {
                spans[i].until = Some(entry.at);
                state.open = None;
            }
            _ => {}
        }
    }
    spans
}

/// The node an event is about and its incarnation (0: the node's current one).
fn subject(event: &TraceEvent) -> Option<(&str, u32)> {
    match event {
        TraceEvent::Started {
            node, incarnation, ..
        }
        | TraceEvent::Leading {
            node, incarnation, ..
        }
        | TraceEvent::LeaderChanged {
            node, incarnation, ..
        } => Some((node, *incarnation)),
        TraceEvent::Crashed { node }
        | TraceEvent::Stopped { node }
        | TraceEvent::Paused { node }
        | TraceEvent::Resumed { node } => Some((node, 0)),
        _ => None,
    }
}

/// The first two spans (by start) of different nodes or incarnations that share an
/// instant: two leaders acting at once. `None` if there are none.
pub fn first_overlap(spans: &[ActingSpan]) -> Option<(&ActingSpan, &ActingSpan)> {
    spans.iter().enumerate().find_map(|(i, a)| {
        spans[i + 1..]
            .iter()
            .find(|b| (&a.node, a.incarnation) != (&b.node, b.incarnation) && a.overlaps(b))
            .map(|b| (a, b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, event: TraceEvent) -> TraceEntry {
        TraceEntry {
            at: Duration::from_millis(ms),
            event,
        }
    }

    fn started(node: &str) -> TraceEvent {
        TraceEvent::Started {
            node: node.into(),
            incarnation: 1,
            start_time_ms: 0,
        }
    }

    fn leading(node: &str, leading: bool, term: u64) -> TraceEvent {
        TraceEvent::Leading {
            node: node.into(),
            incarnation: 1,
            leading,
            term,
        }
    }

    fn handler(node: &str, to: Option<&str>, term: u64) -> TraceEvent {
        TraceEvent::LeaderChanged {
            node: node.into(),
            incarnation: 1,
            from: None,
            to: to.map(Into::into),
            term,
        }
    }

    #[test]
    fn a_span_covers_core_and_handler_and_skips_pauses() {
        let trace = vec![
            at(0, started("a")),
            at(10, leading("a", true, 1)),
            at(15, handler("a", Some("a"), 1)),
            at(100, TraceEvent::Paused { node: "a".into() }),
            at(200, TraceEvent::Resumed { node: "a".into() }),
            at(200, leading("a", false, 1)),
            at(205, handler("a", None, 1)),
        ];
        let spans = acting_spans(&trace);
        let times: Vec<_> = spans
            .iter()
            .map(|s| (s.from.as_millis(), s.until.map(|u| u.as_millis())))
            .collect();
        assert_eq!(times, [(10, Some(100)), (200, Some(205))]);
        assert!(spans[0].took_leadership && !spans[1].took_leadership);
    }

    #[test]
    fn two_leaders_at_once_overlap_and_a_crash_ends_a_span() {
        let trace = vec![
            at(0, started("a")),
            at(0, started("b")),
            at(10, leading("a", true, 1)),
            at(50, TraceEvent::Crashed { node: "a".into() }),
            at(50, leading("b", true, 2)),
            at(60, leading("b", false, 2)),
        ];
        assert_eq!(first_overlap(&acting_spans(&trace)), None);
        let mut late_crash = trace.clone();
        late_crash[3].at = Duration::from_millis(55);
        late_crash.sort_by_key(|e| e.at);
        let spans = acting_spans(&late_crash);
        let (a, b) = first_overlap(&spans).expect("overlap");
        assert_eq!((a.node.as_str(), b.node.as_str(), b.term), ("a", "b", 2));
    }
}

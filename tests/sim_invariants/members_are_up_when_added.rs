//! A node never adds as a member a node that is down. "Down" is ground truth from the
//! simulation (crashed, stopped, or not started); the only allowance is for an answer
//! already on the wire when its sender went down: one link latency plus two ticks.

use std::time::Duration;

use les::sim::TraceEvent;

use crate::run::{check, TICK};

#[test]
fn no_node_adds_a_member_that_is_down() {
    check("members are up when added", |run| {
        let slack = run.max_latency + TICK * 2;
        for e in &run.trace {
            let TraceEvent::MemberAdded { node, member, .. } = &e.event else {
                continue;
            };
            // When did `member` last go down before this add, and has it started since?
            let mut down_since: Option<Duration> = None;
            for h in run.trace.iter().take_while(|h| h.at <= e.at) {
                match &h.event {
                    TraceEvent::Started { node: n, .. } if n == member => down_since = None,
                    TraceEvent::Crashed { node: n } | TraceEvent::Stopped { node: n }
                        if n == member =>
                    {
                        down_since = Some(h.at)
                    }
                    _ => {}
                }
            }
            let started = run.trace.iter().any(|h| {
                h.at <= e.at
                    && matches!(&h.event, TraceEvent::Started { node: n, .. } if n == member)
            });
            if !started {
                return Err(format!(
                    "{node} added {member} at {} ms, before {member} ever started",
                    e.at.as_millis()
                ));
            }
            if let Some(since) = down_since {
                if e.at - since > slack {
                    return Err(format!(
                        "{node} added {member} at {} ms; {member} has been down since {} ms",
                        e.at.as_millis(),
                        since.as_millis()
                    ));
                }
            }
        }
        Ok(())
    });
}

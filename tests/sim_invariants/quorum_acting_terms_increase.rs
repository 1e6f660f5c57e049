//! Quorum mode: the terms of acting leaders strictly increase in the order they start
//! acting, so the term works as a fencing token: whatever a leader did under term `t`,
//! a later leader's orders carry a higher term.
//!
//! Each time a node takes leadership (an acting span that begins with it taking the
//! lead, not one resuming from a pause) its term must exceed the term of every earlier
//! such start, its own included. It fails when a new leader reuses or lowers a term: a
//! node elected without learning the term of the leader before it, or one that, having
//! lost and regained leadership, kept its term.

use crate::quorum_run::{acting, quorum_runs};
use crate::run::check_in;

#[test]
fn quorum_terms_of_acting_leaders_strictly_increase() {
    check_in(quorum_runs(), "acting leaders' terms increase", |run| {
        let spans = acting(run);
        let mut highest: Option<&les::sim::ActingSpan> = None;
        for span in spans.iter().filter(|s| s.took_leadership) {
            if let Some(before) = highest {
                if span.term <= before.term {
                    return Err(format!(
                        "a term that does not fence: {span}, after {before}"
                    ));
                }
            }
            if highest.is_none_or(|h| span.term > h.term) {
                highest = Some(span);
            }
        }
        Ok(())
    });
}

//! Quorum mode: the terms of acting leaders strictly increase in the order they start
//! acting, so the term works as a fencing token: whatever a leader did under term `t`,
//! a later leader's orders carry a higher term.
//!
//! Each time a node takes leadership (an acting span that begins with it taking the
//! lead, not one resuming from a pause) its term must exceed the term of every earlier
//! such start, its own included. It fails when a new leader reuses or lowers a term: a
//! node elected without learning the term of the leader before it, or one that, having
//! lost and regained leadership, kept its term.
//!
//! Terms live in memory only, so a cluster forgets one when the nodes that knew it
//! crash: the rule can hold only while every quorum contains a node that knows the
//! term. So a start is not held to an earlier term if incarnations that knew it (by
//! their term, sampled at every tick) have ended and fewer than `nodes - quorum + 1`
//! of them still run: an amnesia, not a bug (persisting the term would be the fix).

use std::collections::BTreeSet;
use std::time::Duration;

use les::sim::ActingSpan;

use crate::quorum_run::{acting, lifetimes, quorum_runs};
use crate::run::{check_in, Incarnation, Run};

#[test]
fn quorum_terms_of_acting_leaders_strictly_increase() {
    check_in(quorum_runs(), "acting leaders' terms increase", |run| {
        let spans = acting(run);
        let mut fence: Option<&ActingSpan> = None;
        for span in spans.iter().filter(|s| s.took_leadership) {
            let remembered = fence.filter(|f| remembered(run, f.term, span.from));
            if let Some(before) = remembered {
                if span.term <= before.term {
                    return Err(format!(
                        "a term that does not fence: {span}, after {before}"
                    ));
                }
            }
            if remembered.is_none_or(|f| span.term > f.term) {
                fence = Some(span);
            }
        }
        Ok(())
    });
}

/// Whether the cluster still remembers `term` at `at`: no incarnation that knew it (or
/// a higher one) has ended, or enough of them still run for every quorum to contain
/// one. Once every knower has ended, a fresh incarnation that reaches the same term by
/// itself does not count. Without a crash nothing is forgotten, so a term reused
/// across a partition is always caught.
fn remembered(run: &Run, term: u64, at: Duration) -> bool {
    let needed = run.schedule.nodes.len() + 1 - run.schedule.quorum;
    let lives = lifetimes(run);
    // (time, incarnation, learns): when each incarnation first knew the term, and when
    // it ended; learning first at equal times.
    let mut events: Vec<(Duration, bool, &Incarnation)> = Vec::new();
    for (key, samples) in &run.terms {
        if let Some((t, _)) = samples.iter().find(|(_, seen)| *seen >= term) {
            events.push((*t, false, key));
            if let Some(end) = lives.get(key).and_then(|(_, until)| *until) {
                events.push((end, true, key));
            }
        }
    }
    events.sort();
    let mut knowing: BTreeSet<&Incarnation> = BTreeSet::new();
    let mut forgot = false;
    for (_, ends, key) in events.into_iter().take_while(|(t, ..)| *t <= at) {
        if ends {
            forgot |= knowing.remove(key);
        } else if !(forgot && knowing.is_empty()) {
            // (Once every knower has ended, a fresh one reached the term by itself.)
            knowing.insert(key);
        }
    }
    !forgot || knowing.len() >= needed
}

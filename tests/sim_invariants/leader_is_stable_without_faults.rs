//! In a stable period — no fault, the last one's effects settled (see
//! `SETTLE_ROUNDS` in `run.rs`), the nodes agreed — the leader does not change on any node.

use crate::run::{check, leader_changes, STABLE_ROUNDS};

#[test]
fn once_converged_without_faults_no_node_changes_leader() {
    check("a stable leader", |run| {
        let Some(stable_from) = run.stable_from else {
            return Ok(()); // the convergence invariant reports this run
        };
        let changes: Vec<String> = leader_changes(run)
            .filter(|(at, ..)| *at > stable_from)
            .map(|(at, (node, _), to, term)| {
                format!("{} ms {node} -> {to:?} (term {term})", at.as_millis())
            })
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        let more = changes.len().saturating_sub(6);
        Err(format!(
            "stable from {} ms, yet {} leader changes within the {STABLE_ROUNDS} quiet rounds after: {}{}",
            stable_from.as_millis(),
            changes.len(),
            changes[..changes.len() - more].join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ))
    });
}

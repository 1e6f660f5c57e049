//! Joining at scale: how addresses learned from member lists are fetched (rule 3 stays:
//! they become members only once they answered a fetch themselves), how failures
//! spread, and why a state that has not changed costs O(1) instead of O(members).
//!
//! Fetching every learned address at once makes a cold start of N nodes cost N² fetches
//! within a round, each answered with an N-entry list; at 1,000 nodes that is a million
//! exchanges in a second. So a node fetches at most [`LEARN_PER_ROUND`] learned
//! addresses per round, and at once, outside that budget, only the leader a peer names:
//! that is the address the election needs. A list is scanned from a random offset, so
//! nodes reading the same list do not all fetch its first entries. Clusters up to
//! [`LEARN_PER_ROUND`] nodes join exactly as before; larger ones converge on their
//! leader within the same round trips (seeds and the named leader are fetched at once)
//! and complete their member lists over about N / (2 × [`LEARN_PER_ROUND`]) rounds
//! (each fetch also makes the callee fetch back).
//!
//! A state whose `revision` and start time equal those of the copy held for its sender
//! is the same document (conditional fetches make that the common case in steady
//! state): its list is scanned again only if it is longer than ours (then it names
//! someone we lack). A state whose `members_digest` equals ours names the same nodes
//! (the common case once a cluster has joined, even while states still change): it is
//! not scanned either. Both are only hints: a peer that lies with them only keeps us
//! from learning from it.
//!
//! Members' states are kept without their member lists (O(N) per member would make the
//! table O(N²) per node). A peer publishes instead the members it removed recently
//! (`removed`, from its tombstones); a node that still holds one of them checks it
//! itself at once, so failures spread epidemically while removal still only ever
//! follows a node's own failed contact, never hearsay.

use rand::Rng;

use super::{Action, Core};
use crate::wire::PeerState;

/// Learned addresses fetched per round, at most (the leader a peer names aside).
pub const LEARN_PER_ROUND: usize = 64;

/// Most removed members a state lists (the oldest tombstones beyond it are left out).
pub const MAX_REMOVED_LISTED: usize = 64;

impl Core {
    /// Whether `state`, from member `from`, is the same document as the copy we hold.
    pub(super) fn unchanged(&self, from: &str, state: &PeerState) -> bool {
        let held = self.members.get(from).and_then(|m| m.state.as_ref());
        held.is_some_and(|h| {
            state.revision != 0
                && h.revision == state.revision
                && h.start_time.to_bits() == state.start_time.to_bits()
        })
    }

    /// Whether `state` lists exactly this node and its members, by digest.
    pub(super) fn same_members(&self, state: &PeerState) -> bool {
        state.members_digest != 0 && state.members_digest == self.digest
    }

    /// Members that `state` says its sender removed and that we still hold: worth
    /// checking ourselves now.
    pub(super) fn removed_by(&self, from: &str, state: &PeerState) -> Vec<String> {
        state
            .removed
            .iter()
            .filter(|a| a.as_str() != from && self.members.contains_key(*a))
            .take(MAX_REMOVED_LISTED)
            .cloned()
            .collect()
    }

    /// What this node publishes as `removed`: its tombstones, in address order, at
    /// most [`MAX_REMOVED_LISTED`].
    pub(super) fn removed_listed(&self) -> Vec<String> {
        let mut gone: Vec<String> = self.tombstones.keys().cloned().collect();
        gone.sort_unstable();
        gone.truncate(MAX_REMOVED_LISTED);
        gone
    }

    /// Fetch what `state` (from `from`) names that we do not know: its leader at once,
    /// other addresses within this round's budget, scanning from a random offset. An
    /// unchanged state is scanned only if it lists more nodes than we know.
    pub(super) fn learn(
        &mut self,
        from: &str,
        state: &PeerState,
        unchanged: bool,
        out: &mut Vec<Action>,
    ) {
        if let Some(l) = &state.leader {
            if *l != self.me && *l != from && !self.members.contains_key(l) {
                self.fetch_learned(l.clone(), out);
            }
        }
        if !self.scans(state, unchanged) {
            return;
        }
        let n = state.members.len();
        let start = self.rng.random_range(0..n);
        for i in 0..n {
            let a = &state.members[(start + i) % n];
            if *a == self.me || *a == from || self.members.contains_key(a) {
                continue;
            }
            if self.learn_budget == 0 || !self.fetch_learned(a.clone(), out) {
                return;
            }
        }
    }

    /// Whether [`Core::learn`] reads `state`'s list (beyond the named leader).
    fn scans(&self, state: &PeerState, unchanged: bool) -> bool {
        self.scans_listed(state.members.len(), state, unchanged)
    }

    /// [`Core::scans`] for a list of `n` entries (`state`'s own list is not read).
    fn scans_listed(&self, n: usize, state: &PeerState, unchanged: bool) -> bool {
        let nothing_new = self.same_members(state) || (unchanged && n <= self.members.len() + 1);
        self.learn_budget > 0 && n > 0 && !nothing_new
    }

    /// Whether handling `state` from `from` now would read its member list past the
    /// first entry (conservative: `true` when unsure). A simulator uses it to hand over
    /// a copy without the list when it would not be read, which is the same at O(1).
    pub fn reads_members(&self, from: &str, state: &PeerState) -> bool {
        self.quorum_mode()
            || state.members.first() == Some(&self.me)
            || self.scans(state, self.unchanged(from, state))
    }

    /// [`Core::reads_members`] before the list is built: `state` as
    /// [`Core::state_without_members`] gives it, from `from`, whose list would have
    /// `listed` entries, `from` itself first. A simulator that mirrors member lists
    /// builds the list only when this says it is read.
    pub fn reads_listed(&self, from: &str, listed: usize, state: &PeerState) -> bool {
        self.quorum_mode()
            || (listed > 0 && from == self.me)
            || self.scans_listed(listed, state, self.unchanged(from, state))
    }

    /// Fetch a learned address, out of this round's budget, unless too many fetches
    /// are outstanding already (a long list from a peer must not make us open thousands
    /// of connections in one go). An address already in flight costs nothing.
    fn fetch_learned(&mut self, addr: String, out: &mut Vec<Action>) -> bool {
        if self.in_flight.contains(&addr) {
            return true;
        }
        if self.in_flight.len() >= LEARN_PER_ROUND + self.members.len() {
            return false;
        }
        self.learn_budget = self.learn_budget.saturating_sub(1);
        self.fetch(addr, out);
        true
    }
}

//! Quorum mode: the leader lease, the followers' promises, fencing terms, and seniority
//! forfeited after a partition (rules 9 to 12 of the module docs).
//!
//! # Why each piece is there
//! A node *acts* as leader (its `LeaderChanged` gain fires) only while `quorum` nodes,
//! itself included, have *confirmed* it: a confirmation is a state fetched by the
//! leader that names it, with the leader's current term, and it counts for `lease` from
//! the moment the leader **sent** that fetch, on the leader's own monotonic clock.
//!
//! A node that served such a state to the leader has made a *promise*: it names no
//! other leader (itself included) until `promise_len = lease × (1 + ρ) / (1 − ρ)` after
//! it last served its vote ([`Event::VoteServed`](super::Event::VoteServed)), where ρ is
//! [`CLOCK_RATE_BOUND`]. Any two quorums share a node (quorum is a majority), and that
//! node's promise outlasts every lease built on its confirmation, whatever the two
//! clocks' rates within the bound: so two nodes never act as leader at once. A node
//! that has just started may have made a promise in its previous life, so it names
//! nobody for `promise_len` after it starts. Switching from one leader to another
//! always passes through "nobody" in an earlier event, so that any vote the runtime
//! served just before the switch has been reported first.
//!
//! Terms are fencing tokens. A node claiming leadership proposes a term above every
//! term it has seen; a node names a new leader only with a term above the one it last
//! named a leader with, and publishes that term; a leader counts only confirmations
//! carrying its own term. Hence the terms of successive acting leaders strictly
//! increase. A node naming nobody publishes the term it last voted with, so a claimant
//! learns what it must exceed without terms racing each other upwards.
//!
//! A node that has lost its quorum (fewer than `quorum` nodes, itself included, still
//! list it as a member) takes a new start time: it comes back as the most junior node,
//! so healing a partition never moves leadership back to it.

use std::time::Duration;

use super::{Action, Core};
use crate::wire::{LeaseInfo, PeerState};

/// The documented bound on clock *rate* error, as a fraction (5 %): any node's
/// monotonic clock measures an interval of real time `d` as between `d × (1 − ρ)` and
/// `d × (1 + ρ)`. Wall-clock offsets do not matter; only rates do.
pub const CLOCK_RATE_BOUND: f64 = 0.05;

/// How long a vote served under `lease` binds its voter (see the module docs).
pub(super) fn promise_for(lease: Duration) -> Duration {
    lease.mul_f64((1.0 + CLOCK_RATE_BOUND) / (1.0 - CLOCK_RATE_BOUND))
}

/// How far a received term may lead this node's wall clock, in seconds, before the
/// state carrying it is rejected as a bad response. Terms are fencing tokens: a claim
/// takes `max(highest term known + 1, wall-clock seconds)`, and default mode counts
/// leader changes from 0. So an honest term is either a small count or about its
/// claimant's wall clock, plus one per claim that had to outbid another: a day covers
/// clock skew far beyond what the protocol tolerates anyway (seniority is wall-clock
/// start time; the simulator's catalogue runs a node an hour behind) and more outbid
/// claims than a real history makes. Without a bound a peer sending `u64::MAX` would
/// freeze every term at the top (no later claim could exceed it), and one sending
/// `999999999999` would make every later fencing token meaningless to the systems
/// that compare them.
pub const MAX_TERM_LEAD_SECS: u64 = 86_400;

/// Most other addresses of this node remembered (a seed list naming it by IP and by
/// name, IPv4 and IPv6): enough for honest aliases, bounded against made-up ones.
pub const MAX_ALIASES: usize = 16;

/// A claim whose term lags the wall clock's seconds by more than this is renewed.
const CLAIM_MAX_AGE_SECS: u64 = 2;

/// Quorum-mode state of one node (unused outside quorum mode).
#[derive(Debug, Clone, Default)]
pub(super) struct QuorumState {
    /// Term of the leader this node last named (its vote), and that leader.
    pub(super) voted_term: u64,
    pub(super) voted_for: Option<String>,
    /// The highest term seen in any state: where a claim starts.
    pub(super) seen_term: u64,
    /// The highest term this node has acted as leader with.
    pub(super) acted_term: u64,
    /// The term this node proposes while it nominates itself but does not act yet.
    pub(super) claim: Option<u64>,
    /// Whom this node has promised to name exclusively, and until when (monotonic).
    /// `None` with a future `promise_until`: nobody may be named (start-up).
    pub(super) promised: Option<String>,
    pub(super) promise_until: Duration,
    /// This event released a leader: no new one may be named before the next event.
    pub(super) released_now: bool,
    /// Ask the runtime for an event right away (see `released_now`).
    pub(super) wake_now: bool,
    /// At least `quorum` nodes listed this node since it last took a start time.
    pub(super) had_quorum: bool,
}

impl Core {
    /// Whether quorum mode is on (`quorum` of 2 or more).
    pub(super) fn quorum_mode(&self) -> bool {
        self.cfg.quorum >= 2
    }

    /// How long a served vote binds this node: the lease, stretched by the clock-rate
    /// bound on both clocks.
    pub(super) fn promise_len(&self) -> Duration {
        promise_for(self.cfg.lease)
    }

    /// A state naming `to` was served to `to` at `at`.
    pub(super) fn on_vote_served(&mut self, to: String, at: Duration) {
        if !self.quorum_mode() {
            return;
        }
        let until = at + self.promise_len();
        let q = &mut self.quorum;
        q.promise_until = q.promise_until.max(until);
        q.promised = Some(to);
    }

    /// `addr` proved it no longer acts as leader (it is leaving): drop the promise.
    pub(super) fn release_promise(&mut self, addr: &str) {
        if self.quorum.promised.as_deref() == Some(addr) {
            self.quorum.promise_until = self.now;
        }
    }

    /// Whether this node may name `who` as leader now without breaking a promise.
    fn may_name(&self, who: &str) -> bool {
        let q = &self.quorum;
        !q.released_now && (self.now >= q.promise_until || q.promised.as_deref() == Some(who))
    }

    /// Nodes that list this node as a member, itself included (after a pause, only
    /// those heard from since).
    pub(super) fn reach(&self) -> usize {
        let fresh = |t: Option<Duration>| match (self.resumed_at, t) {
            (Some(resumed), Some(t)) => t >= resumed,
            (Some(_), None) => false,
            (None, _) => true,
        };
        1 + self
            .members
            .values()
            .filter(|m| fresh(m.last_contact) && m.state.is_some() && m.lists_me)
            .count()
    }

    /// When this node's lease runs out given the confirmations it holds now: the
    /// `(quorum − 1)`-th most recent confirmation plus `lease`. `None`: not enough.
    pub(super) fn lease_end(&self) -> Option<Duration> {
        let need = self.cfg.quorum.saturating_sub(1);
        let mut sent: Vec<Duration> = self
            .members
            .values()
            .filter_map(|m| m.confirmed_at)
            .collect();
        if need == 0 || sent.len() < need {
            return None;
        }
        sent.sort_unstable_by(|a, b| b.cmp(a));
        Some(sent[need - 1] + self.cfg.lease)
    }

    /// Whether this node acts as leader now.
    pub(super) fn acting(&self) -> bool {
        self.leader.as_deref() == Some(self.me.as_str())
    }

    /// The term this node publishes: its claim or acting term, else its last vote's.
    pub(super) fn published_term(&self) -> u64 {
        let q = &self.quorum;
        match q.claim {
            Some(t) => t,
            None if self.acting() => q.acted_term,
            None => q.voted_term,
        }
    }

    /// A state arrived from member `from`, answering the fetch sent at `sent`: note a
    /// confirmation, and raise the claim above a term it must exceed.
    pub(super) fn quorum_on_state(&mut self, from: &str, sent: Option<Duration>) {
        let Some(state) = self.members.get(from).and_then(|m| m.state.clone()) else {
            return;
        };
        self.quorum.seen_term = self.quorum.seen_term.max(state.term);
        let names_me = state.leader.as_deref() == Some(self.me.as_str());
        let mine = self.published_term();
        if let Some(claim) = self.quorum.claim {
            // A node that names someone else, or nobody, with a term as high as the
            // claim will not vote for it: propose a higher one.
            let blocks = if names_me {
                state.term > claim
            } else {
                state.term >= claim
            };
            if blocks {
                self.restart_claim(state.term.saturating_add(1));
                return;
            }
        }
        let confirms =
            names_me && state.term == mine && (self.acting() || self.quorum.claim.is_some());
        if let Some(m) = self.members.get_mut(from) {
            if confirms {
                if let Some(sent) = sent {
                    m.confirmed_at = Some(m.confirmed_at.map_or(sent, |c| c.max(sent)));
                }
            } else {
                m.confirmed_at = None;
            }
        }
    }

    /// Propose `term` afresh: confirmations of an older term no longer count.
    fn restart_claim(&mut self, term: u64) {
        self.quorum.claim = Some(term);
        for m in self.members.values_mut() {
            m.confirmed_at = None;
        }
    }

    /// The quorum-mode election, run after every event. See the module docs.
    pub(super) fn elect_quorum(&mut self, out: &mut Vec<Action>) {
        let reach = self.reach();
        if reach >= self.cfg.quorum {
            self.quorum.had_quorum = true;
        } else if self.quorum.had_quorum {
            self.quorum.had_quorum = false;
            self.forfeit_seniority("lost its quorum", out);
        }
        let mut nominee = self.nominee();
        if reach < self.cfg.quorum {
            // A node that cannot reach a quorum follows nobody. It may still claim: a
            // claim cannot succeed without confirmations from a quorum.
            nominee = nominee.filter(|n| *n == self.me);
        }
        let claim_before = self.quorum.claim;
        let target = match nominee {
            Some(n) if n == self.me => self.claim_or_keep(),
            Some(other) => {
                self.quorum.claim = None;
                self.follow(&other)
            }
            None => {
                self.quorum.claim = None;
                None
            }
        };
        if self.quorum.claim.is_some() && self.quorum.claim != claim_before {
            // A new claim: tell every member now (each fetches back, sees the claim
            // and, if it agrees, names this node), rather than at their next round.
            let members: Vec<String> = self.members.keys().cloned().collect();
            for addr in members {
                self.fetch(addr, out);
            }
        }
        if target != self.leader && self.leader.is_some() && target.is_some() {
            // Never from one leader straight to another: see the module docs.
            self.set_leader(None, out);
        } else {
            self.set_leader(target, out);
        }
        self.term = self.published_term();
    }

    /// As the nominee: keep acting while the lease holds, or claim and start acting
    /// once a quorum confirmed the claim.
    fn claim_or_keep(&mut self) -> Option<String> {
        let lease_holds = self.lease_end().is_some_and(|end| end > self.now);
        if self.acting() {
            return lease_holds.then(|| self.me.clone());
        }
        // At least the wall clock in whole seconds, and never older than
        // `CLAIM_MAX_AGE_SECS`: if every node that knew the last term has restarted
        // (terms live in memory), a new leader's claim still comes after the old one's,
        // since a restarted node names nobody for `promise_len` (3.3 s) and the old
        // claim was made before its voters crashed. This assumes wall clocks agree to
        // within about a second; a claim that knows the cluster's terms does not depend
        // on it (`known + 1`). A claim that has waited longer than that for its quorum
        // is renewed (confirmations come within round trips, so a live claim is never
        // cut short).
        let wall = self.wall_secs();
        let claim = match self.quorum.claim {
            Some(c) if c.saturating_add(CLAIM_MAX_AGE_SECS) >= wall => c,
            _ => {
                let q = &self.quorum;
                let known = q.seen_term.max(q.voted_term).max(q.acted_term);
                self.restart_claim(known.saturating_add(1).max(wall));
                return None;
            }
        };
        if lease_holds && self.may_name(&self.me.clone()) {
            self.quorum.claim = None;
            self.quorum.acted_term = claim;
            self.quorum.voted_term = claim;
            self.quorum.voted_for = Some(self.me.clone());
            Some(self.me.clone())
        } else {
            None
        }
    }

    /// Whom to name as leader now, `other` being the nominee (another node): `other`
    /// if it is a candidate itself, or the leader it follows if this node cannot reach
    /// that one (see [`Core::deferred`]); with a term this node may vote for, and no
    /// promise in the way. `None`: nobody, for now.
    fn follow(&mut self, other: &str) -> Option<String> {
        let target = self.deferred(other);
        let state = self.members.get(other).and_then(|m| m.state.as_ref())?;
        let candidate = state.leader.as_deref().is_none_or(|l| l == target);
        // The nominee publishes its claim, or the term of the leader it follows.
        let term = state.term;
        let q = &self.quorum;
        let same = q.voted_for.as_deref() == Some(target.as_str()) && term == q.voted_term;
        // A nominee whose own state names itself acts already, with a quorum that did
        // not need this node: following it with its term, even one not above this
        // node's last vote (that vote went to a claim that failed, or two claims drew
        // the same wall-clock second), cannot let an older term act after a newer one,
        // and without it this node would follow nobody for as long as that leader lasts.
        let acts = target == other && state.leader.as_deref() == Some(other);
        let term_ok = same || term > q.voted_term || acts;
        if !(candidate && term_ok && self.may_name(&target)) {
            return None;
        }
        self.quorum.voted_term = term;
        self.quorum.voted_for = Some(target.clone());
        Some(target)
    }

    /// Called before every event: an acting leader whose lease ran out stops acting
    /// now, before anything else happens (a process resumed after a pause included).
    pub(super) fn check_lease(&mut self, out: &mut Vec<Action>) {
        if self.quorum_mode() && self.acting() && self.lease_end().is_none_or(|e| e <= self.now) {
            tracing::warn!(
                term = self.term,
                "leader lease ran out: stopping acting as leader"
            );
            self.set_leader(None, out);
            self.term = self.published_term();
        }
    }

    /// The earliest time the core needs an event (see [`Core::next_deadline`]).
    pub(super) fn quorum_deadline(&self) -> Option<Duration> {
        if !self.quorum_mode() || self.leaving {
            return None;
        }
        if self.quorum.wake_now {
            return Some(self.now);
        }
        let promise = (self.quorum.promise_until > self.now).then_some(self.quorum.promise_until);
        let lease = if self.acting() {
            self.lease_end()
        } else {
            None
        };
        promise.into_iter().chain(lease).min()
    }

    /// The `lease` part of `/diag/`.
    pub(super) fn lease_info(&self, now: Duration) -> Option<LeaseInfo> {
        if !self.quorum_mode() {
            return None;
        }
        let acting = self.acting();
        let fresh = |c: Option<Duration>| c.is_some_and(|c| c + self.cfg.lease > now);
        Some(LeaseInfo {
            quorum: self.cfg.quorum,
            lease_ms: self.cfg.lease.as_millis() as u64,
            acting,
            confirmed_by: self
                .members
                .iter()
                .filter(|(_, m)| fresh(m.confirmed_at))
                .map(|(a, _)| a.clone())
                .collect(),
            expires_in_ms: acting
                .then(|| self.lease_end())
                .flatten()
                .map(|e| e.saturating_sub(now).as_millis() as u64),
            reachable: self.reach(),
        })
    }

    /// The wall clock now, estimated from the last tick (epoch seconds).
    pub(super) fn wall_now(&self) -> f64 {
        match self.wall_ref {
            Some((at, wall)) => wall + self.now.saturating_sub(at).as_secs_f64(),
            None => self.start_time,
        }
    }

    /// Whether `term`, received from `from`, is no more than [`MAX_TERM_LEAD_SECS`]
    /// ahead of the wall clock; if not, warn and count the rejection.
    pub(super) fn plausible_term(&mut self, from: &str, term: u64) -> bool {
        let limit = self.wall_secs().saturating_add(MAX_TERM_LEAD_SECS);
        if term <= limit {
            return true;
        }
        self.terms_rejected = self.terms_rejected.saturating_add(1);
        tracing::warn!(
            peer = from,
            term,
            limit,
            "rejecting state from {from}: term {term} is implausibly far ahead of the wall clock"
        );
        false
    }

    /// Whether `state`, fetched from `from`, is this node's own: it lists this node
    /// first with this node's exact start time. Then `from` is another name for this
    /// node (`[::1]:4000` for `127.0.0.1:4000`, announced by anyone), and adding it
    /// would make the node its own peer. The start time makes the test exact: no other
    /// node has this one's start time to the bit.
    pub(super) fn is_self_alias(&mut self, from: &str, state: &PeerState) -> bool {
        let alias = from != self.me
            && state.members.first() == Some(&self.me)
            && state.start_time.to_bits() == self.start_time.to_bits();
        if alias && self.aliases.len() < MAX_ALIASES && self.aliases.insert(from.to_string()) {
            tracing::warn!(
                peer = from,
                "{from} is another address of this node itself: not adding it, not asking it again"
            );
        }
        alias
    }

    /// [`Core::wall_now`] in whole seconds (0 for a clock before the epoch).
    fn wall_secs(&self) -> u64 {
        let w = self.wall_now();
        if w.is_finite() && w > 0.0 {
            w as u64
        } else {
            0
        }
    }

    /// Take a new start time: this node becomes the most junior, so it never takes
    /// leadership back from whoever replaced it (rules 7 and 12).
    pub(super) fn forfeit_seniority(&mut self, why: &str, out: &mut Vec<Action>) {
        self.forfeit_seniority_at(self.wall_now(), why, out);
    }

    /// [`Core::forfeit_seniority`] with the wall clock read by the caller (`wall`).
    pub(super) fn forfeit_seniority_at(&mut self, wall: f64, why: &str, out: &mut Vec<Action>) {
        // Never more senior than before, even if the wall clock stepped back.
        let new = wall.max(self.start_time + 1e-6);
        tracing::warn!(
            reason = why,
            "this node {why}; rejoining as the most junior member"
        );
        self.start_time = new;
        out.push(Action::StartTimeChanged { start_time: new });
        out.push(Action::StateChanged);
    }
}

//! Membership: who is a member, whom to contact each round, and how addresses join and
//! leave (rules 2, 3 and 7 of the module docs): a caller or a listed address becomes a
//! member only once it answered a fetch itself; removed members are tombstoned with
//! their start time so stale answers cannot bring them back with their old seniority.

use std::collections::HashSet;
use std::time::Duration;

use rand::Rng;

use super::{Action, Core, RemoveReason, LEARN_PER_ROUND};
use crate::wire::{addr_hash, PeerState};

#[derive(Debug, Clone)]
pub(super) struct Member {
    /// Last state received from the member itself, without its member list.
    pub(super) state: Option<PeerState>,
    /// Whether that state's member list named this node.
    pub(super) lists_me: bool,
    /// Time of the last successful fetch.
    pub(super) last_contact: Option<Duration>,
    /// Set by a timeout, cleared by any success.
    pub(super) suspect_since: Option<Duration>,
    /// Quorum mode: when this node sent the fetch whose answer last confirmed it as
    /// leader with its current term (cleared by an answer that does not).
    pub(super) confirmed_at: Option<Duration>,
    /// Consecutive failed observations (timeouts, helpers' failed probes) since its
    /// last success: the evidence against it (see `detector`).
    pub(super) failures: u32,
    /// A helper confirmed the current suspicion: its probe could not reach it either.
    pub(super) confirmed: bool,
    /// How many of those failures went into the failure-rate estimate (see `health`).
    pub(super) counted: u32,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Tombstone {
    /// Start time the member had when removed (`None`: any start time).
    pub(super) start_time: Option<f64>,
    pub(super) until: Duration,
    /// Removed because it stopped answering (not refused, not left): a partition looks
    /// like this.
    pub(super) timed_out: bool,
}

/// Most fetch-backs of announced non-members (callers of `GET /state/{addr}` that are
/// not members) outstanding at once. Anyone can announce any address, so without a
/// bound an outsider could make this node open connections to as many addresses as it
/// likes. A real join costs one fetch-back per joining node, answered within a round
/// trip. 64, the same as `join::LEARN_PER_ROUND` for addresses learned from lists, lets a
/// cold start of 65 nodes, each announcing itself to every other at once, go through
/// without a drop (the simulator's 50-node scenario does exactly that); outside a cold
/// start a cluster sees a join or two at a time. A caller whose announcement is dropped
/// is not lost: it announces again at its next round, and members' lists name it too.
pub const MAX_ANNOUNCE_FETCHES: usize = 64;

/// Burst of the token bucket that rate-limits fetch-backs of announced non-members:
/// this many may start at once after a quiet spell (sized like
/// [`MAX_ANNOUNCE_FETCHES`], for the same cold start).
pub const ANNOUNCE_BURST: f64 = 64.0;

/// Refill rate of that bucket, in fetch-backs per second of the core's monotonic time.
/// Sustained, 8 new nodes a second, every second, is far above any real cluster's
/// joins (each node's start costs a peer one fetch-back), while it caps the connections
/// an outsider can direct at third parties through this node at 8 a second.
pub const ANNOUNCE_REFILL_PER_SEC: f64 = 8.0;

/// Bounds on fetching back announced non-members, and what they dropped.
#[derive(Debug, Clone, Default)]
pub(super) struct AnnounceLimit {
    /// Non-members fetched back on their announcement, possibly still outstanding
    /// (pruned to those still in flight and not members before each use).
    pub(super) pending: HashSet<String>,
    /// Tokens left, and when they were last counted (`None`: never, a full bucket).
    tokens: f64,
    refilled: Option<Duration>,
    /// Announcements dropped by either bound.
    pub(super) dropped: u64,
}

impl AnnounceLimit {
    /// Refill the bucket up to `now`, then take one token if there is one.
    fn take_token(&mut self, now: Duration) -> bool {
        self.tokens = match self.refilled {
            None => ANNOUNCE_BURST,
            Some(at) => {
                let gained = now.saturating_sub(at).as_secs_f64() * ANNOUNCE_REFILL_PER_SEC;
                (self.tokens + gained).min(ANNOUNCE_BURST)
            }
        };
        self.refilled = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Core {
    pub(super) fn on_tick(&mut self, now: Duration, wall: f64, out: &mut Vec<Action>) {
        if self.leaving {
            return;
        }
        self.check_pause(now, wall, out);
        self.last_tick = Some(now);
        self.wall_ref = Some((now, wall));
        self.tombstones.retain(|_, t| t.until > now);
        self.learn_budget = LEARN_PER_ROUND;

        self.review_suspects(out);

        for seed in self.seeds.clone() {
            if !self.members.contains_key(&seed) {
                self.fetch(seed, out);
            }
        }
        for addr in self.round_targets() {
            self.fetch(addr, out);
        }
    }

    /// Members to contact this round: all of them, or `fanout` of them in rotation plus
    /// those that matter for the election (leader, nominee, suspects), or all while this
    /// node waits for confirmation of its own leadership.
    fn round_targets(&mut self) -> Vec<String> {
        let n = self.members.len();
        // In quorum mode a leader renews its lease from every member each round.
        let pending_self = self.awaiting_votes() || (self.quorum_mode() && self.acting());
        if self.cfg.fanout == 0 || n <= self.cfg.fanout || pending_self {
            return self.members.keys().cloned().collect();
        }
        if self.cycle_left == 0 {
            // Each cycle visits every member once, starting at a random offset. Member
            // lists are in nearly the same order on every node: a shared starting point
            // would make every node contact the same few members in the same round and
            // leave the rest unchecked for a whole cycle.
            self.cursor = self.rng.random_range(0..n);
            self.cycle_left = n;
        }
        let mut picked: Vec<String> = Vec::with_capacity(self.cfg.fanout + 2);
        for i in 0..self.cfg.fanout {
            if let Some((addr, _)) = self.members.get_index((self.cursor + i) % n) {
                picked.push(addr.clone());
            }
        }
        self.cursor = (self.cursor + self.cfg.fanout) % n;
        self.cycle_left = self.cycle_left.saturating_sub(self.cfg.fanout);
        let nominee = self.nominee();
        let important = |addr: &String, m: &Member| {
            m.suspect_since.is_some()
                || Some(addr) == self.leader.as_ref()
                || Some(addr) == nominee.as_ref()
                || m.state.is_none()
        };
        let mut add = |addr: &String| {
            if !picked.contains(addr) {
                picked.push(addr.clone());
            }
        };
        if self.suspects == 0 {
            // Every member holds a state (`on_state` stores it right after adding the
            // member), so without suspects only the leader and the nominee matter:
            // look them up instead of scanning every member, in member order as the
            // scan would.
            let mut found: Vec<(usize, &String)> = [self.leader.as_ref(), nominee.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|a| self.members.get_full(a).map(|(i, a, _)| (i, a)))
                .collect();
            found.sort_unstable();
            found.dedup();
            for (i, addr) in found {
                debug_assert!(important(addr, &self.members[i]));
                add(addr);
            }
        } else {
            for (addr, m) in &self.members {
                if important(addr, m) {
                    add(addr);
                }
            }
        }
        picked
    }

    pub(super) fn on_state(
        &mut self,
        now: Duration,
        from: String,
        state: PeerState,
        out: &mut Vec<Action>,
    ) {
        self.seeds_unanswered.remove(&from);
        if from == self.me || self.leaving {
            return;
        }
        let stale = self
            .tombstones
            .get(&from)
            .is_some_and(|t| t.start_time.is_none_or(|st| st == state.start_time));
        if state.leaving {
            self.release_promise(&from);
        }
        if state.leaving || stale {
            if self.members.contains_key(&from) {
                let reason = if state.leaving {
                    RemoveReason::Left
                } else {
                    RemoveReason::Stale
                };
                self.remove(now, &from, Some(state.start_time), reason, out);
            }
            return;
        }
        self.tombstones.remove(&from);
        self.had_peers = true;
        if !self.quorum_mode() {
            self.term = self.term.max(state.term);
        }
        // Hints: members the peer removed and we still hold (see `join`).
        let unchanged = self.unchanged(&from, &state);
        let hints = if unchanged {
            Vec::new()
        } else {
            self.removed_by(&from, &state)
        };
        if !self.members.contains_key(&from) {
            self.members.insert(
                from.clone(),
                Member {
                    state: None,
                    lists_me: false,
                    last_contact: None,
                    suspect_since: None,
                    confirmed_at: None,
                    failures: 0,
                    confirmed: false,
                    counted: 0,
                },
            );
            self.digest = self.digest.wrapping_add(addr_hash(&from));
            out.push(Action::MemberAdded { addr: from.clone() });
        }
        self.learn(&from, &state, unchanged, out);
        // Only quorum mode reads it, and it costs a scan of the list.
        let lists_me = match self.members.get(&from) {
            Some(m) if unchanged => m.lists_me,
            _ if self.same_members(&state) => true,
            _ => self.quorum_mode() && state.members.contains(&self.me),
        };
        let seniority = |s: &PeerState| (s.start_time.to_bits(), s.eligible, s.leaving);
        let held = self.members.get(&from).and_then(|m| m.state.as_ref());
        if held.map(seniority) != Some(seniority(&state)) {
            let now = (state.start_time, state.eligible, state.leaving);
            self.seniority_changed(&from, Some(now));
        }
        let mut state = state;
        state.members = Vec::new(); // kept without its list (see `join`)
        if let Some(m) = self.members.get_mut(&from) {
            m.lists_me = lists_me;
            m.state = Some(state);
            m.last_contact = Some(now);
        }
        self.observed_alive(&from, super::detector::Observer::Fetch);
        if self.quorum_mode() {
            let sent = self.fetch_sent.get(&from).copied();
            self.quorum_on_state(&from, sent);
        }
        for addr in hints {
            // A peer that removed a member we suspect is an independent confirmation
            // (Lifeguard): it shortens our suspicion, but removal still takes our own
            // failed observations.
            if let Some(m) = self.members.get_mut(&addr) {
                m.confirmed |= m.suspect_since.is_some();
            }
            if !self.in_flight.contains(&addr) {
                self.fetch(addr, out);
            }
        }
    }

    pub(super) fn on_announced(&mut self, addr: String, out: &mut Vec<Action>) {
        if self.leaving || addr == self.me {
            return;
        }
        match self.members.get(&addr) {
            // Unknown caller: fetch its state, which adds it if it answers (rule 3),
            // within the bounds on such fetch-backs.
            None => self.fetch_back(addr, out),
            Some(m) => {
                let waiting_for_votes = self.awaiting_votes();
                let stale_vote = m
                    .state
                    .as_ref()
                    .is_none_or(|s| s.leader.as_deref() != Some(&self.me));
                // In quorum mode a leaderless node hears its nominee's new claim this way
                // (a claim asks every member at once), rather than at its next round.
                let claim_news = self.quorum_mode()
                    && self.leader.is_none()
                    && self.nominee().as_deref() == Some(addr.as_str());
                // A suspect that calls us is alive enough to refute the suspicion:
                // check it now rather than at the next round (the call itself proves
                // nothing; anyone can name any address).
                let refutes = m.suspect_since.is_some();
                if (waiting_for_votes && stale_vote) || claim_news || refutes {
                    self.fetch(addr, out);
                }
            }
        }
    }

    /// Fetch back `addr`, a non-member that announced itself, unless that would exceed
    /// [`MAX_ANNOUNCE_FETCHES`] outstanding or the token bucket: then drop and count it.
    fn fetch_back(&mut self, addr: String, out: &mut Vec<Action>) {
        let (in_flight, members) = (&self.in_flight, &self.members);
        let limit = &mut self.announce;
        limit
            .pending
            .retain(|a| in_flight.contains(a) && !members.contains_key(a));
        let room = limit.pending.len() < MAX_ANNOUNCE_FETCHES || limit.pending.contains(&addr);
        if !(room && limit.take_token(self.now)) {
            limit.dropped = limit.dropped.saturating_add(1);
            return;
        }
        limit.pending.insert(addr.clone());
        self.fetch(addr, out);
    }

    pub(super) fn on_leave(&mut self, out: &mut Vec<Action>) {
        if self.leaving {
            return;
        }
        if self.leader.is_some() {
            self.set_leader(None, out);
        }
        self.leaving = true;
        for addr in self.members.keys() {
            out.push(Action::SendLeave { addr: addr.clone() });
        }
    }

    pub(super) fn fetch(&mut self, addr: String, out: &mut Vec<Action>) {
        if addr == self.me || self.aliases.contains(&addr) {
            return;
        }
        if self.in_flight.contains(&addr) {
            self.refetch.insert(addr);
        } else {
            self.in_flight.insert(addr.clone());
            self.fetch_sent.insert(addr.clone(), self.now);
            out.push(Action::FetchState { addr });
        }
    }

    /// A fetch to `addr` completed: issue the one asked for meanwhile, if any.
    pub(super) fn fetch_done(&mut self, addr: &str, out: &mut Vec<Action>) {
        self.in_flight.remove(addr);
        self.fetch_sent.remove(addr);
        if self.refetch.remove(addr) && !self.leaving {
            self.fetch(addr.to_string(), out);
        }
    }

    /// Remove `addr` if it is a member, tombstoned with `seen` (a start time just
    /// received from it) or else the start time of its last stored state.
    pub(super) fn remove(
        &mut self,
        now: Duration,
        addr: &str,
        seen: Option<f64>,
        reason: RemoveReason,
        out: &mut Vec<Action>,
    ) {
        if let Some(member) = self.members.shift_remove(addr) {
            self.seniority_changed(addr, None);
            if member.suspect_since.is_some() {
                self.suspects -= 1;
            }
            self.digest = self.digest.wrapping_sub(addr_hash(addr));
            let start_time = seen.or_else(|| member.state.map(|s| s.start_time));
            self.tombstones.insert(
                addr.to_string(),
                Tombstone {
                    start_time,
                    until: now + self.cfg.rejoin_holdoff,
                    timed_out: reason == RemoveReason::Timeout,
                },
            );
            out.push(Action::MemberRemoved {
                addr: addr.to_string(),
                reason,
            });
        }
    }
}

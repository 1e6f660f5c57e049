//! The election (rules 5, 6 and 8 of the module docs): the nominee is the most senior
//! eligible node whose state this node holds; a follower adopts it at once, the nominee
//! itself leads only once every member confirms it; every change carries a term. In
//! quorum mode the decision is [`Core::elect_quorum`]'s instead (see `lease`).

use super::{Action, Core, LeaderChange};

/// The nominee and what it was computed from: the member table's seniority epoch (bumped
/// whenever a member comes, goes, or changes start time, eligibility or leaving) and
/// this node's own eligibility and start time. Scanning every member on every event
/// made each event O(N), and the simulation of 1,000 nodes O(N³).
pub(super) type NomineeCache = std::cell::RefCell<Option<((u64, bool, u64), Option<String>)>>;

impl Core {
    /// This node nominates itself and does not lead yet (it has no leader, or a
    /// leader that handed over to it): it is collecting votes.
    pub(super) fn awaiting_votes(&self) -> bool {
        // The nominee is cached; `handed_over` is a lookup in the member table.
        self.nominee().as_deref() == Some(self.me.as_str())
            && (self.leader.is_none() || self.handed_over())
    }

    /// The leader this node follows is still a member and its own state names this
    /// node as leader: it stepped down in this node's favour. Until every member
    /// confirms this node, it keeps following that leader instead of passing through
    /// "no leader", so a hand-over is one leader change on every node, not two. Nobody
    /// acts as leader meanwhile: the old one names this node, and this node does not
    /// name itself yet.
    pub(super) fn handed_over(&self) -> bool {
        let Some(l) = self.leader.as_deref().filter(|l| *l != self.me) else {
            return false;
        };
        self.members
            .get(l)
            .and_then(|m| m.state.as_ref())
            .is_some_and(|s| !s.leaving && s.leader.as_deref() == Some(self.me.as_str()))
    }

    /// [`Event::Relinquish`](super::Event::Relinquish): a leader with a member that
    /// could lead gives up its seniority (the election that follows this event names
    /// the next most senior node) and asks every member to check its state now.
    pub(super) fn on_relinquish(&mut self, wall: f64, out: &mut Vec<Action>) {
        let successor = self
            .members
            .values()
            .any(|m| m.state.as_ref().is_some_and(|s| s.eligible && !s.leaving));
        // Without a member that could lead there is no one to hand over to: forfeiting
        // seniority then would change nothing but this node's start time.
        if self.leaving || !successor || self.leader.as_deref() != Some(self.me.as_str()) {
            return;
        }
        // Junior to every member it knows, whatever the clocks say: a wall clock
        // behind a member's start time must not leave this node the most senior.
        let newest = self
            .members
            .values()
            .filter_map(|m| m.state.as_ref().map(|s| s.start_time))
            .fold(wall, |newest, t| newest.max(t + 1e-6));
        self.forfeit_seniority_at(newest, "stepped down on request", out);
        for addr in self.members.keys() {
            out.push(Action::Notify { addr: addr.clone() });
        }
    }

    fn nominee_key(&self) -> (u64, bool, u64) {
        (
            self.seniority_epoch,
            self.eligible(),
            self.start_time.to_bits(),
        )
    }

    /// Member `addr`'s seniority inputs change to `now` (start time, eligible, leaving;
    /// `None`: it leaves the table). A cached nominee other than `addr` stays valid: the
    /// nominee is then the more senior of it and `addr`. A join adds members one by one,
    /// and recomputing the nominee at each (a scan of every member) made it O(N²).
    pub(super) fn seniority_changed(&mut self, addr: &str, now: Option<(f64, bool, bool)>) {
        let old_key = self.nominee_key();
        self.seniority_epoch += 1;
        let new_key = self.nominee_key();
        let held = |n: &str| {
            if n == self.me {
                Some(self.start_time)
            } else {
                self.members.get(n)?.state.as_ref().map(|s| s.start_time)
            }
        };
        let mut cache = self.nominee_cache.borrow_mut();
        let Some((key, nominee)) = cache.as_mut().filter(|(k, n)| {
            *k == old_key
                && n.as_deref() != Some(addr)
                && n.as_deref().is_none_or(|n| held(n).is_some())
        }) else {
            *cache = None;
            return;
        };
        if let Some((t, true, false)) = now {
            let beats = nominee
                .as_deref()
                .is_none_or(|n| senior_first((t, addr), (held(n).unwrap_or(f64::NAN), n)).is_lt());
            if beats {
                *nominee = Some(addr.to_string());
            }
        }
        *key = new_key;
    }

    /// The most senior eligible node among this one and the members whose state we hold.
    /// Asked on every event, so kept until an input changes (see [`NomineeCache`]).
    pub(super) fn nominee(&self) -> Option<String> {
        let key = self.nominee_key();
        if let Some((k, n)) = &*self.nominee_cache.borrow() {
            if *k == key {
                return n.clone();
            }
        }
        let n = self.compute_nominee();
        *self.nominee_cache.borrow_mut() = Some((key, n.clone()));
        n
    }

    fn compute_nominee(&self) -> Option<String> {
        let mine = self
            .eligible()
            .then_some((self.start_time, self.me.as_str()));
        let theirs = self.members.iter().filter_map(|(addr, m)| {
            let s = m.state.as_ref()?;
            (s.eligible && !s.leaving).then_some((s.start_time, addr.as_str()))
        });
        mine.into_iter()
            .chain(theirs)
            .min_by(|a, b| senior_first(*a, *b))
            .map(|(_, addr)| addr.to_string())
    }

    pub(super) fn elect(&mut self, out: &mut Vec<Action>) {
        if !self.had_peers && !self.alone_by_design {
            return; // rule 5: never elect before hearing from another node
        }
        if !self.voted {
            // Before the first vote, wait until every seed has answered or failed once and
            // every address learned so far has been tried: they may change the nominee, and
            // a joining node should not vote twice. Each wait ends within a request timeout.
            let learning = self
                .in_flight
                .iter()
                .any(|a| !self.members.contains_key(a) && !self.seeds.contains(a));
            if learning || !self.seeds_unanswered.is_empty() {
                return;
            }
        }
        if self.quorum_mode() {
            return self.elect_quorum(out);
        }
        let new_leader = match self.nominee() {
            None => None,
            Some(n) if n == self.me => {
                // A leader keeps leading: only a candidate needs every member's vote
                // (a scan of every member, on every event the leader handles otherwise).
                let confirmed = || {
                    self.members.values().all(|m| {
                        m.state
                            .as_ref()
                            .is_some_and(|s| s.leader.as_deref() == Some(self.me.as_str()))
                    })
                };
                if self.leader.as_deref() == Some(self.me.as_str()) || confirmed() {
                    Some(n)
                } else if self.handed_over() {
                    self.leader.clone()
                } else {
                    None
                }
            }
            Some(other) => Some(self.deferred(&other)),
        };
        self.set_leader(new_leader, out);
    }

    pub(super) fn set_leader(&mut self, new_leader: Option<String>, out: &mut Vec<Action>) {
        if new_leader == self.leader {
            return;
        }
        if new_leader.is_some() {
            self.voted = true;
        }
        let previous = std::mem::replace(&mut self.leader, new_leader);
        if self.quorum_mode() {
            // The term comes from the claim or the vote (see `lease`); a released
            // leader must not be replaced before the next event.
            if previous.is_some() {
                self.quorum.released_now = true;
                self.quorum.wake_now = true;
            }
            self.term = self.published_term();
        } else if self.leader.is_some() {
            self.term = self.term.max(self.last_change_term.saturating_add(1));
        }
        self.last_change_term = self.term;
        out.push(Action::LeaderChanged(LeaderChange {
            me: self.me.clone(),
            previous,
            current: self.leader.clone(),
            term: self.term,
        }));
    }

    /// The leader to follow when `nominee` (another node) is the most senior one this
    /// node knows: the nominee itself, unless the nominee follows a leader that this
    /// node cannot reach (not a member: a link that fails one way, or a partition that
    /// spares the nominee). Then this node follows that leader on the nominee's word,
    /// so a one-way link does not split the cluster's view of its leader. Never a leader
    /// this node removed (tombstoned): its members' states may be older than that.
    pub(super) fn deferred(&self, nominee: &str) -> String {
        let named = self
            .members
            .get(nominee)
            .and_then(|m| m.state.as_ref())
            .and_then(|s| s.leader.as_deref());
        match named {
            // A leader this node removed itself is not taken on anyone's word: the
            // nominee's state may predate its fall.
            Some(l)
                if l != nominee
                    && l != self.me
                    && !self.members.contains_key(l)
                    && !self.tombstones.contains_key(l) =>
            {
                l.to_string()
            }
            _ => nominee.to_string(),
        }
    }
}

/// Seniority order of `(start time, address)` candidates: the earlier start first, ties
/// broken by address. The nominee is the first; the cache update in
/// `seniority_changed` and the full scan in `compute_nominee` must agree on it.
fn senior_first(a: (f64, &str), b: (f64, &str)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1))
}

//! Failure detection (rule 4 of the module docs): a refused connection or a broken
//! answer removes a member at once; a timeout only makes it suspect, and other members
//! are asked to probe it, every round while the suspicion lasts. Removal then takes
//! *evidence* (Lifeguard, see `health`): as many consecutive failed observations —
//! our own timeouts and helpers that could not reach it either — as the measured
//! failure rate demands, with no success in between, and either an independent
//! confirmation (a helper's failed probe) or a suspicion older than
//! `suspicion_timeout`. Any success clears the suspicion. A suspect that contacts us
//! (its refutation) is fetched at once.

use std::time::Duration;

use rand::seq::IteratorRandom;

use super::{Action, Core, Failure, RemoveReason};

/// Who observed a member, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Observer {
    /// This node, by a state fetch (its answer, or its timeout).
    Fetch,
    /// This node, by the leader watch's ping (short timeouts: see `health`).
    Ping,
    /// A helper asked to probe it: an independent confirmation.
    Helper,
}

impl Core {
    /// A fetch to `addr` failed (or its answer was rejected): handle the failure, then
    /// complete the fetch.
    pub(super) fn contact_failed(
        &mut self,
        now: Duration,
        addr: String,
        failure: Failure,
        out: &mut Vec<Action>,
    ) {
        self.on_failure(now, addr.clone(), failure, out);
        // Only members are worth asking again; a seed that is down waits a round.
        if !self.members.contains_key(&addr) {
            self.refetch.remove(&addr);
        }
        self.fetch_done(&addr, out);
    }

    pub(super) fn on_failure(
        &mut self,
        now: Duration,
        addr: String,
        failure: Failure,
        out: &mut Vec<Action>,
    ) {
        self.seeds_unanswered.remove(&addr);
        if self.leaving {
            return; // its membership no longer matters: no suspicion, no probes
        }
        if !self.members.contains_key(&addr) {
            return; // a seed that is down, or a candidate that never answered
        }
        match failure {
            Failure::Refused => {
                self.remove(now, &addr, None, RemoveReason::Unreachable, out);
            }
            Failure::Leaving => {
                self.release_promise(&addr);
                self.remove(now, &addr, None, RemoveReason::Left, out);
            }
            Failure::BadResponse => {
                self.remove(now, &addr, None, RemoveReason::BadResponse, out);
            }
            Failure::Timeout => self.failed_observation(&addr, Observer::Fetch, true, out),
        }
    }

    /// One failed observation of member `addr`, by this node or by a helper's probe.
    /// `suspect` says whether it starts a suspicion if none is running (a fetch's
    /// timeout does; a leader watch's first missed ping does not, see `watch`). A new
    /// suspicion sends probes; then the member is removed if the evidence suffices.
    pub(super) fn failed_observation(
        &mut self,
        addr: &str,
        by: Observer,
        suspect: bool,
        out: &mut Vec<Action>,
    ) {
        let now = self.now;
        let Some(m) = self.members.get_mut(addr) else {
            return;
        };
        if m.suspect_since.is_none() && by != Observer::Helper {
            self.health.observe(by == Observer::Ping, false);
            m.counted += 1;
        }
        let first = m.failures == 0;
        m.failures = m.failures.saturating_add(1);
        m.confirmed |= by == Observer::Helper;
        if m.suspect_since.is_none() && (suspect || by == Observer::Helper) {
            m.suspect_since = Some(now);
            self.suspects += 1;
            self.probe(addr, out);
        }
        // One dead host fails alone; a lossy link of this node's fails with everyone.
        if first && by != Observer::Helper {
            let others = self
                .members
                .iter()
                .any(|(a, m)| a != addr && m.failures > 0);
            if others {
                self.health.failures_with_several(now);
            }
        }
        self.remove_if_proven(addr, out);
    }

    /// `addr` answered (a state, a ping, or a helper's probe reached it): clear its
    /// suspicion and its count of failures.
    pub(super) fn observed_alive(&mut self, addr: &str, by: Observer) {
        if let Some(m) = self.members.get_mut(addr) {
            if m.suspect_since.is_none() && m.failures == 0 && by != Observer::Helper {
                self.health.observe(by == Observer::Ping, true);
            }
            if m.failures > 0 {
                self.health.run_ended(m.failures);
            }
            if m.suspect_since.take().is_some() {
                self.suspects -= 1;
            }
            m.failures = 0;
            m.confirmed = false;
            m.counted = 0;
        }
    }

    /// Ask up to `indirect_probes` random unsuspected members whose state we hold to
    /// ping suspect `addr`, with this node's ping timeout.
    pub(super) fn probe(&mut self, addr: &str, out: &mut Vec<Action>) {
        let k = self.cfg.indirect_probes;
        let timeout = self.health.ping_timeout(self.cfg.request_timeout);
        let helpers: Vec<String> = self
            .members
            .iter()
            .filter(|(a, m)| *a != addr && m.suspect_since.is_none() && m.state.is_some())
            .map(|(a, _)| a.clone())
            .choose_multiple(&mut self.rng, k);
        for via in helpers {
            out.push(Action::Probe {
                target: addr.to_string(),
                via,
                timeout,
            });
        }
    }

    /// Remove suspect `addr` if the evidence suffices (see the module docs).
    fn remove_if_proven(&mut self, addr: &str, out: &mut Vec<Action>) {
        let now = self.now;
        let proven = self.members.get(addr).is_some_and(|m| {
            let need = self.health.evidence_needed_excluding(m.counted);
            m.suspect_since.is_some_and(|since| {
                m.failures >= need
                    && (m.confirmed || now.saturating_sub(since) >= self.cfg.suspicion_timeout)
            })
        });
        if proven {
            self.remove(now, addr, None, RemoveReason::Timeout, out);
        }
    }

    /// The answer to a probe of `target` by a helper.
    pub(super) fn on_probe_answered(
        &mut self,
        target: &str,
        reachable: bool,
        out: &mut Vec<Action>,
    ) {
        if self.leaving {
            return;
        }
        if reachable {
            self.observed_alive(target, Observer::Helper);
        } else if self
            .members
            .get(target)
            .is_some_and(|m| m.suspect_since.is_some())
        {
            self.failed_observation(target, Observer::Helper, false, out);
        }
    }

    /// A gap between two ticks longer than `pause_threshold` means this node was frozen
    /// (SIGSTOP, a paused VM) long enough for its peers to have removed it.
    pub(super) fn check_pause(&mut self, now: Duration, wall: f64, out: &mut Vec<Action>) {
        if let Some(last) = self.last_alive() {
            if now.saturating_sub(last) > self.pause_threshold() && wall > self.start_time {
                // Our peers have given up on us while we were frozen; coming back with our
                // old seniority would take leadership back from whoever replaced us.
                tracing::warn!(
                    paused_ms = now.saturating_sub(last).as_millis() as u64,
                    "this node was paused; rejoining as the most junior member"
                );
                self.start_time = wall;
                out.push(Action::StartTimeChanged { start_time: wall });
            }
        }
    }

    /// The same check at the start of every event, not only at ticks: the first thing a
    /// node resumed from a pause handles may be an answer or a call. In quorum mode it
    /// then counts as reachable only the members it has heard from since it resumed:
    /// what it held from before is stale, and its peers have removed it meanwhile.
    pub(super) fn check_resumed(&mut self, out: &mut Vec<Action>) {
        let threshold = self.pause_threshold();
        let paused = self
            .last_alive()
            .is_some_and(|last| self.now.saturating_sub(last) > threshold);
        if paused && !self.leaving {
            let wall = self.wall_now().max(self.start_time + 1e-6);
            self.check_pause(self.now, wall, out);
            self.last_tick = Some(self.now);
            self.watch.last_event = Some(self.now);
            self.resumed_at = Some(self.now);
            self.quorum.had_quorum = false;
        }
    }

    /// Default mode: a node that lost contact (timeouts) with most of the nodes it was
    /// connected to is on the small side of a partition. It takes a new start time once,
    /// so that when the partition heals it joins the larger side as junior instead of
    /// taking leadership back (at most one leader change per node for a heal).
    pub(super) fn check_majority(&mut self, out: &mut Vec<Action>) {
        let now = self.now;
        let lost = self
            .tombstones
            .values()
            .filter(|t| t.timed_out && t.until > now)
            .count();
        let connected = 1 + self.members.len();
        if 2 * connected > connected + lost {
            self.isolated = false;
        } else if lost > 0 && !self.isolated {
            self.isolated = true;
            self.forfeit_seniority("lost contact with most of the cluster", out);
        }
    }

    /// What the failure detector has measured, for `/diag/` and `/metrics`.
    pub fn detector(&self) -> crate::wire::DetectorInfo {
        crate::wire::DetectorInfo {
            loss: self.health.loss(),
            health_score: self.health.score(),
            evidence_needed: self.health.evidence_needed(),
            ping_timeout_ms: self
                .health
                .ping_timeout(self.cfg.request_timeout)
                .as_millis() as u64,
            suspects: self.suspects,
        }
    }

    /// At a tick: remove every suspect whose evidence now suffices (its suspicion may
    /// have grown old enough), and ask helpers again about the others.
    pub(super) fn review_suspects(&mut self, out: &mut Vec<Action>) {
        if self.suspects == 0 {
            return;
        }
        let suspects: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.suspect_since.is_some())
            .map(|(a, _)| a.clone())
            .collect();
        for addr in suspects {
            self.remove_if_proven(&addr, out);
            if self.members.contains_key(&addr) {
                self.probe(&addr, out);
            }
        }
    }
}

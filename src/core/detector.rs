//! Failure detection (rule 4 of the module docs): a refused connection or a broken
//! answer removes a member at once; a timeout only makes it suspect, other members are
//! asked to probe it, and only a suspicion older than `suspicion_timeout` removes it.

use std::time::Duration;

use rand::seq::IteratorRandom;

use super::{Action, Core, Failure, RemoveReason};

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
        let Some(member) = self.members.get_mut(&addr) else {
            return; // a seed that is down, or a candidate that never answered
        };
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
            Failure::Timeout => match member.suspect_since {
                None => {
                    member.suspect_since = Some(now);
                    let k = self.cfg.indirect_probes;
                    let helpers: Vec<String> = self
                        .members
                        .iter()
                        .filter(|(a, m)| {
                            **a != addr && m.suspect_since.is_none() && m.state.is_some()
                        })
                        .map(|(a, _)| a.clone())
                        .choose_multiple(&mut self.rng, k);
                    for via in helpers {
                        out.push(Action::Probe {
                            target: addr.clone(),
                            via,
                        });
                    }
                }
                Some(since) if now.saturating_sub(since) >= self.cfg.suspicion_timeout => {
                    self.remove(now, &addr, None, RemoveReason::Timeout, out);
                }
                Some(_) => {}
            },
        }
    }

    /// A gap between two ticks longer than `pause_threshold` means this node was frozen
    /// (SIGSTOP, a paused VM) long enough for its peers to have removed it.
    pub(super) fn check_pause(&mut self, now: Duration, wall: f64, out: &mut Vec<Action>) {
        if let Some(last) = self.last_tick {
            if now.saturating_sub(last) > self.cfg.pause_threshold && wall > self.start_time {
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
        let paused = self
            .last_tick
            .is_some_and(|last| self.now.saturating_sub(last) > self.cfg.pause_threshold);
        if paused && !self.leaving {
            let wall = self.wall_now().max(self.start_time + 1e-6);
            self.check_pause(self.now, wall, out);
            self.last_tick = Some(self.now);
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

    /// Remove every member whose suspicion is older than `suspicion_timeout`.
    pub(super) fn expire_suspects(&mut self, now: Duration, out: &mut Vec<Action>) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.suspect_since
                    .is_some_and(|s| now.saturating_sub(s) >= self.cfg.suspicion_timeout)
            })
            .map(|(a, _)| a.clone())
            .collect();
        for addr in expired {
            self.remove(now, &addr, None, RemoveReason::Timeout, out);
        }
    }
}

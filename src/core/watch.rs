//! The leader watch: a fast, careful check of the one member whose loss matters most.
//!
//! A crashed process is noticed in milliseconds (its kernel refuses or closes the
//! connections), but a vanished *host* — power, kernel panic, cable — closes nothing,
//! and rounds of `interval` with a `request_timeout` and a `suspicion_timeout` took
//! 4 s to replace it. So each follower among the *watchers* pings its leader every
//! `watch_interval` (250 ms by default) with an adaptive timeout (see `health`), one
//! ping at a time. Two missed pings in a row make the leader suspect; helpers are then
//! asked to ping it too, and it is removed once the evidence suffices (three failures,
//! one of them a helper's, on a clean network) — well under a second after the host
//! went, while a lossy network or a slow watcher raises the bar (see `detector`).
//!
//! The cost stays bounded as the cluster grows: every follower watches while there are
//! at most [`ALL_WATCH_UP_TO`] members; above that only the [`WATCHERS`] most senior
//! followers do (the likely successors), and the rest learn from them through the
//! usual hints, as before.
//!
//! Because peers may now remove a silent leader this fast, a leader must notice a pause
//! of its own that fast too (rule 7): with the watch on, a leader asks to be woken
//! every `watch_interval`, and a gap of more than `watch_interval + PING_TIMEOUT_FLOOR`
//! between two of its events counts as a pause. (Followers are not watched: removing
//! one takes a state fetch's timeout and more, so they keep the classic threshold and
//! do not wake between their rounds unless they ping.) How late the wake-ups a node
//! asked for come feeds its health score: a node whose timers fire late is slow itself
//! and widens its own timeouts.

use std::time::Duration;

use super::detector::Observer;
use super::health::PING_TIMEOUT_FLOOR;
use super::{Action, Core, Failure};

/// Every follower watches the leader while the cluster has at most this many members.
pub const ALL_WATCH_UP_TO: usize = 16;

/// In larger clusters, the followers watching the leader: the most senior ones.
pub const WATCHERS: usize = 8;

/// Consecutive missed pings that make the leader suspect.
const MISSES_TO_SUSPECT: u32 = 2;

/// The watch's bookkeeping.
#[derive(Debug, Clone, Default)]
pub(super) struct Watch {
    /// The ping outstanding: to whom, and when it was sent.
    in_flight: Option<(String, Duration)>,
    /// When the next ping may be sent.
    next_at: Option<Duration>,
    /// When the core last handled an event.
    pub(super) last_event: Option<Duration>,
    /// The wake-up the core asked for after its last event, if any.
    expected_wake: Option<Duration>,
}

impl Core {
    pub(super) fn watch_enabled(&self) -> bool {
        !self.cfg.watch_interval.is_zero()
    }

    /// The gap between two events (or ticks, without the watch) that means this node
    /// was paused long enough for its peers to remove it. The runtime stops serving
    /// this node's state when its loop has not run for that long (see `api`).
    pub fn pause_threshold(&self) -> Duration {
        if self.watch_enabled() && self.leader.as_deref() == Some(self.me.as_str()) {
            self.cfg
                .pause_threshold
                .min(self.cfg.watch_interval + PING_TIMEOUT_FLOOR)
        } else {
            self.cfg.pause_threshold
        }
    }

    /// When this node was last known to run, for the pause check.
    pub(super) fn last_alive(&self) -> Option<Duration> {
        if self.watch_enabled() {
            self.watch.last_event
        } else {
            self.last_tick
        }
    }

    /// With the watch on: wake this node once a `watch_interval` after its last event.
    pub(super) fn watch_deadline(&self) -> Option<Duration> {
        if !self.watch_enabled() || self.leaving {
            return None;
        }
        // Only a leader is watched, so only a leader must notice a pause that fast.
        let leading = self.leader.as_deref() == Some(self.me.as_str());
        let beat = self
            .watch
            .last_event
            .filter(|_| leading)
            .map(|t| t + self.cfg.watch_interval);
        // The next ping, if one is due later (one due now went out with the last event).
        let ping = self
            .watch
            .next_at
            .filter(|_| self.watch.in_flight.is_none() && self.watching().is_some());
        match (beat, ping) {
            (Some(b), Some(p)) => Some(b.min(p)),
            (b, p) => b.or(p),
        }
    }

    /// At the start of every event: how late this node woke, for its health score.
    /// `wake` says the event is the wake-up the core asked for.
    pub(super) fn note_wake(&mut self, wake: bool) {
        self.health.decay(self.now);
        if !self.watch_enabled() || !wake {
            return;
        }
        if let Some(expected) = self.watch.expected_wake {
            let late = self.now.saturating_sub(expected);
            self.health.wake_lateness(late, self.cfg.watch_interval / 2);
        }
    }

    /// The leader this node watches now, if any: it follows one (not itself) and is
    /// one of the watchers.
    pub(super) fn watching(&self) -> Option<&str> {
        let leader = self.leader.as_deref()?;
        if leader == self.me || self.leaving || !self.watch_enabled() {
            return None;
        }
        if self.members.len() <= ALL_WATCH_UP_TO {
            return Some(leader);
        }
        let senior = self
            .members
            .values()
            .filter_map(|m| m.state.as_ref())
            .filter(|s| s.start_time < self.start_time)
            .count();
        (senior <= WATCHERS).then_some(leader)
    }

    /// At the end of every event: ping the watched leader if a ping is due, and note
    /// when the core wants to be woken next.
    pub(super) fn run_watch(&mut self, out: &mut Vec<Action>) {
        self.watch.last_event = Some(self.now);
        self.send_ping(out);
        self.watch.expected_wake = self.watch_deadline();
    }

    fn send_ping(&mut self, out: &mut Vec<Action>) {
        let Some(leader) = self.watching().map(str::to_string) else {
            return;
        };
        if self.watch.in_flight.is_some() || self.watch.next_at.is_some_and(|t| self.now < t) {
            return;
        }
        let timeout = self.health.ping_timeout(self.cfg.request_timeout);
        self.watch.in_flight = Some((leader.clone(), self.now));
        self.watch.next_at = Some(self.now + self.cfg.watch_interval);
        out.push(Action::Ping {
            addr: leader,
            timeout,
        });
    }

    /// The answer to the watch's ping of `addr`.
    pub(super) fn on_ping_answered(
        &mut self,
        addr: &str,
        result: Result<(), Failure>,
        out: &mut Vec<Action>,
    ) {
        let sent = match self.watch.in_flight.take() {
            Some((to, sent)) if to == addr => sent,
            other => {
                self.watch.in_flight = other;
                return;
            }
        };
        if self.leaving || !self.members.contains_key(addr) {
            return;
        }
        match result {
            Ok(()) => {
                self.health.rtt_sample(self.now.saturating_sub(sent));
                self.observed_alive(addr, Observer::Ping);
            }
            Err(Failure::Timeout) => {
                let misses = self.members.get(addr).map_or(0, |m| m.failures) + 1;
                self.failed_observation(addr, Observer::Ping, misses >= MISSES_TO_SUSPECT, out);
            }
            // Refused, a bad answer or "leaving": a state fetch tells which, and acts.
            Err(_) => self.fetch(addr.to_string(), out),
        }
    }
}

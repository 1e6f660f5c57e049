//! Lifeguard-style failure detection (memberlist, arXiv 1707.00788), the parts the
//! core needs to tell a dead peer from a lossy network or a slow self.
//!
//! * **Evidence, not time.** A member is removed after enough *consecutive* failed
//!   observations — its own timeouts and helpers' indirect probes that could not reach
//!   it — with no success in between, rather than after a fixed time. How many are
//!   enough follows the failure rate this node measures on members it does *not*
//!   suspect: on a clean LAN three (so a vanished host goes in well under a second),
//!   at 20 % loss nine, so that a live member's chance of failing that many times in a
//!   row stays below [`FALSE_REMOVAL_ODDS`] even with loss. State fetches (a 1 s
//!   timeout, which TCP's retransmissions mostly fit in) and the leader watch's pings
//!   (short timeouts, which a single retransmission can miss) fail at different rates
//!   on the same lossy network, so each has its own estimate and the higher counts.
//!   Failures also come in runs (a timed-out request takes its connection with it, and
//!   the next one must open a new one, whose lost SYN costs a second): a third estimate
//!   is the chance that a failure follows a failure, learned from runs that ended in a
//!   success — so a dead member, whose run never ends, never skews it.
//! * **Local health.** A node whose own timers fire late (an overloaded or throttled
//!   machine) cannot tell others' slowness from its own. Its *health score* (Lifeguard's
//!   LHM, 0 to [`MAX_HEALTH_SCORE`]) rises with each late wake-up and decays with each
//!   punctual one; it multiplies this node's ping timeouts and adds to the evidence it
//!   needs, so a slow node widens its own margins instead of accusing healthy peers.
//!   Failures with two members at once raise it too (one dead host fails alone; a
//!   lossy link of this node's fails with everyone), decaying by one every
//!   [`PEER_SCORE_DECAY`] without such a failure.
//! * **Adaptive timeouts.** Pings of the leader are timed from measured round trips
//!   (smoothed RTT plus four deviations, as TCP does), never below
//!   [`PING_TIMEOUT_FLOOR`] and never above the request timeout.
//!
//! Plain arithmetic on numbers the core hands in; it reads no clock.

use std::time::Duration;

/// Target odds that a live member is removed on one suspicion: the evidence needed is
/// the smallest count of consecutive failures whose probability, at the measured
/// failure rate, is below this.
pub const FALSE_REMOVAL_ODDS: f64 = 1e-6;

/// Fewest consecutive failed observations that remove a member (with an independent
/// confirmation, see `detector`), however clean the network.
pub const MIN_EVIDENCE: u32 = 3;

/// Most evidence ever required: above this the network is too lossy to run a cluster
/// on, and a dead member must still go eventually.
pub const MAX_EVIDENCE: u32 = 32;

/// Highest local health score. Timeouts are multiplied by at most `1 + 8`.
pub const MAX_HEALTH_SCORE: u32 = 8;

/// Shortest timeout of a ping of the leader: above Linux's minimum TCP retransmission
/// timeout (200 ms), so that one lost packet on a pooled connection makes an answer
/// late, not missing; and far above scheduling noise on a busy machine (tens of
/// milliseconds).
pub const PING_TIMEOUT_FLOOR: Duration = Duration::from_millis(300);

/// Weight of one observation in the failure-rate estimate (an exponentially weighted
/// average over roughly the last 200 observations: a few seconds of traffic, long enough
/// that one dead member's first timeouts barely move it).
const LOSS_WEIGHT: f64 = 0.005;

/// The same for the leader watch's pings, which come 4 a second: about the last 50.
const PING_LOSS_WEIGHT: f64 = 0.02;

/// The estimate never goes below this: a handful of clean seconds must not make the
/// next single loss count as strong evidence.
const LOSS_FLOOR: f64 = 1e-3;

/// The chance that a failure follows a failure, weight of one outcome (runs are rarer
/// than observations: about the last 20).
const RUN_WEIGHT: f64 = 0.05;

/// The part of the health score that failures with several members raise loses one
/// point this often.
pub const PEER_SCORE_DECAY: Duration = Duration::from_secs(5);

/// What this node has learned about the network and about itself.
#[derive(Debug, Clone)]
pub(super) struct Health {
    /// Estimated share of state fetches to unsuspected members that fail.
    loss: f64,
    /// Estimated share of the leader watch's pings that fail.
    ping_loss: f64,
    /// Estimated chance that an observation fails when the one before it failed.
    after_failure: f64,
    /// Lifeguard's local health multiplier from late wake-ups, 0 ..= [`MAX_HEALTH_SCORE`].
    score: u32,
    /// The part raised by failures with several members at once, and when it last
    /// rose or decayed.
    peer_score: u32,
    peer_score_at: Duration,
    /// Smoothed round-trip time of answered pings and its mean deviation, in seconds.
    srtt: Option<f64>,
    rttvar: f64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            loss: LOSS_FLOOR,
            ping_loss: LOSS_FLOOR,
            after_failure: LOSS_FLOOR,
            score: 0,
            peer_score: 0,
            peer_score_at: Duration::ZERO,
            srtt: None,
            rttvar: 0.0,
        }
    }
}

impl Health {
    /// One contact with a member that was not suspect at the time, a ping of the leader
    /// if `ping`, else a state fetch: `ok` if it answered in time.
    pub(super) fn observe(&mut self, ping: bool, ok: bool) {
        let x = if ok { 0.0 } else { 1.0 };
        let (estimate, weight) = if ping {
            (&mut self.ping_loss, PING_LOSS_WEIGHT)
        } else {
            (&mut self.loss, LOSS_WEIGHT)
        };
        *estimate = (*estimate + weight * (x - *estimate)).max(LOSS_FLOOR);
    }

    /// A run of `failures` consecutive failed observations of one member ended with a
    /// success: `failures - 1` failures followed a failure, then a success did.
    pub(super) fn run_ended(&mut self, failures: u32) {
        for followed in (0..failures).map(|i| i + 1 < failures) {
            let x = if followed { 1.0 } else { 0.0 };
            self.after_failure =
                (self.after_failure + RUN_WEIGHT * (x - self.after_failure)).max(LOSS_FLOOR);
        }
    }

    /// A failure with one member while another is failing too, at `now`.
    pub(super) fn failures_with_several(&mut self, now: Duration) {
        self.decay(now);
        self.peer_score = (self.peer_score + 1).min(MAX_HEALTH_SCORE);
        self.peer_score_at = now;
    }

    /// Let the peer part of the score decay up to `now`.
    pub(super) fn decay(&mut self, now: Duration) {
        while self.peer_score > 0 && now >= self.peer_score_at + PEER_SCORE_DECAY {
            self.peer_score -= 1;
            self.peer_score_at += PEER_SCORE_DECAY;
        }
    }

    /// A round trip measured on an answered ping (RFC 6298's estimator).
    pub(super) fn rtt_sample(&mut self, rtt: Duration) {
        let r = rtt.as_secs_f64();
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2.0;
            }
            Some(s) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (s - r).abs();
                self.srtt = Some(0.875 * s + 0.125 * r);
            }
        }
    }

    /// This node woke up `late` after it should have: a sign that it is itself slow.
    /// Lateness beyond `tolerance` raises the score by one; a punctual wake-up lowers
    /// it by one.
    pub(super) fn wake_lateness(&mut self, late: Duration, tolerance: Duration) {
        if late > tolerance {
            self.score = (self.score + 1).min(MAX_HEALTH_SCORE);
        } else {
            self.score = self.score.saturating_sub(1);
        }
    }

    /// Consecutive failed observations that remove a member: the fewest whose chance
    /// at the measured failure rate is below [`FALSE_REMOVAL_ODDS`], plus the local
    /// health score, within [`MIN_EVIDENCE`] ..= [`MAX_EVIDENCE`].
    pub(super) fn evidence_needed(&self) -> u32 {
        self.evidence_needed_excluding(0)
    }

    /// [`Health::evidence_needed`] for a member whose own `counted` latest failures
    /// went into the failure rate: without them, so that a dead member's first
    /// timeouts do not raise the bar for its own removal.
    pub(super) fn evidence_needed_excluding(&self, counted: u32) -> u32 {
        // Its own failures may have gone into either estimate: take them out of both
        // (the estimate is then, if anything, a little low for a few observations).
        let own = f64::from(counted);
        let p = (self.loss - LOSS_WEIGHT * own)
            .max(self.ping_loss - PING_LOSS_WEIGHT * own)
            .max(self.after_failure)
            .clamp(LOSS_FLOOR, 0.9);
        let n = (FALSE_REMOVAL_ODDS.ln() / p.ln()).ceil() as u32;
        (n.max(MIN_EVIDENCE) + self.score()).min(MAX_EVIDENCE)
    }

    /// Timeout for a ping of the leader: four deviations above the smoothed round trip,
    /// at least [`PING_TIMEOUT_FLOOR`], times `1 + score`, at most `cap`.
    pub(super) fn ping_timeout(&self, cap: Duration) -> Duration {
        let base = self
            .srtt
            .map(|s| Duration::from_secs_f64(s + 4.0 * self.rttvar))
            .unwrap_or(PING_TIMEOUT_FLOOR)
            .max(PING_TIMEOUT_FLOOR);
        (base * (1 + self.score())).min(cap.max(PING_TIMEOUT_FLOOR))
    }

    /// The failure-rate estimate that counts, the highest of the three (for `/diag/`).
    pub(super) fn loss(&self) -> f64 {
        self.loss.max(self.ping_loss).max(self.after_failure)
    }

    /// The local health score: late wake-ups and failures with several members.
    pub(super) fn score(&self) -> u32 {
        (self.score + self.peer_score).min(MAX_HEALTH_SCORE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_network_needs_the_minimum_evidence() {
        let mut h = Health::default();
        for _ in 0..1000 {
            h.observe(false, true);
        }
        assert_eq!(h.evidence_needed(), MIN_EVIDENCE);
    }

    #[test]
    fn loss_raises_the_evidence_so_false_removals_stay_rare() {
        let mut h = Health::default();
        for i in 0..5000 {
            h.observe(false, i % 5 != 0); // 20 % fail
        }
        let n = h.evidence_needed();
        assert!((8..=10).contains(&n), "{n} at {:.3}", h.loss());
        assert!(h.loss().powi(n as i32) < FALSE_REMOVAL_ODDS * 2.0);
    }

    #[test]
    fn one_dead_members_first_failures_barely_move_the_estimate() {
        let mut h = Health::default();
        for _ in 0..1000 {
            h.observe(false, true);
        }
        h.observe(false, false);
        h.observe(false, false);
        assert_eq!(h.evidence_needed_excluding(2), MIN_EVIDENCE);
    }

    #[test]
    fn a_slow_node_widens_its_timeouts_and_needs_more_evidence() {
        let mut h = Health::default();
        let cap = Duration::from_secs(1);
        let calm = (h.ping_timeout(cap), h.evidence_needed());
        for _ in 0..3 {
            h.wake_lateness(Duration::from_millis(300), Duration::from_millis(100));
        }
        assert_eq!(h.score(), 3);
        assert!(h.ping_timeout(cap) > calm.0);
        assert_eq!(h.evidence_needed(), calm.1 + 3);
        for _ in 0..10 {
            h.wake_lateness(Duration::ZERO, Duration::from_millis(100));
        }
        assert_eq!(h.score(), 0, "punctual wake-ups restore it");
    }

    #[test]
    fn ping_timeouts_follow_round_trips_within_floor_and_cap() {
        let mut h = Health::default();
        let cap = Duration::from_secs(1);
        for _ in 0..20 {
            h.rtt_sample(Duration::from_micros(300));
        }
        assert_eq!(h.ping_timeout(cap), PING_TIMEOUT_FLOOR);
        for _ in 0..20 {
            h.rtt_sample(Duration::from_millis(300));
        }
        let t = h.ping_timeout(cap);
        assert!(t > PING_TIMEOUT_FLOOR && t <= cap, "{t:?}");
        for _ in 0..20 {
            h.rtt_sample(Duration::from_secs(3));
        }
        assert_eq!(h.ping_timeout(cap), cap);
    }

    #[test]
    fn runs_of_failures_teach_how_often_a_failure_follows_a_failure() {
        let mut h = Health::default();
        for _ in 0..40 {
            h.run_ended(3); // two of three failures followed a failure
        }
        assert!(h.loss() > 0.5, "{}", h.loss());
        assert!(h.evidence_needed() >= 20, "{}", h.evidence_needed());
    }

    #[test]
    fn failures_with_several_members_raise_the_score_until_quiet() {
        let mut h = Health::default();
        let s = Duration::from_secs;
        h.failures_with_several(s(10));
        h.failures_with_several(s(11));
        assert_eq!(h.score(), 2);
        h.decay(s(15));
        assert_eq!(
            h.score(),
            2,
            "decays a point per PEER_SCORE_DECAY after the last rise"
        );
        h.decay(s(16));
        assert_eq!(h.score(), 1);
        h.decay(s(30));
        assert_eq!(h.score(), 0);
    }
}

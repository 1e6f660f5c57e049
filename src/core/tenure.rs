//! Leadership granted by a store: the node's half of a database lease.
//!
//! Under a store backend (PostgreSQL, see [`crate::backend`]) the store decides who
//! leads, inside its own transactions and by its own clock: the most senior live
//! eligible node holds a lease row, and every grant increments the row's term (the
//! fencing token). What is left to the node is to know, without asking, when it may no
//! longer act — the store may be unreachable exactly when that matters — and when to ask
//! again. That is this module: times in, leader changes out, no I/O.
//!
//! # The rules
//! 1. A round that started at monotonic time `sent` and reports this node as holder with
//!    `expires_in` left (by the store's clock, measured at the store's transaction
//!    start, which is after `sent`) lets the node act until
//!    `sent + expires_in × (1 − ρ) / (1 + ρ)`, ρ being [`CLOCK_RATE_BOUND`]: the store's
//!    clock may run fast and ours slow, each by up to ρ, and still the store grants the
//!    lease to nobody else before that moment. So two nodes never act at once.
//! 2. Past that moment without a renewal the node stops acting at once (its handlers
//!    hear a change to "no leader"), whether or not the store can be reached.
//! 3. A node that holds no lease knows when the holder's runs out; it asks the store
//!    again just after (`now + expires_in` + [`EXPIRY_SLACK`]) rather than at its next
//!    round, so a crashed leader is replaced within the lease plus a round trip.
//!    If it cannot ask, it stops naming that leader then.
//! 4. Giving leadership up (a step-down, a graceful leave, a failed take-over) stops
//!    acting first and only then tells the store, so there is never a moment with two.

use std::time::Duration;

use super::lease::CLOCK_RATE_BOUND;
use super::LeaderChange;

/// How long after a lease's end, as last reported, a node that may succeed asks again:
/// a margin for the store's clock being read a little after the report was made.
pub const EXPIRY_SLACK: Duration = Duration::from_millis(5);

/// The share of a reported lease a holder acts on: `(1 − ρ) / (1 + ρ)` (rule 1).
const ACT_SHARE: f64 = (1.0 - CLOCK_RATE_BOUND) / (1.0 + CLOCK_RATE_BOUND);

/// What one round with the store reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The lease holder's address, or `None` if nobody holds a running lease.
    pub holder: Option<String>,
    /// Whether the holder is this node in its current incarnation.
    pub mine: bool,
    /// The lease's term: incremented by the store on every grant.
    pub term: u64,
    /// Time left on the lease by the store's clock at the start of its transaction
    /// (zero when nobody holds it).
    pub expires_in: Duration,
}

/// The node's knowledge of the store's lease. See the module docs for the rules.
#[derive(Debug)]
pub struct Tenure {
    me: String,
    leader: Option<String>,
    term: u64,
    /// While this node holds the lease: monotonic time until which it may act.
    acting_until: Option<Duration>,
    /// While another node holds it: when its lease runs out, as last reported.
    holder_until: Option<Duration>,
}

impl Tenure {
    /// A node at `me` that has not heard from the store yet.
    pub fn new(me: impl Into<String>) -> Self {
        Tenure {
            me: me.into(),
            leader: None,
            term: 0,
            acting_until: None,
            holder_until: None,
        }
    }

    /// The leader as last reported, while its lease runs.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// The highest term this node has heard of.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// While this node acts as leader: until when (monotonic) it may.
    pub fn acting_until(&self) -> Option<Duration> {
        self.acting_until
    }

    /// Whether this node acts as leader at `now`.
    pub fn is_acting(&self, now: Duration) -> bool {
        self.acting_until.is_some_and(|t| now < t)
    }

    /// When [`Tenure::wake`] must be called next (the end of this node's lease or of the
    /// holder's), if ever.
    pub fn next_deadline(&self) -> Option<Duration> {
        match (self.acting_until, self.holder_until) {
            (Some(a), Some(h)) => Some(a.min(h)),
            (a, h) => a.or(h),
        }
    }

    /// A round that started at `sent` came back at `now` with `grant` (rules 1 and 3).
    pub fn round_done(
        &mut self,
        sent: Duration,
        now: Duration,
        grant: &Grant,
    ) -> Option<LeaderChange> {
        self.term = self.term.max(grant.term);
        if grant.mine && !grant.expires_in.is_zero() {
            let until = sent + grant.expires_in.mul_f64(ACT_SHARE);
            if until > now {
                self.acting_until = Some(until);
                self.holder_until = None;
                return self.set_leader(Some(self.me.clone()));
            }
            // The answer took longer than the lease: act on nothing.
            self.acting_until = None;
            self.holder_until = None;
            return self.set_leader(None);
        }
        self.acting_until = None;
        match &grant.holder {
            Some(holder) if !grant.mine && !grant.expires_in.is_zero() => {
                self.holder_until = Some(now + grant.expires_in + EXPIRY_SLACK);
                self.set_leader(Some(holder.clone()))
            }
            _ => {
                self.holder_until = None;
                self.set_leader(None)
            }
        }
    }

    /// A deadline from [`Tenure::next_deadline`] has come (rule 2, and rule 3 while the
    /// store cannot be asked): the lease that ran out is forgotten.
    pub fn wake(&mut self, now: Duration) -> Option<LeaderChange> {
        if self.acting_until.is_some_and(|t| now >= t) {
            self.acting_until = None;
            return self.set_leader(None);
        }
        if self.holder_until.is_some_and(|t| now >= t) {
            self.holder_until = None;
            return self.set_leader(None);
        }
        None
    }

    /// Stop acting now, before the store is told (rule 4). `None` if not acting.
    pub fn give_up(&mut self) -> Option<LeaderChange> {
        self.acting_until.take()?;
        self.set_leader(None)
    }

    fn set_leader(&mut self, leader: Option<String>) -> Option<LeaderChange> {
        if self.leader == leader {
            return None;
        }
        let previous = std::mem::replace(&mut self.leader, leader);
        Some(LeaderChange {
            me: self.me.clone(),
            previous,
            current: self.leader.clone(),
            term: self.term,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "a:1";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn held(by: Option<&str>, term: u64, left_ms: u64) -> Grant {
        Grant {
            holder: by.map(str::to_string),
            mine: by == Some(ME),
            term,
            expires_in: ms(left_ms),
        }
    }

    #[test]
    fn a_holder_acts_from_when_it_asked_less_the_clock_bound() {
        let mut t = Tenure::new(ME);
        let change = t.round_done(ms(1000), ms(1010), &held(Some(ME), 3, 3000));
        let change = change.expect("a change");
        assert!(change.gained());
        assert_eq!(change.term, 3);
        // From 1000 (the store's clock started after `sent`), not 1010, and for
        // 3000 × 0.95 / 1.05 ms of it: 3714.28… ms.
        let until = t.acting_until().expect("acting");
        assert_eq!(until.as_millis(), 1000 + 2714);
        assert!(t.is_acting(ms(3714)));
        assert!(!t.is_acting(ms(3715)));
    }

    #[test]
    fn a_holder_that_is_not_renewed_stops_at_its_deadline() {
        let mut t = Tenure::new(ME);
        t.round_done(ms(0), ms(5), &held(Some(ME), 1, 3000));
        assert_eq!(t.next_deadline().map(|d| d.as_millis()), Some(2714));
        assert_eq!(t.wake(ms(2714)), None, "not yet");
        let change = t.wake(ms(2715)).expect("stops");
        assert!(change.lost());
        assert_eq!(change.current, None);
        assert_eq!(t.leader(), None);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_renewal_moves_the_deadline_without_a_change() {
        let mut t = Tenure::new(ME);
        t.round_done(ms(0), ms(5), &held(Some(ME), 1, 3000));
        assert_eq!(
            t.round_done(ms(1000), ms(1004), &held(Some(ME), 1, 3000)),
            None
        );
        assert_eq!(t.acting_until().map(|d| d.as_millis()), Some(3714));
    }

    #[test]
    fn an_answer_slower_than_the_lease_is_not_acted_on() {
        let mut t = Tenure::new(ME);
        assert_eq!(
            t.round_done(ms(0), ms(3000), &held(Some(ME), 1, 3000)),
            None
        );
        assert!(!t.is_acting(ms(3000)));
    }

    #[test]
    fn a_follower_asks_again_just_after_the_holders_lease_ends() {
        let mut t = Tenure::new(ME);
        let change = t
            .round_done(ms(0), ms(10), &held(Some("b:1"), 4, 2000))
            .unwrap();
        assert_eq!(change.current.as_deref(), Some("b:1"));
        assert!(!change.gained());
        assert_eq!(t.next_deadline(), Some(ms(2010) + EXPIRY_SLACK));
        assert!(t.acting_until().is_none());
    }

    #[test]
    fn a_follower_that_cannot_ask_forgets_a_leader_whose_lease_ran_out() {
        let mut t = Tenure::new(ME);
        t.round_done(ms(0), ms(10), &held(Some("b:1"), 4, 2000));
        let deadline = t.next_deadline().unwrap();
        let change = t.wake(deadline).expect("forgotten");
        assert_eq!(change.previous.as_deref(), Some("b:1"));
        assert_eq!(change.current, None);
    }

    #[test]
    fn giving_up_stops_acting_at_once_and_only_when_acting() {
        let mut t = Tenure::new(ME);
        assert_eq!(t.give_up(), None);
        t.round_done(ms(0), ms(5), &held(Some(ME), 2, 3000));
        let change = t.give_up().expect("gave up");
        assert!(change.lost());
        assert!(!t.is_acting(ms(6)));
        assert_eq!(t.give_up(), None);
    }

    #[test]
    fn the_term_never_goes_back() {
        let mut t = Tenure::new(ME);
        t.round_done(ms(0), ms(5), &held(Some("b:1"), 7, 1000));
        t.round_done(ms(10), ms(15), &held(None, 5, 0));
        assert_eq!(t.term(), 7);
        assert_eq!(t.leader(), None);
    }

    #[test]
    fn a_new_holder_is_reported_once_with_its_term() {
        let mut t = Tenure::new(ME);
        t.round_done(ms(0), ms(5), &held(Some("b:1"), 7, 1000));
        let change = t
            .round_done(ms(10), ms(15), &held(Some("c:1"), 8, 3000))
            .unwrap();
        assert_eq!(change.previous.as_deref(), Some("b:1"));
        assert_eq!(change.current.as_deref(), Some("c:1"));
        assert_eq!(change.term, 8);
        assert_eq!(
            t.round_done(ms(20), ms(25), &held(Some("c:1"), 8, 2990)),
            None
        );
    }
}

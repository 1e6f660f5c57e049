//! Quorum mode: leases, promises, fencing terms and forfeited seniority.

use super::*;

const LEASE: Duration = Duration::from_secs(3);

/// A node in quorum mode (lease 3 s, so its promises last 3.316 s).
fn qnode(me: &str, start_time: f64, seed_list: &[&str], quorum: usize) -> Core {
    let cfg = CoreConfig {
        quorum,
        lease: LEASE,
        // These tests jump in time; pauses are tested elsewhere.
        pause_threshold: Duration::from_secs(600),
        ..CoreConfig::default()
    };
    Core::new(cfg, me, start_time, &seeds(seed_list), 7)
}

fn promise_len() -> Duration {
    LEASE.mul_f64((1.0 + CLOCK_RATE_BOUND) / (1.0 - CLOCK_RATE_BOUND))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A (10) with members B (20) and C (30), quorum 2, acting as leader with term 1 since
/// 4 s: B confirmed it on a fetch sent at 4 s, C has not yet.
fn acting_a() -> Core {
    let mut a = qnode(A, 10.0, &[A, B, C], 2);
    tick(&mut a, ms(0));
    recv(&mut a, ms(1), B, state(&[B, A, C], None, 20.0, 0));
    recv(&mut a, ms(2), C, state(&[C, A, B], None, 30.0, 0));
    assert_eq!(
        a.term(),
        CLAIM,
        "A claims: at least the wall clock's seconds"
    );
    assert_eq!(a.leader(), None);
    // Its claim asked both at once; they answer before they may vote (start-up).
    recv(&mut a, ms(3), B, state(&[B, A, C], None, 20.0, 0));
    recv(&mut a, ms(3), C, state(&[C, A, B], None, 30.0, 0));
    tick(&mut a, secs(4.0));
    // A claim older than two seconds of wall clock is renewed with the time.
    let claim = a.term();
    assert_eq!(claim, CLAIM + 4);
    let out = recv(
        &mut a,
        secs(4.001),
        B,
        state(&[B, A, C], Some(A), 20.0, claim),
    );
    assert!(changes(&out)[0].gained(), "{out:?}");
    a
}

/// The term of A's first claim in these tests: the test clock's wall time (1000 s +
/// monotonic time) in whole seconds, which is above every term A has seen (0).
const CLAIM: u64 = 1000;

/// B (20) following A (10) in quorum mode, C (30) the third member; A last read B's
/// vote at 4 s.
fn b_following_a() -> Core {
    let mut b = qnode(B, 20.0, &[A, B, C], 2);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B, C], None, 10.0, 1));
    recv(&mut b, ms(2), C, state(&[C, A, B], None, 30.0, 0));
    assert_eq!(b.leader(), None, "start-up promise: nobody named yet");
    assert_eq!(b.next_deadline(), Some(promise_len()));
    let out = b.handle(promise_len(), Event::Wake);
    assert_eq!(changes(&out)[0].current.as_deref(), Some(A));
    assert_eq!(b.term(), 1, "B votes with A's term");
    b.handle(
        secs(4.0),
        Event::VoteServed {
            to: A.into(),
            at: secs(4.0),
        },
    );
    b
}

#[test]
fn a_new_node_names_nobody_until_a_promise_of_its_previous_life_ran_out() {
    let mut b = qnode(B, 20.0, &[A, B], 2);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B], None, 10.0, 1));
    assert_eq!(b.leader(), None);
    let out = b.handle(promise_len() - ms(1), Event::Wake);
    assert!(changes(&out).is_empty());
    let out = b.handle(promise_len(), Event::Wake);
    assert_eq!(changes(&out)[0].current.as_deref(), Some(A));
}

#[test]
fn the_nominee_acts_only_once_a_quorum_confirmed_its_claim_term() {
    let mut a = qnode(A, 10.0, &[A, B, C], 3);
    tick(&mut a, ms(0));
    recv(&mut a, ms(1), B, state(&[B, A, C], None, 20.0, 0));
    recv(&mut a, ms(2), C, state(&[C, A, B], None, 30.0, 0));
    recv(&mut a, ms(3), B, state(&[B, A, C], None, 20.0, 0));
    recv(&mut a, ms(3), C, state(&[C, A, B], None, 30.0, 0));
    tick(&mut a, secs(4.0));
    let claim = a.term();
    let out = recv(
        &mut a,
        secs(4.001),
        B,
        state(&[B, A, C], Some(A), 20.0, claim),
    );
    assert!(changes(&out).is_empty(), "one confirmation of two needed");
    let out = recv(&mut a, secs(4.002), C, state(&[C, A, B], Some(A), 30.0, 0));
    assert!(
        changes(&out).is_empty(),
        "a vote with another term does not count"
    );
    tick(&mut a, secs(5.0));
    let out = recv(
        &mut a,
        secs(5.001),
        C,
        state(&[C, A, B], Some(A), 30.0, claim),
    );
    assert!(changes(&out)[0].gained());
    assert_eq!(changes(&out)[0].term, claim);
}

#[test]
fn a_confirmation_counts_from_when_the_fetch_was_sent_not_answered() {
    let mut a = acting_a();
    assert_eq!(a.lease_expiry(), Some(secs(7.0)), "sent at 4 s + 3 s");
    recv(&mut a, secs(4.002), C, state(&[C, A, B], None, 30.0, 0));
    tick(&mut a, secs(5.0));
    let term = a.term();
    recv(&mut a, secs(6.5), C, state(&[C, A, B], Some(A), 30.0, term));
    let end = a.lease_expiry().expect("acting");
    assert!(
        end > secs(7.0),
        "C's confirmation extends the lease: {end:?}"
    );
    assert!(
        end <= secs(5.0) + LEASE,
        "from when its fetch left (by 5 s), not from the answer at 6.5 s: {end:?}"
    );
}

#[test]
fn a_leader_stops_acting_the_moment_its_lease_runs_out() {
    let mut a = acting_a();
    assert_eq!(a.next_deadline(), Some(secs(7.0)));
    let out = a.handle(secs(6.999), Event::Wake);
    assert!(changes(&out).is_empty());
    let out = a.handle(secs(7.0), Event::Wake);
    let c = changes(&out);
    assert!(c[0].lost(), "{out:?}");
    assert_eq!(c[0].current, None);
    assert_eq!(a.lease_expiry(), None);
}

#[test]
fn a_paused_leader_steps_down_before_handling_anything_else() {
    let mut a = acting_a();
    // Resumed at 20 s: the first event is an answer that would renew the lease.
    tick(&mut a, secs(4.5));
    let term = a.term();
    let out = recv(
        &mut a,
        secs(20.0),
        B,
        state(&[B, A, C], Some(A), 20.0, term),
    );
    assert!(
        matches!(&out[0], Action::LeaderChanged(c) if c.lost()),
        "stepping down comes first: {out:?}"
    );
}

#[test]
fn a_follower_names_no_other_leader_before_its_promise_ran_out() {
    let mut b = b_following_a();
    let out = fail(&mut b, secs(4.5), A, Failure::Refused);
    assert_eq!(removed(&out), vec![(A, RemoveReason::Unreachable)]);
    assert_eq!(b.leader(), None, "B would lead now, but promised A");
    assert_eq!(
        b.next_deadline(),
        Some(secs(4.5)),
        "an event at once, then..."
    );
    b.handle(secs(4.5), Event::Wake);
    assert_eq!(b.leader(), None);
    assert_eq!(b.next_deadline(), Some(secs(4.0) + promise_len()));
    let out = b.handle(secs(4.0) + promise_len() - ms(1), Event::Wake);
    assert!(changes(&out).is_empty());
    assert!(b.leader().is_none());
}

#[test]
fn a_vote_served_while_switching_is_honoured() {
    let mut b = b_following_a();
    fail(&mut b, secs(4.5), A, Failure::Refused);
    // A read B's vote once more just before B released it.
    b.handle(
        secs(4.6),
        Event::VoteServed {
            to: A.into(),
            at: secs(4.49),
        },
    );
    assert_eq!(b.next_deadline(), Some(secs(4.49) + promise_len()));
}

#[test]
fn switching_from_one_leader_to_another_passes_through_nobody() {
    let mut b = b_following_a();
    // A more senior node D (5) appears, claiming; B's promise to A has run out.
    let later = secs(4.0) + promise_len() + ms(1);
    let out = recv(&mut b, later, D, state(&[D, A, B, C], None, 5.0, 3));
    assert_eq!(b.leader(), None, "first nobody: {out:?}");
    assert_eq!(b.next_deadline(), Some(later), "and an event right away");
    let out = b.handle(later, Event::Wake);
    assert_eq!(changes(&out)[0].current.as_deref(), Some(D));
    assert_eq!(b.term(), 3);
}

#[test]
fn a_leaver_that_answers_leaving_releases_the_promise_at_once() {
    let mut b = b_following_a();
    b.handle(secs(4.5), Event::LeaveReceived { addr: A.into() });
    let out = fail(&mut b, secs(4.501), A, Failure::Leaving);
    assert_eq!(b.leader(), None);
    // Nothing is left to wait for: B claims at once.
    assert!(
        fetches(&out).contains(&C) || b.refetch.contains(C),
        "B asks C for its vote: {out:?}"
    );
    assert!(
        b.term() > 1,
        "B's claim is above the term it voted for A with"
    );
}

#[test]
fn a_follower_votes_only_with_a_term_above_its_last_vote() {
    let mut b = b_following_a();
    fail(&mut b, secs(4.5), A, Failure::Refused);
    let later = secs(4.0) + promise_len() + ms(1);
    b.handle(later, Event::Wake);
    // C (30) would be... B itself is the nominee now; make D a candidate with term 1.
    let out = recv(&mut b, later, D, state(&[D, B, C], None, 5.0, 1));
    assert!(changes(&out).is_empty());
    b.handle(later + ms(1), Event::Wake);
    assert_eq!(
        b.leader(),
        None,
        "term 1 is the one B gave A: not again for D"
    );
    recv(&mut b, later + ms(2), D, state(&[D, B, C], None, 5.0, 2));
    b.handle(later + ms(3), Event::Wake);
    assert_eq!(b.leader(), Some(D));
}

#[test]
fn a_claimant_raises_its_term_above_a_vote_it_must_exceed() {
    let mut a = qnode(A, 10.0, &[A, B, C], 2);
    tick(&mut a, ms(0));
    recv(&mut a, ms(1), B, state(&[B, A, C], None, 20.0, 0));
    recv(&mut a, ms(2), C, state(&[C, A, B], None, 30.0, 0));
    assert_eq!(a.term(), CLAIM);
    // B once voted for someone with a term above A's claim: A must go above it.
    recv(&mut a, ms(3), B, state(&[B, A, C], None, 20.0, CLAIM + 5));
    assert_eq!(a.term(), CLAIM + 6);
    // A node naming nobody with a lower term changes nothing.
    recv(&mut a, ms(4), C, state(&[C, A, B], None, 30.0, 2));
    assert_eq!(a.term(), CLAIM + 6);
}

#[test]
fn terms_of_successive_acting_leaders_strictly_increase() {
    let mut a = acting_a();
    let first = a.term();
    // The lease lapses (no renewal), then B confirms A's new claim.
    a.handle(secs(7.0), Event::Wake);
    tick(&mut a, secs(8.0));
    let second = a.term();
    assert!(second > first, "a new claim, a new term: {second}");
    // B answers the fetch A sent before its lease lapsed (too old to count), then the
    // one A asked for meanwhile.
    let vote = state(&[B, A, C], Some(A), 20.0, second);
    let out = recv(&mut a, secs(8.001), B, vote.clone());
    assert!(changes(&out).is_empty(), "{out:?}");
    let out = recv(&mut a, secs(8.002), B, vote);
    assert!(changes(&out)[0].gained());
    assert_eq!(changes(&out)[0].term, second);
}

#[test]
fn a_node_that_loses_its_quorum_follows_nobody_and_becomes_junior() {
    let mut b = b_following_a();
    let before = b.start_time();
    fail(&mut b, secs(4.5), A, Failure::Refused);
    let out = fail(&mut b, secs(4.6), C, Failure::Refused);
    assert_eq!(b.leader(), None);
    assert!(b.start_time() > before, "B forfeits its seniority");
    assert!(out.contains(&Action::StateChanged));
    assert!(out.iter().any(
        |a| matches!(a, Action::StartTimeChanged { start_time } if *start_time == b.start_time())
    ));
    // Later it hears from C again: it follows the more senior C rather than leading.
    let later = secs(10.0);
    tick(&mut b, later);
    recv(&mut b, later, C, state(&[C, B], None, 30.0, 2));
    b.handle(later + ms(1), Event::Wake);
    assert_eq!(
        b.leader(),
        Some(C),
        "C claims with a term above B's vote for A"
    );
}

#[test]
fn a_witness_counts_toward_the_quorum() {
    let mut a = qnode(A, 10.0, &[A, B], 2);
    tick(&mut a, ms(0));
    let mut witness = state(&[B, A], None, 1.0, 0);
    witness.eligible = false;
    recv(&mut a, ms(1), B, witness.clone());
    recv(&mut a, ms(2), B, witness.clone());
    tick(&mut a, secs(4.0));
    let mut vote = witness;
    vote.leader = Some(A.into());
    vote.term = a.term();
    let out = recv(&mut a, secs(4.001), B, vote);
    assert!(changes(&out)[0].gained(), "{out:?}");
}

#[test]
fn diag_shows_the_lease() {
    let a = acting_a();
    let lease = a.diag(secs(5.0)).lease.expect("quorum mode");
    assert!(lease.acting);
    assert_eq!(lease.quorum, 2);
    assert_eq!(lease.confirmed_by, vec![B.to_string()]);
    assert_eq!(lease.expires_in_ms, Some(2000));
    assert_eq!(lease.reachable, 3);
    assert!(node(A, 1.0, &[A]).diag(ms(0)).lease.is_none());
}

#[test]
fn default_mode_a_node_cut_off_from_most_of_the_cluster_becomes_junior_once() {
    let mut a = cluster_of_three(A, Some(A));
    let before = a.start_time();
    for (i, peer) in [B, C].into_iter().enumerate() {
        let t = secs(1.0 + i as f64 * 0.01);
        fail(&mut a, t, peer, Failure::Timeout);
        tick(&mut a, t + secs(1.0)); // A keeps running: no pause
                                     // Two members failing at once raise the bar a little (that is loss, or a
                                     // partition): four failures each, the last after the suspicion timeout.
        fail(&mut a, t + secs(1.2), peer, Failure::Timeout);
        fail(&mut a, t + secs(1.5), peer, Failure::Timeout);
        fail(&mut a, t + secs(2.0), peer, Failure::Timeout);
    }
    assert_eq!(a.member_count(), 0);
    let after = a.start_time();
    assert!(after > before, "A lost B and C: it forfeits its seniority");
    assert_eq!(a.leader(), Some(A), "and leads alone, as before");
    // B alone timing out would not have done it (A keeps the majority).
    let mut a2 = cluster_of_three(A, Some(A));
    fail(&mut a2, secs(1.0), B, Failure::Timeout);
    tick(&mut a2, secs(2.0));
    fail(&mut a2, secs(2.5), B, Failure::Timeout);
    fail(&mut a2, secs(3.0), B, Failure::Timeout);
    assert_eq!(a2.member_count(), 1);
    assert_eq!(a2.start_time(), before);
}

#[test]
fn a_node_that_cannot_reach_the_leader_follows_it_on_the_word_of_a_more_senior_member() {
    // C (30) cannot reach A (10) at all; B (20) follows A.
    for quorum in [0, 2] {
        let mut c = qnode(C, 30.0, &[A, B, C], quorum);
        tick(&mut c, ms(0));
        fail(&mut c, ms(1), A, Failure::Timeout);
        recv(&mut c, ms(2), B, state(&[B, A, C], Some(A), 20.0, 1));
        c.handle(promise_len(), Event::Wake);
        assert!(!c.is_member(A));
        assert_eq!(
            c.leader(),
            Some(A),
            "quorum {quorum}: one view of the leader"
        );
        // Once B follows someone C can reach (itself), so does C.
        let later = promise_len() + secs(10.0);
        recv(&mut c, later, B, state(&[B, C], None, 20.0, 2));
        c.handle(later + ms(1), Event::Wake);
        c.handle(later + ms(2), Event::Wake);
        assert_eq!(c.leader(), Some(B), "quorum {quorum}");
    }
}

#[test]
fn a_peer_reporting_the_largest_term_cannot_overflow_it() {
    // Such a term is rejected (see `hostile`) unless this node's own wall clock reads
    // beyond u64::MAX seconds; even then, no term arithmetic overflows.
    let far = 1e20;
    // Default mode: the next change would add one to u64::MAX.
    let mut b = node(B, 20.0, &[A, B]);
    b.handle(ms(0), Event::Tick { wall: far });
    recv(&mut b, ms(1), A, state(&[A, B], Some(A), 10.0, u64::MAX));
    fail(&mut b, ms(2), A, Failure::Refused);
    assert_eq!(b.term(), u64::MAX);
    // Quorum mode: a claim above u64::MAX.
    let mut a = qnode(A, 10.0, &[A, B], 2);
    a.handle(ms(0), Event::Tick { wall: far });
    recv(&mut a, ms(1), B, state(&[B, A], None, 20.0, u64::MAX));
    assert_eq!(a.term(), u64::MAX);
    assert_eq!(a.terms_rejected() + b.terms_rejected(), 0);
}

#[test]
fn a_leaderless_node_fetches_its_nominee_when_it_calls() {
    // C (30) follows nobody yet; B (20) is its nominee and calls with a new claim.
    let mut c = qnode(C, 30.0, &[B, C], 2);
    tick(&mut c, ms(0));
    recv(&mut c, ms(1), B, state(&[B, C], None, 20.0, 0));
    c.handle(ms(2), Event::Wake);
    let out = c.handle(ms(3), Event::Announced { addr: B.into() });
    assert_eq!(
        fetches(&out),
        vec![B],
        "C asks B, its nominee, for its claim"
    );
}

#[test]
fn a_follower_whose_last_vote_went_to_a_failed_claim_follows_the_acting_leader() {
    // B voted for A's claim (term 1004), then A's claim failed; C acts with the same
    // term (terms start from the wall clock's seconds: two claims can collide).
    let mut b = b_following_a();
    let voted = b.term();
    fail(&mut b, secs(4.5), A, Failure::Refused);
    let later = secs(4.0) + promise_len() + ms(1);
    b.handle(later, Event::Wake);
    recv(&mut b, later, C, state(&[C, B], Some(C), 5.0, voted));
    b.handle(later + ms(1), Event::Wake);
    assert_eq!(
        b.leader(),
        Some(C),
        "C acts: B follows it rather than nobody"
    );
    // A candidate that does not act yet still needs a term above B's vote.
    let mut b = b_following_a();
    fail(&mut b, secs(4.5), A, Failure::Refused);
    b.handle(later, Event::Wake);
    recv(&mut b, later, C, state(&[C, B], None, 5.0, voted));
    b.handle(later + ms(1), Event::Wake);
    assert_eq!(b.leader(), None);
}

#[test]
fn a_node_resumed_from_a_pause_counts_only_members_heard_from_since() {
    let cfg = CoreConfig {
        quorum: 2,
        lease: LEASE,
        pause_threshold: Duration::from_secs(3),
        ..CoreConfig::default()
    };
    let mut b = Core::new(cfg, B, 20.0, &seeds(&[A, B, C]), 7);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B, C], None, 10.0, 0));
    recv(&mut b, ms(2), C, state(&[C, A, B], None, 30.0, 0));
    assert_eq!(b.reach(), 3);
    // Frozen from 0 s to 8 s; the first thing it handles is a (stale) answer from C.
    let out = recv(&mut b, secs(8.0), C, state(&[C, A, B], None, 30.0, 0));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::StartTimeChanged { .. })),
        "the pause is noticed at the first event, not the next tick: {out:?}"
    );
    assert_eq!(
        b.reach(),
        2,
        "B itself and C, heard from since it resumed; not A"
    );
}

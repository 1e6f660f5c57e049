//! Hostile peers: announcements of addresses to fetch back are bounded, and states
//! with implausible terms are rejected.

use super::*;

/// `n{i}:1`: distinct addresses, none of them a member.
fn addr(i: usize) -> String {
    format!("n{i}:1")
}

fn announce(core: &mut Core, now: Duration, addr: &str) -> Vec<Action> {
    core.handle(now, Event::Announced { addr: addr.into() })
}

#[test]
fn a_burst_of_announcements_fetches_back_at_most_the_bound() {
    let mut core = node(A, 1.0, &[A]);
    tick(&mut core, ms(0));
    let mut fetched = 0;
    for i in 0..1000 {
        fetched += fetches(&announce(&mut core, ms(1), &addr(i))).len();
    }
    assert_eq!(fetched, MAX_ANNOUNCE_FETCHES.min(ANNOUNCE_BURST as usize));
    assert_eq!(core.announces_dropped(), 1000 - fetched as u64);
    assert_eq!(core.member_count(), 0, "announcing adds nobody");
}

#[test]
fn outstanding_fetch_backs_are_bounded_even_with_tokens_to_spare() {
    let mut core = node(A, 1.0, &[A]);
    tick(&mut core, ms(0));
    let mut fetched = 0;
    // Slow enough for the bucket to refill in between, but nothing answers.
    for i in 0..100 {
        fetched += fetches(&announce(&mut core, ms(1000 * i as u64), &addr(i))).len();
    }
    assert_eq!(fetched, MAX_ANNOUNCE_FETCHES);
    // One fetch-back fails: its slot is free again.
    fail(&mut core, ms(100_000), &addr(0), Failure::Refused);
    assert_eq!(
        fetches(&announce(&mut core, ms(100_001), &addr(500))),
        vec![addr(500)]
    );
    assert!(fetches(&announce(&mut core, ms(100_002), &addr(501))).is_empty());
}

#[test]
fn more_fetch_backs_are_allowed_as_time_passes() {
    let mut core = node(A, 1.0, &[A]);
    tick(&mut core, ms(0));
    let mut next = 0;
    let mut burst = |core: &mut Core, now: Duration| {
        let mut fetched = Vec::new();
        for _ in 0..100 {
            let a = addr(next);
            next += 1;
            fetched.extend(
                fetches(&announce(core, now, &a))
                    .into_iter()
                    .map(String::from),
            );
        }
        fetched
    };
    let first = burst(&mut core, ms(1));
    assert_eq!(first.len(), ANNOUNCE_BURST as usize);
    for a in &first {
        fail(&mut core, ms(2), a, Failure::Refused);
    }
    assert!(burst(&mut core, ms(3)).is_empty(), "the bucket is empty");
    // Half a second refills 4 tokens.
    let later = burst(&mut core, ms(503));
    assert_eq!(later.len(), (ANNOUNCE_REFILL_PER_SEC / 2.0) as usize);
    for a in &later {
        fail(&mut core, ms(504), a, Failure::Refused);
    }
    // A long quiet spell refills the bucket, but never beyond its burst.
    assert_eq!(burst(&mut core, ms(60_000)).len(), ANNOUNCE_BURST as usize);
}

#[test]
fn a_members_announcement_still_fetches_it_when_needed() {
    // A (10) nominates itself and waits for B's and C's votes: their calls are how it
    // hears of them, whatever outsiders did before.
    let mut core = cluster_of_three(A, None);
    assert_eq!(core.leader(), None);
    for i in 0..1000 {
        announce(&mut core, ms(4), &addr(i));
    }
    assert!(core.announces_dropped() > 0);
    assert!(core.is_member(B));
    let out = announce(&mut core, ms(5), B);
    assert_eq!(fetches(&out), vec![B]);
}

/// Wall-clock seconds of [`tick`] at `now`.
fn wall_secs(now: Duration) -> u64 {
    1000 + now.as_secs()
}

#[test]
fn a_state_with_an_implausible_term_is_rejected_as_a_bad_response() {
    let day = 86_400;
    for bad in [u64::MAX, wall_secs(ms(1)) + 2 * day, 999_999_999_999] {
        // C follows A with term 1; D, a seed, answers for the first time with `bad`.
        let mut c = node(C, 30.0, &[A, B, C, D]);
        tick(&mut c, ms(0));
        recv(&mut c, ms(1), A, state(&[A, B, C], Some(A), 10.0, 1));
        recv(&mut c, ms(1), B, state(&[B, A, C], Some(A), 20.0, 1));
        fail(&mut c, ms(1), D, Failure::Timeout);
        assert_eq!(c.leader(), Some(A));
        let term = c.term();
        let out = recv(&mut c, ms(2), D, state(&[D, A, B, C], Some(D), 5.0, bad));
        assert!(!c.is_member(D), "term {bad}: not added");
        assert!(fetches(&out).is_empty() && changes(&out).is_empty());
        assert_eq!((c.leader(), c.term()), (Some(A), term), "term {bad}");
        assert_eq!(c.terms_rejected(), 1);
        // A member that starts sending such terms is removed, as for a broken answer.
        let out = recv(&mut c, ms(3), B, state(&[B, A, C], Some(A), 20.0, bad));
        assert_eq!(removed(&out), vec![(B, RemoveReason::BadResponse)]);
        assert_eq!((c.leader(), c.term()), (Some(A), term), "term {bad}");
        assert_eq!(c.terms_rejected(), 2);
    }
}

#[test]
fn a_term_slightly_ahead_of_the_wall_clock_is_accepted() {
    let mut c = node(C, 30.0, &[A, C]);
    tick(&mut c, ms(0));
    let ahead = wall_secs(ms(1)) + 10;
    recv(&mut c, ms(1), A, state(&[A, C], Some(A), 10.0, ahead));
    assert!(c.is_member(A));
    assert_eq!(c.leader(), Some(A));
    assert_eq!(c.term(), ahead, "its term is taken up");
    assert_eq!(c.terms_rejected(), 0);
}

#[test]
fn before_its_first_tick_a_node_measures_terms_against_its_start_time() {
    let start = 1_700_000_000.0;
    let mut c = node(C, start, &[A, C]);
    let limit = start as u64 + MAX_TERM_LEAD_SECS;
    recv(&mut c, ms(1), A, state(&[A, C], None, 10.0, limit + 1));
    assert!(!c.is_member(A));
    recv(&mut c, ms(2), A, state(&[A, C], None, 10.0, limit));
    assert!(c.is_member(A));
    assert_eq!(c.terms_rejected(), 1);
}

#[test]
fn quorum_mode_an_implausible_term_moves_no_claim() {
    let cfg = CoreConfig {
        quorum: 2,
        ..CoreConfig::default()
    };
    let mut a = Core::new(cfg, A, 10.0, &seeds(&[A, B, C]), 7);
    tick(&mut a, ms(0));
    recv(&mut a, ms(1), B, state(&[B, A, C], None, 20.0, 0));
    recv(&mut a, ms(1), C, state(&[C, A, B], None, 30.0, 0));
    let term = a.term();
    assert!(
        term >= wall_secs(ms(0)),
        "A claims with the wall clock's seconds"
    );
    recv(&mut a, ms(2), B, state(&[B, A, C], None, 20.0, u64::MAX));
    assert_eq!(a.term(), term, "the claim is not outbid by a bogus term");
    assert!(!a.is_member(B));
    assert!(a.term() <= wall_secs(ms(2)) + 1);
}

#[test]
fn another_address_of_this_node_is_not_added_as_a_member() {
    let mut core = node(A, 1.0, &[A]);
    tick(&mut core, ms(0));
    // Someone announces an alias of A; fetched back, it answers with A's own state.
    let alias = "[::1]:1";
    assert_eq!(fetches(&announce(&mut core, ms(1), alias)), vec![alias]);
    let own = core.state();
    recv(&mut core, ms(2), alias, own);
    assert_eq!(core.member_count(), 0, "A is not its own peer");
    assert!(
        fetches(&announce(&mut core, ms(5_000), alias)).is_empty(),
        "a known alias is not asked again"
    );
    // A real peer listing A first (as a Python node might) is still a member.
    let peer = state(&[A, B], None, 0.5, 0);
    recv(&mut core, ms(3), B, peer);
    assert_eq!(core.member_count(), 1);
}

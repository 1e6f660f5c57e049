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

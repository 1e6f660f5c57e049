//! Stepping down on purpose ([`Event::Relinquish`]): the leader forfeits its seniority,
//! names the next most senior node and asks every member to check it at once; the
//! successor keeps following the old leader until it is confirmed, so every node sees
//! one leader change, with a higher term; a node that is not the leader changes nothing.

use super::*;

/// A (10) leads, confirmed by B (20) and C (30), with term 1.
fn a_leading() -> Core {
    let mut a = cluster_of_three(A, Some(A));
    settle(
        &mut a,
        ms(3),
        &[
            (B, state(&[B, A, C], Some(A), 20.0, 1)),
            (C, state(&[C, A, B], Some(A), 30.0, 1)),
        ],
    );
    assert_eq!(a.leader(), Some(A));
    a
}

fn notified(actions: &[Action]) -> Vec<&str> {
    let mut to: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify { addr } => Some(addr.as_str()),
            _ => None,
        })
        .collect();
    to.sort_unstable();
    to
}

/// A's state after it stepped down at wall-clock 2000 in B's favour, with term 2.
fn a_handed_over() -> PeerState {
    state(&[A, B, C], Some(B), 2000.0, 2)
}

#[test]
fn a_leader_that_relinquishes_takes_a_new_start_time_names_the_next_most_senior_and_notifies_all() {
    let mut a = a_leading();
    let term = a.term();
    let out = a.handle(ms(10), Event::Relinquish { wall: 2000.0 });
    let changed = changes(&out);
    assert_eq!(changed.len(), 1, "one change: {out:?}");
    assert!(changed[0].lost());
    assert_eq!(changed[0].current.as_deref(), Some(B), "straight to B");
    assert!(a.term() > term, "the term moves on (fencing)");
    assert_eq!(a.start_time(), 2000.0);
    assert!(a.eligible(), "junior, not ineligible");
    assert_eq!(notified(&out), vec![B, C], "every member checks A now");
    assert!(out.contains(&Action::StartTimeChanged { start_time: 2000.0 }));
}

#[test]
fn a_node_that_is_not_the_leader_changes_nothing_when_asked_to_relinquish() {
    let mut b = b_following_a();
    let (start, term) = (b.start_time(), b.term());
    let out = b.handle(ms(10), Event::Relinquish { wall: 2000.0 });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        (b.start_time(), b.term(), b.leader()),
        (start, term, Some(A))
    );
}

#[test]
fn a_relinquishing_leader_becomes_junior_to_every_member_even_with_a_clock_behind() {
    let mut a = a_leading();
    a.handle(ms(10), Event::Relinquish { wall: 5.0 });
    assert!(a.start_time() > 30.0, "junior to C: {}", a.start_time());
    assert_eq!(a.leader(), Some(B));
}

#[test]
fn the_successor_follows_the_old_leader_until_confirmed_then_leads_one_change_later() {
    let mut b = b_following_a();
    let out = b.handle(ms(100), Event::LeaveReceived { addr: A.into() });
    assert_eq!(fetches(&out), vec![A], "the notice: check A now");
    let out = recv(&mut b, ms(101), A, a_handed_over());
    assert!(
        changes(&out).is_empty(),
        "no flap through no leader: {out:?}"
    );
    assert_eq!(b.leader(), Some(A), "A handed over; B waits for C's vote");
    assert!(fetches(&out).contains(&C), "and asks C for it now: {out:?}");
    let out = recv(&mut b, ms(102), C, state(&[C, A, B], Some(B), 30.0, 2));
    let changed = changes(&out);
    assert_eq!(changed.len(), 1);
    assert!(changed[0].gained());
    assert_eq!(changed[0].previous.as_deref(), Some(A));
    assert_eq!(b.term(), 2);
}

#[test]
fn a_follower_hearing_the_old_leader_hand_over_adopts_the_successor_at_once() {
    let mut c = node(C, 30.0, &[A, B, C]);
    tick(&mut c, ms(0));
    recv(&mut c, ms(1), A, state(&[A, B, C], Some(A), 10.0, 1));
    recv(&mut c, ms(2), B, state(&[B, A, C], Some(A), 20.0, 1));
    assert_eq!(c.leader(), Some(A));
    c.handle(ms(100), Event::LeaveReceived { addr: A.into() });
    let out = recv(&mut c, ms(101), A, a_handed_over());
    let changed = changes(&out);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].current.as_deref(), Some(B));
    assert_eq!(c.term(), 2);
    assert!(fetches(&out).contains(&B), "tells B its vote at once");
}

#[test]
fn the_old_leader_does_not_take_leadership_back() {
    let mut a = a_leading();
    a.handle(ms(10), Event::Relinquish { wall: 2000.0 });
    recv(&mut a, ms(11), B, state(&[B, A, C], Some(B), 20.0, 2));
    recv(&mut a, ms(12), C, state(&[C, A, B], Some(B), 30.0, 2));
    let out = tick(&mut a, ms(1000));
    assert!(changes(&out).is_empty());
    assert_eq!(a.leader(), Some(B));
}

#[test]
fn a_leader_with_no_one_to_hand_over_to_changes_nothing() {
    let mut alone = node(A, 10.0, &[A]);
    tick(&mut alone, ms(0));
    assert_eq!(alone.leader(), Some(A));
    assert!(alone
        .handle(ms(1), Event::Relinquish { wall: 2000.0 })
        .is_empty());
    assert_eq!(alone.start_time(), 10.0);

    let mut a = node(A, 10.0, &[A, B]);
    tick(&mut a, ms(0));
    let mut witness = state(&[B, A], Some(A), 20.0, 1);
    witness.eligible = false;
    recv(&mut a, ms(1), B, witness);
    assert_eq!(a.leader(), Some(A));
    let out = a.handle(ms(2), Event::Relinquish { wall: 2000.0 });
    assert!(out.is_empty(), "a witness cannot take over: {out:?}");
    assert_eq!((a.start_time(), a.leader()), (10.0, Some(A)));
}

//! The join rules at scale (`core::join`): learned addresses are fetched within a
//! per-round budget, the leader a peer names at once; unchanged states are not scanned
//! again; a node publishes the members it removed.

use super::*;

/// `count` addresses `x{i}:1`.
fn many(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("x{i}:1")).collect()
}

fn list_state(from: &str, others: &[String], leader: Option<&str>, revision: u64) -> PeerState {
    let mut members = vec![from.to_string()];
    members.extend(others.iter().cloned());
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let mut s = state(&refs, leader, 2.0, 1);
    s.revision = revision;
    s
}

/// A (start time 1) seeded with B, after its first tick, and `count` addresses.
fn joining(count: usize) -> (Core, Vec<String>) {
    let mut core = node(A, 1.0, &[A, B]);
    tick(&mut core, ms(0));
    (core, many(count))
}

#[test]
fn learned_addresses_are_fetched_within_a_budget_per_round() {
    let (mut core, others) = joining(3 * LEARN_PER_ROUND);
    let out = recv(&mut core, ms(1), B, list_state(B, &others, None, 5));
    assert_eq!(
        fetches(&out).len(),
        LEARN_PER_ROUND,
        "one round's budget, not the whole list"
    );
    assert_eq!(core.members().collect::<Vec<_>>(), vec![B], "rule 3 holds");
    // The answers fail. The in-flight bound would now allow more, but this round's
    // budget is spent: a new list from B fetches nobody until the next round.
    for a in fetches(&out)
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
    {
        fail(&mut core, ms(2), &a, Failure::Timeout);
    }
    let out = recv(&mut core, ms(3), B, list_state(B, &others, None, 6));
    assert!(fetches(&out).is_empty(), "budget spent: {out:?}");
    let out = tick(&mut core, ms(1000));
    assert!(fetches(&out).contains(&B));
    let out = recv(&mut core, ms(1001), B, list_state(B, &others, None, 7));
    assert_eq!(
        fetches(&out).len(),
        LEARN_PER_ROUND,
        "a new round, a new budget"
    );
}

#[test]
fn the_leader_a_peer_names_is_fetched_beyond_the_budget() {
    let (mut core, others) = joining(2 * LEARN_PER_ROUND);
    recv(&mut core, ms(1), B, list_state(B, &others, None, 5));
    let leader = others.last().unwrap().clone();
    let out = recv(
        &mut core,
        ms(2),
        B,
        list_state(B, &others, Some(&leader), 6),
    );
    assert_eq!(fetches(&out), vec![leader.as_str()]);
    assert!(
        !core.is_member(&leader),
        "named, not yet heard from: not a member"
    );
}

#[test]
fn an_unchanged_state_is_not_scanned_again() {
    let (mut core, others) = joining(2 * LEARN_PER_ROUND);
    let out = recv(&mut core, ms(1), B, list_state(B, &others, None, 5));
    assert_eq!(fetches(&out).len(), LEARN_PER_ROUND);
    // Those answer and become members; the budget is refilled.
    for a in fetches(&out)
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
    {
        recv(&mut core, ms(2), &a, state(&[&a, A], None, 3.0, 0));
    }
    tick(&mut core, ms(1000));
    // B still lists more nodes than A knows: even unchanged, its list names someone new.
    let out = recv(&mut core, ms(1001), B, list_state(B, &others, None, 5));
    assert_eq!(fetches(&out).len(), LEARN_PER_ROUND);
    // A list no longer than our own, with the revision we hold, is not read again.
    let short: Vec<String> = many(LEARN_PER_ROUND)
        .into_iter()
        .chain(["new:1".to_string()])
        .collect();
    let mut unchanged = list_state(B, &short, None, 5);
    unchanged.members.truncate(LEARN_PER_ROUND + 1);
    unchanged.members.push("new:1".into());
    // (The fetches that scan sent fail, so that the bound on outstanding fetches leaves
    // room.)
    let pending: Vec<String> = core.in_flight.iter().cloned().collect();
    for a in pending
        .iter()
        .filter(|a| !core.is_member(a))
        .cloned()
        .collect::<Vec<_>>()
    {
        fail(&mut core, ms(1500), &a, Failure::Timeout);
    }
    tick(&mut core, ms(2000));
    let out = recv(&mut core, ms(2001), B, unchanged.clone());
    assert!(
        !fetches(&out).contains(&"new:1"),
        "same revision: not compared again: {out:?}"
    );
    unchanged.revision = 6;
    let out = recv(&mut core, ms(2002), B, unchanged);
    assert!(fetches(&out).contains(&"new:1"), "a new revision is read");
}

#[test]
fn a_node_publishes_the_members_it_removed_and_bumps_its_revision() {
    let mut core = cluster_of_three(A, Some(A));
    let before = core.state();
    assert!(before.removed.is_empty());
    let out = fail(&mut core, ms(10), B, Failure::Refused);
    assert!(out.iter().any(|a| matches!(a, Action::StateChanged)));
    let after = core.state();
    assert_eq!(after.removed, vec![B.to_string()]);
    assert!(
        after.revision > before.revision,
        "a changed state has a new revision"
    );
    // The tombstone expires: the list shrinks, and that is a change too.
    let out = tick(
        &mut core,
        ms(10) + CoreConfig::default().rejoin_holdoff + ms(1),
    );
    assert!(
        out.iter().any(|a| matches!(a, Action::StateChanged)),
        "{out:?}"
    );
    assert!(core.state().removed.is_empty());
}

#[test]
fn hints_name_only_our_own_members_and_are_bounded() {
    let mut core = cluster_of_three(A, Some(A));
    tick(&mut core, ms(1000));
    let (b, c) = (
        state(&[B, A, C], Some(A), 20.0, 1),
        state(&[C, A, B], Some(A), 30.0, 1),
    );
    settle(&mut core, ms(1001), &[(B, b), (C, c)]);
    let mut s = state(&[B, A], Some(A), 20.0, 1);
    s.removed = many(1000);
    s.removed.push(C.to_string());
    s.revision = 9;
    let out = recv(&mut core, ms(1002), B, s);
    assert_eq!(
        fetches(&out),
        vec![C],
        "a stranger's word makes us contact only our members"
    );
}

#[test]
fn a_state_with_our_own_members_digest_is_not_scanned() {
    let (mut core, _) = joining(0);
    recv(&mut core, ms(1), B, state(&[B, A], None, 2.0, 0));
    // The digest says B lists exactly A and B (a hint: here it is wrong on purpose).
    let mut s = state(&[B, A, "x:1"], None, 2.0, 0);
    s.members_digest = core.members_digest();
    s.revision = 3;
    assert!(
        !core.reads_members(B, &s),
        "the simulator may drop the list"
    );
    let listless = PeerState {
        members: Vec::new(),
        ..s.clone()
    };
    assert!(!core.reads_listed(B, s.members.len(), &listless));
    let out = recv(&mut core, ms(2), B, s.clone());
    assert!(
        fetches(&out).is_empty(),
        "same digest, nothing new: {out:?}"
    );
    // Without the digest (a Python peer), the list is read.
    s.members_digest = 0;
    s.revision = 4;
    assert!(core.reads_members(B, &s));
    let listless = PeerState {
        members: Vec::new(),
        ..s.clone()
    };
    assert!(core.reads_listed(B, s.members.len(), &listless));
    let out = recv(&mut core, ms(3), B, s);
    assert_eq!(fetches(&out), vec!["x:1"]);
}

#[test]
fn the_cached_nominee_is_the_one_a_scan_finds() {
    let mut core = node(A, 50.0, &[B]);
    let check = |core: &mut Core, what: &str| {
        let cached = core.nominee();
        *core.nominee_cache.borrow_mut() = None;
        assert_eq!(core.nominee(), cached, "after {what}");
    };
    core.nominee();
    let peers = [
        ("p1:1", 60.0, true),
        ("p2:1", 40.0, false),
        ("p3:1", 30.0, true),
        ("p4:1", 30.0, true),
        ("p5:1", 70.0, true),
    ];
    for (i, (addr, start, eligible)) in peers.into_iter().enumerate() {
        let mut s = state(&[addr, A], None, start, 0);
        s.eligible = eligible;
        recv(&mut core, ms(i as u64), addr, s);
        check(&mut core, addr);
    }
    // The nominee changes its start time, then leaves; another member is removed.
    recv(
        &mut core,
        ms(10),
        "p3:1",
        state(&["p3:1", A], None, 80.0, 0),
    );
    check(&mut core, "p3 restarted");
    let mut s = state(&["p4:1", A], None, 30.0, 0);
    s.leaving = true;
    recv(&mut core, ms(11), "p4:1", s);
    check(&mut core, "p4 left");
    fail(&mut core, ms(12), "p1:1", Failure::Refused);
    check(&mut core, "p1 refused");
    fail(&mut core, ms(13), "p2:1", Failure::Refused);
    check(&mut core, "p2 refused");
}

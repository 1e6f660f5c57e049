//! Unit tests of the LES rules against the pure core: events in, actions out.

use super::*;

const A: &str = "a:1";
const B: &str = "b:1";
const C: &str = "c:1";
const D: &str = "d:1";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn state(members: &[&str], leader: Option<&str>, start_time: f64, term: u64) -> PeerState {
    PeerState {
        members: members.iter().map(|s| s.to_string()).collect(),
        leader: leader.map(str::to_string),
        start_time,
        term,
        eligible: true,
        leaving: false,
        name: None,
        version: None,
        cluster: None,
        revision: 0,
        removed: vec![],
        members_digest: 0,
    }
}

fn seeds(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn node(me: &str, start_time: f64, seed_list: &[&str]) -> Core {
    Core::new(CoreConfig::default(), me, start_time, &seeds(seed_list), 7)
}

fn tick(core: &mut Core, now: Duration) -> Vec<Action> {
    core.handle(
        now,
        Event::Tick {
            wall: 1000.0 + now.as_secs_f64(),
        },
    )
}

fn recv(core: &mut Core, now: Duration, from: &str, s: PeerState) -> Vec<Action> {
    core.handle(
        now,
        Event::StateReceived {
            from: from.into(),
            state: s,
        },
    )
}

fn fail(core: &mut Core, now: Duration, addr: &str, failure: Failure) -> Vec<Action> {
    core.handle(
        now,
        Event::ContactFailed {
            addr: addr.into(),
            failure,
        },
    )
}

fn fetches(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::FetchState { addr } => Some(addr.as_str()),
            _ => None,
        })
        .collect()
}

fn changes(actions: &[Action]) -> Vec<&LeaderChange> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::LeaderChanged(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn removed(actions: &[Action]) -> Vec<(&str, RemoveReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::MemberRemoved { addr, reason } => Some((addr.as_str(), *reason)),
            _ => None,
        })
        .collect()
}

/// Answer every outstanding fetch from `peers` (or as refused), until none is left.
fn settle(core: &mut Core, now: Duration, peers: &[(&str, PeerState)]) {
    for _ in 0..20 {
        let pending: Vec<String> = core.in_flight.iter().cloned().collect();
        if pending.is_empty() {
            return;
        }
        for addr in pending {
            match peers.iter().find(|(a, _)| *a == addr) {
                Some((_, st)) => recv(core, now, &addr, st.clone()),
                None => fail(core, now, &addr, Failure::Refused),
            };
        }
    }
    panic!("fetches did not settle");
}

/// Answer every fetch in `first`, and every fetch those answers cause, for a cluster of
/// nodes named `n{i}:1` with start time `i`, all following `n0:1`.
fn answer_numbered(core: &mut Core, now: Duration, members: &[&str], first: &[Action]) {
    let mut pending: Vec<String> = fetches(first).into_iter().map(String::from).collect();
    while let Some(addr) = pending.pop() {
        let out = recv(
            core,
            now,
            &addr,
            state(members, Some("n0:1"), index_of(&addr), 1),
        );
        pending.extend(fetches(&out).into_iter().map(String::from));
    }
}

/// The `i` of `n{i}:1`.
fn index_of(addr: &str) -> f64 {
    addr[1..addr.len() - 2]
        .parse()
        .expect("a numbered test address")
}

/// `me` (start time 10) with members B (20) and C (30) whose states name `leader`.
fn cluster_of_three(me: &str, leader: Option<&str>) -> Core {
    let mut core = node(me, 10.0, &[me, B, C]);
    tick(&mut core, ms(0));
    recv(&mut core, ms(1), B, state(&[B, me, C], leader, 20.0, 1));
    recv(&mut core, ms(2), C, state(&[C, me, B], leader, 30.0, 1));
    core
}

#[test]
fn first_tick_fetches_every_seed_except_itself() {
    let mut core = node(A, 1.0, &[A, B, C]);
    let out = tick(&mut core, ms(0));
    assert_eq!(fetches(&out), vec![B, C]);
    assert_eq!(core.leader(), None);
}

#[test]
fn a_fetch_already_outstanding_is_not_repeated() {
    let mut core = node(A, 1.0, &[A, B]);
    assert_eq!(fetches(&tick(&mut core, ms(0))), vec![B]);
    assert!(fetches(&tick(&mut core, ms(500))).is_empty());
    let out = fail(&mut core, ms(600), B, Failure::Timeout);
    assert!(
        fetches(&out).is_empty(),
        "a seed that is down waits for the next round"
    );
    assert_eq!(fetches(&tick(&mut core, ms(1000))), vec![B]);
}

#[test]
fn a_fetch_asked_for_while_one_is_outstanding_follows_the_answer() {
    // A's fetch to C is in flight when C's vote arrives (C contacts A): the answer in
    // flight may predate the vote, so A fetches again as soon as it lands.
    let mut core = cluster_of_three(A, None);
    tick(&mut core, ms(1000)); // B and C in flight
    let out = core.handle(ms(1001), Event::Announced { addr: C.into() });
    assert!(
        fetches(&out).is_empty(),
        "never two fetches to one peer at once"
    );
    let out = recv(&mut core, ms(1002), C, state(&[C, A, B], None, 30.0, 1));
    assert_eq!(fetches(&out), vec![C]);
    let out = recv(&mut core, ms(1003), C, state(&[C, A, B], None, 30.0, 1));
    assert!(fetches(&out).is_empty(), "only once");
}

#[test]
fn no_election_before_hearing_from_another_node() {
    let mut core = node(A, 1.0, &[A, B]);
    tick(&mut core, ms(0));
    let out = fail(&mut core, ms(1), B, Failure::Refused);
    assert!(changes(&out).is_empty());
    for i in 1..10 {
        tick(&mut core, ms(i * 500));
        fail(&mut core, ms(i * 500 + 1), B, Failure::Refused);
    }
    assert_eq!(
        core.leader(),
        None,
        "a node alone at start never elects itself"
    );
}

#[test]
fn a_node_whose_seeds_name_only_itself_leads_at_once() {
    let mut core = node(A, 1.0, &[A]);
    let out = tick(&mut core, ms(0));
    assert!(fetches(&out).is_empty());
    let c = changes(&out);
    assert_eq!(c.len(), 1);
    assert!(c[0].gained());
    assert_eq!(c[0].term, 1);
}

#[test]
fn a_seed_that_answers_becomes_a_member() {
    let mut core = node(A, 1.0, &[A, B]);
    tick(&mut core, ms(0));
    let out = recv(&mut core, ms(1), B, state(&[B], None, 2.0, 0));
    assert!(out.contains(&Action::MemberAdded { addr: B.into() }));
    assert_eq!(core.members().collect::<Vec<_>>(), vec![B]);
    assert_eq!(
        core.state().members,
        vec![A, B],
        "itself first, then in order of addition"
    );
}

#[test]
fn addresses_learned_from_a_list_are_added_only_once_they_answer() {
    let mut core = node(A, 1.0, &[A, B]);
    tick(&mut core, ms(0));
    let out = recv(&mut core, ms(1), B, state(&[B, C], None, 2.0, 0));
    assert_eq!(
        fetches(&out),
        vec![C],
        "C is fetched, which is how it is checked"
    );
    assert_eq!(
        core.members().collect::<Vec<_>>(),
        vec![B],
        "but not yet a member"
    );
    let out = fail(&mut core, ms(2), C, Failure::Refused);
    assert!(removed(&out).is_empty());
    assert_eq!(
        core.members().collect::<Vec<_>>(),
        vec![B],
        "a node that is down is never added"
    );
}

#[test]
fn a_caller_is_fetched_back_and_added_when_it_answers() {
    let mut core = node(A, 1.0, &[A]);
    tick(&mut core, ms(0));
    let out = core.handle(ms(1), Event::Announced { addr: D.into() });
    assert_eq!(fetches(&out), vec![D]);
    assert_eq!(core.members().count(), 0);
    recv(&mut core, ms(2), D, state(&[D, A], None, 5.0, 0));
    assert_eq!(core.members().collect::<Vec<_>>(), vec![D]);
}

#[test]
fn a_follower_adopts_a_more_senior_nominee_at_once() {
    let mut core = node(C, 30.0, &[A, B, C]);
    tick(&mut core, ms(0));
    let out = recv(&mut core, ms(1), B, state(&[B], None, 20.0, 0));
    assert_eq!(
        changes(&out).len(),
        0,
        "waits while A is still being fetched"
    );
    let out = recv(&mut core, ms(2), A, state(&[A], None, 10.0, 0));
    let c = changes(&out);
    assert_eq!(c.len(), 1, "exactly one vote, for the most senior: {c:?}");
    assert_eq!(c[0].current.as_deref(), Some(A));
    assert!(!c[0].gained());
}

#[test]
fn the_nominee_leads_only_once_every_member_confirms() {
    let mut core = cluster_of_three(A, None);
    assert_eq!(
        core.leader(),
        None,
        "nominee is A itself, but nobody confirms yet"
    );
    recv(&mut core, ms(3), B, state(&[B, A, C], Some(A), 20.0, 1));
    assert_eq!(core.leader(), None, "C has not confirmed");
    let out = recv(&mut core, ms(4), C, state(&[C, A, B], Some(A), 30.0, 1));
    let c = changes(&out);
    assert_eq!(c.len(), 1);
    assert!(c[0].gained());
    assert_eq!(core.leader(), Some(A));
}

#[test]
fn a_leader_keeps_leading_when_a_junior_joins_without_a_vote() {
    let mut core = cluster_of_three(A, Some(A));
    assert_eq!(core.leader(), Some(A));
    let out = recv(&mut core, ms(10), D, state(&[D], None, 40.0, 0));
    assert!(changes(&out).is_empty());
    assert_eq!(core.leader(), Some(A));
}

#[test]
fn ties_on_start_time_are_broken_by_address() {
    let mut core = node(C, 5.0, &[B, C]);
    tick(&mut core, ms(0));
    recv(&mut core, ms(1), B, state(&[B, C], None, 5.0, 0));
    assert_eq!(core.leader(), Some(B), "b:1 < c:1");
    let mut other = node(B, 5.0, &[B, C]);
    tick(&mut other, ms(0));
    recv(&mut other, ms(1), C, state(&[C, B], Some(B), 5.0, 1));
    assert_eq!(other.leader(), Some(B), "both sides agree");
}

#[test]
fn a_refused_connection_removes_a_member_at_once() {
    let mut b = node(B, 20.0, &[A, B]);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B], Some(A), 10.0, 1));
    let out = fail(&mut b, ms(100), A, Failure::Refused);
    assert_eq!(removed(&out), vec![(A, RemoveReason::Unreachable)]);
    assert_eq!(b.members().count(), 0);
}

#[test]
fn a_bad_answer_removes_a_member() {
    let mut core = node(B, 20.0, &[A, B]);
    tick(&mut core, ms(0));
    recv(&mut core, ms(1), A, state(&[A, B], None, 10.0, 0));
    let out = fail(&mut core, ms(2), A, Failure::BadResponse);
    assert_eq!(removed(&out), vec![(A, RemoveReason::BadResponse)]);
}

#[test]
fn a_single_timeout_only_suspects_and_asks_others_to_probe() {
    let mut core = node(D, 40.0, &[A, B, C, D]);
    tick(&mut core, ms(0));
    for (addr, st) in [(A, 10.0), (B, 20.0), (C, 30.0)] {
        recv(&mut core, ms(1), addr, state(&[A, B, C, D], Some(A), st, 1));
    }
    let out = fail(&mut core, ms(100), A, Failure::Timeout);
    assert!(
        removed(&out).is_empty(),
        "one slow answer must not remove a healthy peer"
    );
    let mut vias: Vec<&str> = out
        .iter()
        .filter_map(|a| match a {
            Action::Probe { target, via, .. } if target == A => Some(via.as_str()),
            _ => None,
        })
        .collect();
    vias.sort();
    assert_eq!(vias, vec![B, C]);
    assert_eq!(core.leader(), Some(A));
    core.handle(
        ms(150),
        Event::ProbeAnswered {
            target: A.into(),
            reachable: true,
        },
    );
    assert!(
        !core.diag(ms(150)).member_info[A].suspect,
        "a probe that reaches it clears suspicion"
    );
}

#[test]
fn a_suspect_not_confirmed_alive_within_the_suspicion_timeout_is_removed() {
    let mut b = node(B, 20.0, &[A, B]);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B], Some(A), 10.0, 1));
    fail(&mut b, ms(1000), A, Failure::Timeout);
    tick(&mut b, ms(2000));
    fail(&mut b, ms(2001), A, Failure::Timeout);
    let out = fail(&mut b, ms(2500), A, Failure::Timeout);
    assert!(
        removed(&out).is_empty(),
        "enough evidence, but no helper confirmed it: the suspicion must age first"
    );
    let out = tick(&mut b, ms(3000));
    assert_eq!(removed(&out), vec![(A, RemoveReason::Timeout)]);
}

#[test]
fn an_old_suspicion_without_enough_evidence_removes_nobody() {
    // A single timeout, then silence (no answer, no further failure): the old rule
    // removed A after the suspicion timeout; a lossy network looks just like this.
    let mut b = node(B, 20.0, &[A, B]);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B], Some(A), 10.0, 1));
    fail(&mut b, ms(1000), A, Failure::Timeout);
    for t in [2000, 3000, 4000, 5000] {
        assert!(removed(&tick(&mut b, ms(t))).is_empty(), "at {t} ms");
    }
    assert_eq!(b.leader(), Some(A));
}

#[test]
fn a_node_that_lost_all_its_peers_leads_alone() {
    let mut core = node(B, 20.0, &[A, B]);
    tick(&mut core, ms(0));
    recv(&mut core, ms(1), A, state(&[A, B], Some(A), 10.0, 1));
    assert_eq!(core.leader(), Some(A));
    let out = fail(&mut core, ms(500), A, Failure::Refused);
    let c = changes(&out);
    assert_eq!(c.len(), 1);
    assert!(c[0].gained());
}

#[test]
fn a_restarted_node_is_junior_and_does_not_take_leadership_back() {
    // B leads after A crashed; A restarts with a new start time.
    let mut core = node(B, 20.0, &[A, B]);
    tick(&mut core, ms(0));
    recv(&mut core, ms(1), A, state(&[A, B], Some(A), 10.0, 1));
    fail(&mut core, ms(500), A, Failure::Refused);
    assert_eq!(core.leader(), Some(B));
    for s in 1..=9 {
        tick(&mut core, ms(s * 1000)); // B keeps running: no pause
    }
    core.handle(ms(9000), Event::Announced { addr: A.into() });
    let out = recv(&mut core, ms(9001), A, state(&[A, B], None, 1009.5, 0));
    assert!(changes(&out).is_empty());
    assert_eq!(core.leader(), Some(B));
}

#[test]
fn a_removed_member_cannot_come_back_with_its_old_start_time() {
    let mut core = node(B, 20.0, &[A, B]);
    tick(&mut core, ms(0));
    recv(&mut core, ms(1), A, state(&[A, B], Some(A), 10.0, 1));
    fail(&mut core, ms(500), A, Failure::Timeout);
    for t in [1000, 1500, 2000, 2500] {
        tick(&mut core, ms(t));
        fail(&mut core, ms(t + 1), A, Failure::Timeout);
    }
    assert_eq!(core.members().count(), 0);
    // A stale answer (a paused node resuming) with the old seniority is refused...
    recv(&mut core, ms(3100), A, state(&[A, B], Some(A), 10.0, 1));
    assert_eq!(core.members().count(), 0);
    assert_eq!(core.leader(), Some(B));
    // ...but the same address with a new start time is a new node, welcome as junior.
    recv(&mut core, ms(3200), A, state(&[A, B], None, 1003.0, 1));
    assert_eq!(core.members().collect::<Vec<_>>(), vec![A]);
    assert_eq!(core.leader(), Some(B));
}

#[test]
fn a_paused_node_rejoins_with_a_new_start_time() {
    let mut core = node(A, 10.0, &[A, B]);
    tick(&mut core, ms(0));
    tick(&mut core, ms(500));
    assert_eq!(core.start_time(), 10.0);
    tick(&mut core, ms(10_500)); // ten seconds frozen
    assert_eq!(core.start_time(), 1000.0 + 10.5);
}

/// B (20) follows A (10); C (30) is the third member and follows A too.
fn b_following_a() -> Core {
    let mut b = node(B, 20.0, &[A, B, C]);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B, C], Some(A), 10.0, 1));
    recv(&mut b, ms(2), C, state(&[C, A, B], Some(A), 30.0, 1));
    assert_eq!(b.leader(), Some(A));
    // Answer the fetches that voting for A sent out ("gossip on change").
    let a_state = state(&[A, B, C], Some(A), 10.0, 1);
    settle(
        &mut b,
        ms(3),
        &[(A, a_state), (C, state(&[C, A, B], Some(A), 30.0, 1))],
    );
    b
}

#[test]
fn a_leave_notice_is_checked_with_the_leaver_then_the_successor_takes_over_at_once() {
    let mut b = b_following_a();
    let out = b.handle(ms(100), Event::LeaveReceived { addr: A.into() });
    assert_eq!(fetches(&out), vec![A], "ask A itself whether it is leaving");
    assert!(removed(&out).is_empty(), "a notice alone removes nothing");
    // A answers 503 "leaving".
    let out = fail(&mut b, ms(101), A, Failure::Leaving);
    assert_eq!(removed(&out), vec![(A, RemoveReason::Left)]);
    assert_eq!(b.leader(), None, "B nominates itself and waits for C");
    assert_eq!(
        fetches(&out),
        vec![C],
        "gossip on change: ask C now, not next round"
    );
    let out = recv(&mut b, ms(102), C, state(&[C, B], Some(B), 30.0, 2));
    assert!(changes(&out)[0].gained());
    assert_eq!(b.term(), 2);
}

#[test]
fn an_outsiders_leave_notice_about_a_live_leader_changes_nothing() {
    let mut b = b_following_a();
    let out = b.handle(ms(100), Event::LeaveReceived { addr: A.into() });
    assert_eq!(fetches(&out), vec![A]);
    let out = recv(&mut b, ms(101), A, state(&[A, B, C], Some(A), 10.0, 1));
    assert!(removed(&out).is_empty() && changes(&out).is_empty());
    assert_eq!(b.leader(), Some(A));
    assert!(b.is_member(A));
    let out = b.handle(ms(102), Event::LeaveReceived { addr: "x:9".into() });
    assert!(
        out.is_empty(),
        "a notice about a non-member is ignored: {out:?}"
    );
}

#[test]
fn a_leaving_leader_gives_up_leadership_before_it_announces_the_leave() {
    let mut core = cluster_of_three(A, None);
    recv(&mut core, ms(3), B, state(&[B, A, C], Some(A), 20.0, 1));
    recv(&mut core, ms(4), C, state(&[C, A, B], Some(A), 30.0, 1));
    assert_eq!(core.leader(), Some(A));
    let out = core.handle(ms(5), Event::Leave);
    let lost = out
        .iter()
        .position(|a| matches!(a, Action::LeaderChanged(c) if c.lost()));
    let first_leave = out
        .iter()
        .position(|a| matches!(a, Action::SendLeave { .. }));
    assert!(lost.unwrap() < first_leave.unwrap(), "{out:?}");
    let leaves = out
        .iter()
        .filter(|a| matches!(a, Action::SendLeave { .. }))
        .count();
    assert_eq!(leaves, 2);
    assert!(core.state().leaving);
    assert!(
        tick(&mut core, ms(600)).is_empty(),
        "a leaving node contacts nobody"
    );
}

#[test]
fn a_member_reporting_itself_as_leaving_is_dropped_and_not_readded() {
    let mut leaving = state(&[A, B, C], None, 10.0, 1);
    leaving.leaving = true;
    let mut b = node(B, 20.0, &[A, B]);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B], Some(A), 10.0, 1));
    let out = recv(&mut b, ms(2), A, leaving.clone());
    assert_eq!(removed(&out), vec![(A, RemoveReason::Left)]);
    recv(&mut b, ms(3), A, state(&[A, B], None, 10.0, 1));
    assert_eq!(
        b.members().count(),
        0,
        "a stale list cannot bring the leaver back"
    );
}

#[test]
fn terms_increase_with_every_leader_change_and_a_new_leader_matches_its_voters() {
    // B follows A at term 1; A dies; B adopts... itself, confirmed by C at term 2.
    let mut b = node(B, 20.0, &[A, B, C]);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B, C], Some(A), 10.0, 1));
    recv(&mut b, ms(2), C, state(&[C, A, B], Some(A), 30.0, 1));
    assert_eq!(b.term(), 1, "adopting an established leader takes its term");
    // C's view: A dies, C votes for B with term 2.
    let mut c = node(C, 30.0, &[A, B, C]);
    tick(&mut c, ms(0));
    recv(&mut c, ms(1), A, state(&[A, B, C], Some(A), 10.0, 1));
    recv(&mut c, ms(2), B, state(&[B, A, C], Some(A), 20.0, 1));
    let out = fail(&mut c, ms(500), A, Failure::Refused);
    assert_eq!(changes(&out)[0].term, 2);
    assert_eq!(changes(&out)[0].current.as_deref(), Some(B));
    // B: A fails; pending (term unchanged), then C's vote confirms at term 2.
    let out = fail(&mut b, ms(510), A, Failure::Refused);
    assert_eq!(changes(&out)[0].current, None);
    assert_eq!(changes(&out)[0].term, 1);
    let out = recv(&mut b, ms(511), C, c.state());
    assert_eq!(
        changes(&out)[0].term,
        2,
        "the leader's term equals its voters'"
    );
    // A term never decreases, whatever a peer reports.
    recv(&mut b, ms(600), C, state(&[C, B], Some(B), 30.0, 0));
    assert_eq!(b.term(), 2);
}

#[test]
fn adopting_a_leader_whose_term_is_behind_ours_still_moves_the_term_forward() {
    // After a partition heals, our side's term is 7 but the more senior leader's is 4.
    let mut core = node(C, 30.0, &[B, C]);
    tick(&mut core, ms(0));
    recv(&mut core, ms(1), B, state(&[B, C], Some(B), 20.0, 7));
    assert_eq!(core.term(), 7);
    let out = recv(&mut core, ms(2), A, state(&[A], Some(A), 10.0, 4));
    let c = changes(&out);
    assert_eq!(c[0].current.as_deref(), Some(A));
    assert_eq!(
        c[0].term, 8,
        "a change always carries a term above the previous one"
    );
}

#[test]
fn a_witness_votes_but_never_leads() {
    let cfg = CoreConfig {
        eligible: false,
        ..CoreConfig::default()
    };
    let mut core = Core::new(cfg, A, 1.0, &seeds(&[A, B]), 1);
    tick(&mut core, ms(0));
    assert!(!core.state().eligible);
    recv(&mut core, ms(1), B, state(&[B, A], None, 50.0, 0));
    assert_eq!(core.leader(), Some(B), "the most senior *eligible* node");
    // And the other side skips the witness even though it is more senior.
    let mut b = node(B, 50.0, &[A, B]);
    tick(&mut b, ms(0));
    let mut witness = core.state();
    witness.leader = Some(B.into());
    recv(&mut b, ms(1), A, witness);
    assert_eq!(b.leader(), Some(B));
}

#[test]
fn a_leader_that_steps_down_is_ineligible_for_the_cooldown_and_junior_after_it() {
    let mut core = node(A, 10.0, &[A, B]);
    tick(&mut core, ms(0));
    recv(&mut core, ms(1), B, state(&[B, A], Some(A), 20.0, 1));
    assert_eq!(core.leader(), Some(A));
    let out = core.handle(
        ms(2),
        Event::StepDown {
            cooldown: Duration::from_secs(10),
        },
    );
    assert!(changes(&out)[0].lost());
    assert_eq!(core.leader(), Some(B));
    assert!(!core.state().eligible);
    assert!(core.start_time() > 20.0, "stepping down forfeits seniority");
    recv(&mut core, ms(3), B, state(&[B, A], Some(B), 20.0, 2));
    let out = tick(&mut core, ms(10_100));
    assert!(core.state().eligible, "cooldown over");
    assert!(
        changes(&out).is_empty(),
        "and B keeps leading: one change, not two"
    );
    assert_eq!(core.leader(), Some(B));
}

#[test]
fn an_unhealthy_leader_steps_down_and_forfeits_its_seniority() {
    let mut core = node(A, 10.0, &[A, B]);
    tick(&mut core, ms(0));
    recv(&mut core, ms(1), B, state(&[B, A], Some(A), 20.0, 1));
    core.handle(ms(2), Event::SetHealth { healthy: false });
    assert_eq!(core.leader(), Some(B));
    assert!(core.start_time() > 20.0, "junior to B now");
    recv(&mut core, ms(3), B, state(&[B, A], Some(B), 20.0, 2));
    let out = core.handle(ms(4), Event::SetHealth { healthy: true });
    assert!(
        changes(&out).is_empty(),
        "recovering does not take leadership back"
    );
    assert_eq!(core.leader(), Some(B));
}

#[test]
fn a_pending_candidate_fetches_a_member_that_contacts_it() {
    let mut core = cluster_of_three(A, None);
    let out = core.handle(ms(10), Event::Announced { addr: B.into() });
    assert_eq!(fetches(&out), vec![B]);
    // A follower that already confirmed us is not fetched again on contact.
    recv(&mut core, ms(11), B, state(&[B, A, C], Some(A), 20.0, 1));
    let out = core.handle(ms(12), Event::Announced { addr: B.into() });
    assert!(fetches(&out).is_empty());
}

#[test]
fn rounds_contact_a_bounded_fanout_but_always_the_leader() {
    let cfg = CoreConfig {
        fanout: 3,
        ..CoreConfig::default()
    };
    let all: Vec<String> = (0..20).map(|i| format!("n{i}:1")).collect();
    let members: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut core = Core::new(cfg, "n19:1", 19.0, &all, 1);
    let first = tick(&mut core, ms(0));
    answer_numbered(&mut core, ms(1), &members, &first);
    assert_eq!(core.leader(), Some("n0:1"));
    let mut seen = HashSet::new();
    for round in 1..=14u64 {
        let out = tick(&mut core, ms(round * 500));
        let f = fetches(&out);
        assert!(f.len() <= 4, "fanout 3 plus the leader, got {f:?}");
        assert!(
            f.contains(&"n0:1"),
            "the leader is contacted every round: {out:?}"
        );
        for a in &f {
            seen.insert(a.to_string());
            let idx = index_of(a);
            recv(
                &mut core,
                ms(round * 500 + 1),
                a,
                state(&members, Some("n0:1"), idx, 1),
            );
        }
    }
    assert_eq!(seen.len(), 19, "rotation reaches every member");
}

#[test]
fn a_member_a_peer_removed_is_checked_at_once() {
    let mut c = node(C, 30.0, &[A, B, C]);
    tick(&mut c, ms(0));
    let a_state = state(&[A, B, C], Some(A), 10.0, 1);
    let b_state = state(&[B, A, C], Some(A), 20.0, 1);
    recv(&mut c, ms(1), A, a_state.clone());
    recv(&mut c, ms(2), B, b_state.clone());
    settle(&mut c, ms(3), &[(A, a_state.clone()), (B, b_state)]);
    // A peer may simply not have learned a member yet (joins are paced): no check.
    tick(&mut c, ms(3000));
    recv(&mut c, ms(3001), A, a_state.clone());
    let out = recv(&mut c, ms(3002), B, state(&[B, C], Some(A), 20.0, 1));
    assert!(
        !fetches(&out).contains(&A),
        "not listing A is no sign: {out:?}"
    );
    settle(&mut c, ms(3003), &[(A, a_state.clone())]);
    // B saying it removed A is a hint that A failed: C checks A itself, now.
    tick(&mut c, ms(4000));
    recv(&mut c, ms(4001), A, a_state.clone());
    let mut gone = state(&[B, C], Some(A), 20.0, 1);
    gone.removed = vec![A.to_string()];
    let out = recv(&mut c, ms(4002), B, gone);
    assert_eq!(fetches(&out), vec![A]);
    assert!(removed(&out).is_empty(), "hearsay never removes a member");
}

#[test]
fn a_lost_connection_to_a_member_is_checked_at_once_not_at_the_next_round() {
    let mut b = node(B, 20.0, &[A, B]);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B], Some(A), 10.0, 1));
    settle(&mut b, ms(2), &[(A, state(&[A, B], Some(A), 10.0, 1))]);
    let out = b.handle(ms(50), Event::ConnectionLost { addr: A.into() });
    assert_eq!(fetches(&out), vec![A]);
    assert!(
        removed(&out).is_empty(),
        "a closed connection alone proves nothing"
    );
    let out = fail(&mut b, ms(51), A, Failure::Refused);
    assert_eq!(removed(&out), vec![(A, RemoveReason::Unreachable)]);
    // Not a member: nothing to check.
    let out = b.handle(ms(60), Event::ConnectionLost { addr: C.into() });
    assert!(fetches(&out).is_empty());
}

#[test]
fn nodes_with_the_same_member_list_contact_different_members() {
    let all: Vec<String> = (0..40).map(|i| format!("n{i}:1")).collect();
    let members: Vec<&str> = all.iter().map(String::as_str).collect();
    let first_rounds: Vec<Vec<String>> = (0..4u64)
        .map(|seed| {
            let cfg = CoreConfig {
                fanout: 4,
                ..CoreConfig::default()
            };
            let mut core = Core::new(cfg, "n39:1", 39.0, &all, seed);
            let first = tick(&mut core, ms(0));
            answer_numbered(&mut core, ms(1), &members, &first);
            // A few cycles in, where each node's rotation stands depends on its seed.
            let mut last = Vec::new();
            for round in 1..=12u64 {
                let out = tick(&mut core, ms(round * 1000));
                last = fetches(&out).into_iter().map(String::from).collect();
                for a in &last {
                    let idx = index_of(a);
                    recv(
                        &mut core,
                        ms(round * 1000 + 1),
                        a,
                        state(&members, Some("n0:1"), idx, 1),
                    );
                }
            }
            last
        })
        .collect();
    let distinct: HashSet<&Vec<String>> = first_rounds.iter().collect();
    assert!(
        distinct.len() > 1,
        "every node contacted the same members: {first_rounds:?}"
    );
}

mod detection;
mod hostile;
mod join;
mod quorum;
mod relinquish;

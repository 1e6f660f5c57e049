//! The scenario catalogue: how a cluster converges after each kind of event, as insta
//! snapshots of every node's final view and of the ordered leader changes.
//!
//! Each test also asserts the outcome the rules promise, so a broken rule fails with a
//! message, not only with a snapshot diff. Review a snapshot by reading its leader
//! changes top to bottom: it is the story of the run. Every run is deterministic; a
//! failing test prints the command that replays it.

use std::time::Duration;

use les::sim::{Cluster, NodeSpec, NodeStatus, Snapshot, TraceEvent};

#[path = "sim_catalogue/checks.rs"]
mod checks;

use checks::{detection_period, longest_split, quorum_cluster, Checks};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Longest any scenario may take to agree on a leader after its last event. Generous:
/// the slowest rule at play is the rejoin hold-off (5 s) after a healed partition.
const AGREE_WITHIN: Duration = Duration::from_secs(15);

/// Three nodes `n1`, `n2`, `n3`.
fn three() -> Cluster {
    Cluster::builder().seed(1).nodes(["n1", "n2", "n3"]).build()
}

/// Three nodes started one second apart, `n1` first, and agreed on `n1`.
fn three_staggered() -> Cluster {
    let mut sim = three();
    for name in ["n1", "n2", "n3"] {
        sim.start(name);
        sim.run_for(secs(1));
    }
    agree_on(&mut sim, "n1");
    sim
}

/// Run until the nodes that are up agree, and check they agree on `leader`.
#[track_caller]
fn agree_on(sim: &mut Cluster, leader: &str) {
    let took = sim.run_until_agreed(AGREE_WITHIN);
    assert!(
        took.is_some(),
        "{}",
        sim.failure(&format!(
            "no agreement within {AGREE_WITHIN:?}: {:?}",
            sim.up()
                .iter()
                .map(|n| (n.clone(), sim.leader(n)))
                .collect::<Vec<_>>()
        ))
    );
    assert_eq!(sim.agreed_leader().as_deref(), Some(leader));
    assert_eq!(sim.most_senior().as_deref(), Some(leader));
}

/// Agreed on `leader`, and still so three seconds later: the snapshot to compare.
#[track_caller]
fn settled(sim: &mut Cluster, leader: &str) -> Snapshot {
    agree_on(sim, leader);
    sim.run_for(secs(3));
    sim.snapshot()
}

/// Changes of leader recorded after `from`.
fn changes_since(sim: &Cluster, from: Duration) -> usize {
    sim.leader_changes()
        .iter()
        .filter(|c| c.at_ms > from.as_millis() as u64)
        .count()
}

// 1. Start.

#[test]
fn three_nodes_start_together() {
    let mut sim = three();
    sim.start_all();
    // Equal start times: the lowest address breaks the tie, on every node alike.
    insta::assert_snapshot!(settled(&mut sim, "n1"));
}

#[test]
fn three_nodes_start_staggered() {
    let mut sim = three();
    // Seniority, not name: n3 starts first.
    for name in ["n3", "n1", "n2"] {
        sim.start(name);
        sim.run_for(secs(1));
    }
    insta::assert_snapshot!(settled(&mut sim, "n3"));
}

// 2. Seeds down at start.

#[test]
fn a_seed_is_down_at_start_and_comes_up_later() {
    let mut sim = three();
    sim.start("n1");
    sim.start("n2");
    agree_on(&mut sim, "n1");
    sim.run_for(secs(5));
    let before = sim.now();
    sim.start("n3");
    agree_on(&mut sim, "n1");
    sim.run_for(secs(3));
    // The late seed joins as a follower: nobody but n3 itself changes leader.
    assert!(sim
        .leader_changes()
        .iter()
        .filter(|c| c.at_ms > before.as_millis() as u64)
        .all(|c| c.node == "n3"));
    insta::assert_snapshot!(sim.snapshot());
}

#[test]
fn all_seeds_down_at_start() {
    let mut sim = Cluster::builder()
        .seed(1)
        .node(NodeSpec::new("n1"))
        .node(NodeSpec::new("n2"))
        .node(NodeSpec::new("n3").seeds(["n1", "n2"]))
        .build();
    sim.start("n3");
    sim.run_for(secs(5));
    // Alone from the start, n3 never elects: it has heard from no one (rule 5).
    assert_eq!(sim.leader("n3"), None);
    sim.start("n1");
    sim.start("n2");
    // n3 started 5 s before the others: it is the most senior and leads.
    insta::assert_snapshot!(settled(&mut sim, "n3"));
}

// 3. Failures.

#[test]
fn the_leader_crashes() {
    let mut sim = three_staggered();
    sim.crash("n1");
    let crashed_at = sim.now();
    agree_on(&mut sim, "n2");
    // A crash closes the port: the survivors are refused on their next round.
    assert!(sim.now() - crashed_at <= sim.config("n2").interval * 2);
    sim.run_for(secs(3));
    insta::assert_snapshot!(sim.snapshot());
}

#[test]
fn a_follower_crashes() {
    let mut sim = three_staggered();
    let before = sim.now();
    sim.crash("n3");
    sim.run_for(secs(5));
    agree_on(&mut sim, "n1");
    assert_eq!(
        changes_since(&sim, before),
        0,
        "a follower's crash moved the leader"
    );
    insta::assert_snapshot!(sim.snapshot());
}

#[test]
fn the_leader_leaves_gracefully() {
    let mut sim = three_staggered();
    sim.stop("n1");
    assert_eq!(sim.status("n1"), NodeStatus::Stopped);
    // The goodbye hands over at once: no round is waited for.
    let took = sim.run_until_agreed(AGREE_WITHIN);
    assert!(took.is_some_and(|t| t < sim.config("n2").interval));
    insta::assert_snapshot!(settled(&mut sim, "n2"));
}

#[test]
fn the_leader_steps_down_on_request() {
    let mut sim = three_staggered();
    let before = sim.now();
    let term = sim.term("n1").expect("up");
    let asked = sim.step_down("n2").expect("n2 answers");
    assert!(!asked.was_leader, "a follower changes nothing: {asked:?}");
    assert_eq!(changes_since(&sim, before), 0);
    let reply = sim.step_down("n1").expect("n1 answers");
    assert!(reply.was_leader && reply.term > term, "{reply:?}");
    // Every member hears at once: the hand-over takes round trips, not a round.
    let took = sim.run_until_agreed(AGREE_WITHIN);
    assert!(
        took.is_some_and(|t| t < sim.config("n2").interval),
        "{took:?}"
    );
    assert_eq!(sim.agreed_leader().as_deref(), Some("n2"));
    sim.run_for(secs(3));
    // One change per node, straight from n1 to n2 with a higher term; n1, now the most
    // junior, does not take it back.
    let changes: Vec<_> = sim
        .leader_changes()
        .into_iter()
        .filter(|c| c.at_ms > before.as_millis() as u64)
        .collect();
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(changes.iter().all(|c| c.from.as_deref() == Some("n1")
        && c.to.as_deref() == Some("n2")
        && c.term > term));
    assert_eq!(sim.most_senior().as_deref(), Some("n2"));
    insta::assert_snapshot!(settled(&mut sim, "n2"));
}

#[test]
fn a_relinquish_schedule_rotates_leadership_once_per_period() {
    let mut sim = Cluster::builder()
        .seed(1)
        .configure(|c| c.relinquish_every = Some(secs(5)))
        .nodes(["n1", "n2", "n3"])
        .build();
    for name in ["n1", "n2", "n3"] {
        sim.start(name);
        sim.run_for(secs(1));
    }
    agree_on(&mut sim, "n1");
    let agreed = sim.now();
    let mut leaders = Vec::new();
    for _ in 0..4 {
        sim.run_for(secs(5));
        leaders.push(sim.agreed_leader());
    }
    let leaders: Vec<Option<&str>> = leaders.iter().map(Option::as_deref).collect();
    assert_eq!(leaders, [Some("n2"), Some("n3"), Some("n1"), Some("n2")]);
    assert_eq!(
        changes_since(&sim, agreed),
        4 * 3,
        "each rotation is one change per node"
    );
}

// 4. No preemption.

#[test]
fn the_old_leader_restarts_and_rejoins_as_a_follower() {
    let mut sim = three_staggered();
    sim.crash("n1");
    agree_on(&mut sim, "n2");
    sim.run_for(secs(2));
    let before = sim.now();
    sim.start("n1");
    sim.run_for(secs(5));
    // Restarted, n1 is the most junior: n2 keeps the lead and no one else changes leader.
    agree_on(&mut sim, "n2");
    assert!(sim
        .leader_changes()
        .iter()
        .filter(|c| c.at_ms > before.as_millis() as u64)
        .all(|c| c.node == "n1" && c.to.as_deref() == Some("n2")));
    insta::assert_snapshot!(sim.snapshot());
}

// 5. Partitions.

/// Cut `minority` (the leader n1 among them) off from `majority` for 10 s, during which
/// the majority must follow its first node; heal; then that node must keep the lead,
/// n1 must not get it back, and no node may change leader more than once. In quorum
/// mode, also: no node of the minority acts during the cut, and never two leaders.
fn partition_then_heal(sim: &mut Cluster, minority: &[&str], majority: &[&str]) -> Checks {
    let quorum = sim.config("n1").quorum > 1;
    let successor = majority[0];
    sim.partition(&[minority, majority]);
    sim.run_for(secs(10));
    let mut checks = Checks::default();
    if quorum {
        checks.check(
            format!(
                "during the partition no node of {} acts",
                minority.join(", ")
            ),
            !minority
                .iter()
                .any(|n| sim.leader(n).as_deref() == Some(*n)),
        );
    } else {
        checks.check(
            "without quorum mode n1 leads its side too (the known limit)",
            sim.leader("n1").as_deref() == Some("n1"),
        );
    }
    checks.all_follow_among(sim, successor, majority);
    sim.heal();
    let healed_at = sim.now();
    sim.run_until_agreed(AGREE_WITHIN);
    sim.run_for(secs(3));
    checks.all_follow(sim, successor);
    checks.no_move_back(sim, "n1", healed_at);
    if quorum {
        checks.one_acting_leader_at_a_time(sim);
    }
    checks
}

/// Default mode: the leader is cut off alone for 10 s. Each side leads itself (without
/// quorum mode two leaders are possible: the known limit of LES), but n1, having lost
/// contact with the majority of the nodes it knew, takes a new start time: after the
/// heal it is the most junior and n2 keeps the lead.
#[test]
fn partition_two_one_then_heal() {
    let mut sim = three_staggered();
    let checks = partition_then_heal(&mut sim, &["n1"], &["n2", "n3"]);
    insta::assert_snapshot!(checks.story(&mut sim));
    checks.assert_all(&sim);
}

/// Quorum mode, quorum 2 of 3: the leader cut off alone for 10 s cannot reach a quorum
/// and stops acting before n2 starts (its lease runs out before the followers' promises
/// do); after the heal n2 keeps the lead and n1 follows it.
#[test]
fn quorum_partition_two_one_then_heal() {
    let mut sim = quorum_cluster(3, 2, &[]);
    agree_on(&mut sim, "n1");
    let checks = partition_then_heal(&mut sim, &["n1"], &["n2", "n3"]);
    insta::assert_snapshot!(checks.story(&mut sim));
    checks.assert_all(&sim);
}

/// Quorum mode, quorum 3 of 5: the leader and one follower are cut off for 10 s. Two
/// nodes are no quorum: neither acts, while n3 leads the three others; after the heal
/// n3 keeps the lead.
#[test]
fn quorum_partition_of_the_leader_and_a_follower_then_heal() {
    let mut sim = quorum_cluster(5, 3, &[]);
    agree_on(&mut sim, "n1");
    let checks = partition_then_heal(&mut sim, &["n1", "n2"], &["n3", "n4", "n5"]);
    insta::assert_snapshot!(checks.story(&mut sim));
    checks.assert_all(&sim);
}

/// Quorum mode: the leader is paused (SIGSTOP) for twice its lease. The others elect n2
/// once their promises to n1 have run out; when n1 resumes its lease has run out too, so
/// it stops acting at once, without a moment as a second leader, and follows n2.
#[test]
fn quorum_the_leader_paused_longer_than_its_lease() {
    let mut sim = quorum_cluster(3, 2, &["n1"]);
    agree_on(&mut sim, "n1");
    let lease = sim.config("n1").lease;
    sim.pause("n1");
    sim.run_for(lease * 2);
    let mut checks = Checks::default();
    checks.all_follow_among(&sim, "n2", &["n2", "n3"]);
    sim.resume("n1");
    let resumed_at = sim.now();
    sim.run_until_agreed(AGREE_WITHIN);
    sim.run_for(secs(3));
    let acted_after = sim
        .acting_spans()
        .iter()
        .any(|s| s.node == "n1" && s.from >= resumed_at && s.until != Some(s.from));
    checks.check(
        "n1 did not act after it resumed (its lease had run out)",
        !acted_after,
    );
    checks.all_follow(&sim, "n2");
    checks.no_move_back(&sim, "n1", resumed_at);
    checks.one_acting_leader_at_a_time(&sim);
    // No snapshot: a paused node's held calls were seen to resume a tick apart from one
    // run to the next (the pause gate; an open simulator issue), so the story is not
    // reproducible to the millisecond. The checks above are, and they must all pass.
    println!("{}", checks.story(&mut sim));
    checks.assert_all(&sim);
}

/// Quorum mode: n3 cannot reach n1 from the first moment (n1 reaches n3). n3 never adds
/// n1, but the views must not stay split — n3 naming one leader while n1 and n2 name
/// another — for longer than a detection period.
#[test]
fn quorum_a_one_way_link_from_the_start() {
    let mut sim = Cluster::builder()
        .seed(1)
        .configure(|c| c.quorum = 2)
        .nodes(["n1", "n2", "n3"])
        .build();
    sim.partition_oneway("n3", "n1");
    for name in ["n1", "n2", "n3"] {
        sim.start(name);
        sim.run_for(secs(1));
    }
    let detection = detection_period(&sim);
    let split = longest_split(&mut sim, secs(15));
    let mut checks = Checks::default();
    checks.check(
        format!("split views lasted {split:?} at most, within a detection period ({detection:?})"),
        split <= detection,
    );
    let leader = sim.leader("n2");
    let acts = leader
        .as_deref()
        .is_some_and(|l| sim.leader(l).as_deref() == Some(l));
    checks.check(
        format!("n1 and n2 follow one acting leader ({leader:?})"),
        acts && sim.leader("n1") == leader,
    );
    checks.check(
        "n3 follows the same leader or none",
        sim.leader("n3").is_none() || sim.leader("n3") == leader,
    );
    checks.one_acting_leader_at_a_time(&sim);
    insta::assert_snapshot!(checks.story(&mut sim));
    checks.assert_all(&sim);
    sim.heal();
    sim.run_until_agreed(AGREE_WITHIN)
        .expect("agreement once healed");
}

#[test]
fn partition_one_one_one_then_heal() {
    let mut sim = three_staggered();
    sim.partition(&[&["n1"], &["n2"], &["n3"]]);
    sim.run_for(secs(10));
    for name in ["n1", "n2", "n3"] {
        assert_eq!(
            sim.leader(name).as_deref(),
            Some(name),
            "{name} alone leads itself"
        );
    }
    // Every node lost most of the cluster and took a new start time; whichever did so
    // first is the most senior after the heal. Each node changes leader at most once.
    let healed = sim.now();
    sim.heal();
    sim.run_until_agreed(secs(20))
        .expect("agreement after the heal");
    let snapshot = sim.snapshot();
    let after: Vec<_> = sim
        .leader_changes()
        .into_iter()
        .filter(|c| c.at_ms > healed.as_millis() as u64)
        .collect();
    for name in ["n1", "n2", "n3"] {
        let n = after.iter().filter(|c| c.node == name).count();
        assert!(
            n <= 1,
            "{name} changed leader {n} times after the heal: {after:?}"
        );
    }
    insta::assert_snapshot!(snapshot);
}

#[test]
fn a_one_way_link() {
    let mut sim = three_staggered();
    let before = sim.now();
    // n3 can no longer reach the leader, but the leader still reaches n3.
    sim.partition_oneway("n3", "n1");
    sim.run_for(secs(15));
    // n3's requests to n1 time out, but n2 vouches for n1 (indirect probes): nobody is
    // removed and the leader does not move; n3 keeps n1 suspect.
    assert_eq!(changes_since(&sim, before), 0);
    agree_on(&mut sim, "n1");
    insta::assert_snapshot!(sim.snapshot());
}

#[test]
fn a_one_way_link_from_the_start() {
    let mut sim = three();
    sim.partition_oneway("n3", "n1");
    for name in ["n1", "n2", "n3"] {
        sim.start(name);
        sim.run_for(secs(1));
    }
    sim.run_for(secs(15));
    // n3 never hears from n1, so it never adds it (rule 3); but n2, more senior than
    // n3, follows n1, so n3 follows n1 on n2's word: one view of the leader, not two.
    for name in ["n1", "n2", "n3"] {
        assert_eq!(sim.leader(name).as_deref(), Some("n1"), "{name}");
    }
    insta::assert_snapshot!(sim.snapshot());
    sim.heal();
    agree_on(&mut sim, "n1");
}

// 6. Message loss.

#[test]
fn five_percent_message_loss_causes_no_leader_change() {
    let mut sim = Cluster::builder()
        .seed(1)
        .nodes(["n1", "n2", "n3", "n4", "n5"])
        .build();
    for name in sim.names() {
        sim.start(&name);
        sim.run_for(secs(1));
    }
    agree_on(&mut sim, "n1");
    let before = sim.now();
    let sent_before: u64 = sim.messages_sent().values().sum();
    sim.set_loss(0.05);
    sim.run_for(secs(120));
    let sent: u64 = sim.messages_sent().values().sum::<u64>() - sent_before;
    assert!(
        sent > 1000,
        "too few messages ({sent}) for the run to mean anything"
    );
    assert_eq!(
        changes_since(&sim, before),
        0,
        "{}",
        sim.failure("a spurious leader change under 5% loss")
    );
    let removals: Vec<_> = sim
        .trace()
        .into_iter()
        .filter(|e| e.at >= before && matches!(e.event, TraceEvent::MemberRemoved { .. }))
        .collect();
    assert!(
        removals.is_empty(),
        "live members removed under 5% loss: {removals:?}"
    );
    agree_on(&mut sim, "n1");
    insta::assert_snapshot!(sim.snapshot());
}

// 7. Clock skew.

#[test]
fn a_node_with_its_clock_an_hour_behind_starts_last_and_leads() {
    let mut sim = Cluster::builder()
        .seed(1)
        .nodes(["n1", "n2", "n3"])
        .node(NodeSpec::new("n4").clock_behind(Duration::from_secs(3600)))
        .build();
    for name in ["n1", "n2", "n3"] {
        sim.start(name);
        sim.run_for(secs(1));
    }
    agree_on(&mut sim, "n1");
    sim.start("n4");
    // Its start time reads an hour early: by the rules it is the most senior, and the
    // snapshot shows why (its start time, about -3600 s).
    agree_on(&mut sim, "n4");
    assert!(sim.start_time_ms("n4").is_some_and(|t| t < -3_500_000));
    sim.run_for(secs(3));
    insta::assert_snapshot!(sim.snapshot());
}

// 8. Scale.

#[test]
fn fifty_nodes_converge() {
    let names: Vec<String> = (1..=50).map(|i| format!("n{i:02}")).collect();
    let mut sim = Cluster::builder().seed(1).nodes(names.clone()).build();
    sim.start_all();
    agree_on(&mut sim, "n01");
    sim.run_for(secs(5));
    let snapshot = sim.snapshot();
    for view in &snapshot.nodes {
        assert_eq!(
            view.members.len(),
            50,
            "{} knows {} members",
            view.name,
            view.members.len()
        );
    }
    // Past the joining rush, `fanout` (8) bounds each node's requests per round, plus the
    // leader and the nominee: 10 at most, where contacting everyone would take 49. The
    // leader's watchers (the 8 most senior followers) add a ping every watch interval.
    let before = sim.messages_sent();
    let rounds = 10;
    sim.run_for(sim.config("n01").interval * rounds);
    let after = sim.messages_sent();
    for name in &names {
        let per_round = (after[name] - before[name]) as f64 / f64::from(rounds);
        let cfg = sim.config(name);
        let pings = cfg.interval.as_secs_f64() / cfg.watch_interval.as_secs_f64();
        assert!(
            per_round <= 10.0 + pings,
            "{name} sent {per_round} requests a round"
        );
    }
    insta::assert_snapshot!(snapshot);
}

// Determinism.

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let mut sim = three_staggered();
        sim.set_loss(0.1);
        sim.crash("n1");
        sim.run_for(secs(5));
        sim.start("n1");
        sim.run_for(secs(5));
        (sim.snapshot(), sim.trace(), sim.messages_sent())
    };
    let (a, b) = (run(), run());
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
}

// The README's example of a user's own test: two database hosts and a witness.

#[test]
fn readme_example_failover_with_a_witness() {
    let mut sim = Cluster::builder()
        .seed(42)
        .configure(|c| c.interval = Duration::from_millis(200)) // your own settings
        .nodes(["db1", "db2"])
        .node(NodeSpec::new("witness").configure(|c| c.eligible = false))
        .build();
    sim.start("db1");
    sim.run_for(Duration::from_secs(1)); // db1 is the most senior
    sim.start("db2");
    sim.start("witness");
    sim.run_until_agreed(Duration::from_secs(10))
        .expect("agreement");
    assert_eq!(sim.agreed_leader().as_deref(), Some("db1"));

    sim.crash("db1");
    sim.run_until_agreed(Duration::from_secs(10))
        .expect("failover");
    assert_eq!(sim.agreed_leader().as_deref(), Some("db2"));
    insta::assert_snapshot!(sim.snapshot());
}

#[test]
fn quorum_the_leader_steps_down_on_request() {
    for (n, quorum) in [(3, 2), (5, 3)] {
        let mut sim = quorum_cluster(n, quorum, &[]);
        agree_on(&mut sim, "n1");
        let term = sim.term("n1").expect("up");
        let before = sim.now();
        let reply = sim.step_down("n1").expect("n1 answers");
        assert!(reply.was_leader, "{reply:?}");
        agree_on(&mut sim, "n2");
        let took = sim.now() - before;
        // Members that confirmed n1 wait out their promise to it first.
        assert!(
            took < sim.config("n2").lease * 2,
            "quorum {quorum} of {n}: {took:?}"
        );
        assert!(sim.term("n2").expect("up") > term);
        let spans = sim.acting_spans();
        assert!(
            les::sim::first_overlap(&spans).is_none(),
            "never two acting leaders"
        );
    }
}

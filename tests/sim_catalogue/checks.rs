//! What the partition and pause scenarios assert, written into their snapshots too.
//!
//! A snapshot records what happened, right or wrong: one re-recorded from a run that
//! broke a rule would look as plausible as any other. So these scenarios list their
//! checks in the snapshot itself (`ok` or `FAILED`, in words) and then fail the test if
//! any failed: a wrong run can neither pass nor be accepted by mistake.

use std::fmt::Write as _;
use std::time::Duration;

use les::sim::{first_overlap, ActingSpan, Cluster, NodeSpec};

/// The bound on clock rates the core assumes (ρ): a follower's promise lasts
/// `lease × (1+ρ)/(1−ρ)` on its clock.
const RHO: f64 = 0.05;

/// How long a fault may take to show in every node's view: a request times out, the
/// suspicion runs out, the followers' promises to the old leader run out, and two rounds
/// for the election's round trips.
pub fn detection_period(sim: &Cluster) -> Duration {
    let c = sim.config("n1");
    c.request_timeout
        + c.suspicion_timeout
        + c.lease.mul_f64((1.0 + RHO) / (1.0 - RHO))
        + c.interval * 2
}

/// `n` nodes `n1`..`nn` in quorum mode with `quorum`, started one second apart (`n1`
/// first); the nodes named in `pausable` can be paused.
pub fn quorum_cluster(n: usize, quorum: usize, pausable: &[&str]) -> Cluster {
    let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let mut builder = Cluster::builder()
        .seed(1)
        .configure(move |c| c.quorum = quorum);
    for name in &names {
        let spec = NodeSpec::new(name.clone());
        let pause = pausable.contains(&name.as_str());
        builder = builder.node(if pause { spec.pausable() } else { spec });
    }
    let mut sim = builder.build();
    for name in &names {
        sim.start(name);
        sim.run_for(Duration::from_secs(1));
    }
    sim
}

/// The named checks of one scenario, in the order they were made.
#[derive(Default)]
pub struct Checks(Vec<(String, bool)>);

impl Checks {
    pub fn check(&mut self, what: impl Into<String>, holds: bool) {
        self.0.push((what.into(), holds));
    }

    /// No two nodes acted as leader at the same instant, over the whole run.
    pub fn one_acting_leader_at_a_time(&mut self, sim: &Cluster) {
        let spans = sim.acting_spans();
        let overlap = first_overlap(&spans).map(|(a, b)| format!(": {a}, and {b}"));
        self.check(
            format!(
                "no two nodes acted as leader at the same instant{}",
                overlap.unwrap_or_default()
            ),
            first_overlap(&spans).is_none(),
        );
    }

    /// `leader` acts and every up node follows it.
    pub fn all_follow(&mut self, sim: &Cluster, leader: &str) {
        self.follow(sim, leader, &sim.up(), "every up node follows");
    }

    /// `leader` acts and the nodes of `side` (leader included) follow it.
    pub fn all_follow_among(&mut self, sim: &Cluster, leader: &str, side: &[&str]) {
        let side: Vec<String> = side.iter().map(|n| n.to_string()).collect();
        let who = format!("{} follow", side.join(", "));
        self.follow(sim, leader, &side, &who);
    }

    fn follow(&mut self, sim: &Cluster, leader: &str, nodes: &[String], who: &str) {
        let views: Vec<String> = nodes
            .iter()
            .map(|n| format!("{n} -> {}", sim.leader(n).as_deref().unwrap_or("none")))
            .collect();
        let acts = sim.leader(leader).as_deref() == Some(leader);
        let all = nodes
            .iter()
            .all(|n| sim.leader(n).as_deref() == Some(leader));
        self.check(
            format!("{leader} acts and {who} it ({})", views.join(", ")),
            acts && all,
        );
    }

    /// After `since`, no node took `node` as leader again, and each node changed leader
    /// at most once.
    pub fn no_move_back(&mut self, sim: &Cluster, node: &str, since: Duration) {
        let after: Vec<_> = sim
            .leader_changes()
            .into_iter()
            .filter(|c| c.at_ms > since.as_millis() as u64)
            .collect();
        self.check(
            format!("leadership did not move back to {node}"),
            !after.iter().any(|c| c.to.as_deref() == Some(node)),
        );
        let most = sim
            .names()
            .iter()
            .map(|n| after.iter().filter(|c| &c.node == n).count())
            .max()
            .unwrap_or(0);
        self.check(
            format!("each node changed leader at most once after that ({most} at most)"),
            most <= 1,
        );
    }

    /// The snapshot, the acting spans and these checks, as one text for insta.
    pub fn story(&self, sim: &mut Cluster) -> String {
        let mut out = sim.snapshot().to_string();
        out.push_str("\nacting leaders (from - until, node, term):\n");
        for span in sim.acting_spans() {
            writeln!(out, "  {}", span_line(&span)).unwrap();
        }
        out.push_str("\nchecks:\n");
        for (what, holds) in &self.0 {
            let verdict = if *holds { "ok    " } else { "FAILED" };
            writeln!(out, "  {verdict}  {what}").unwrap();
        }
        out
    }

    /// Fail the test, naming every check that failed.
    #[track_caller]
    pub fn assert_all(&self, sim: &Cluster) {
        let failed: Vec<&str> = (self.0.iter())
            .filter(|(_, holds)| !holds)
            .map(|(what, _)| what.as_str())
            .collect();
        assert!(
            failed.is_empty(),
            "{}",
            sim.failure(&format!("failed checks:\n  {}", failed.join("\n  ")))
        );
    }
}

fn span_line(span: &ActingSpan) -> String {
    let secs = |d: Duration| format!("{:.3} s", d.as_secs_f64());
    format!(
        "{:>10} - {:<10}  {}  term {}",
        secs(span.from),
        span.until.map_or("end".to_string(), secs),
        span.node,
        span.term
    )
}

/// Run for `duration`, stepping, and return the longest unbroken time during which the
/// up nodes named two or more different leaders (split views).
pub fn longest_split(sim: &mut Cluster, duration: Duration) -> Duration {
    let end = sim.now() + duration;
    let (mut longest, mut since) = (Duration::ZERO, None);
    while sim.now() < end {
        sim.step();
        let mut named: Vec<String> = sim.up().iter().filter_map(|n| sim.leader(n)).collect();
        named.sort();
        named.dedup();
        if named.len() > 1 {
            let start = *since.get_or_insert(sim.now());
            longest = longest.max(sim.now() - start);
        } else {
            since = None;
        }
    }
    longest
}

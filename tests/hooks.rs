//! The `LeaderChanged` and `HealthCheck` contracts, on real nodes over loopback.
//!
//! Each test starts its own cluster on OS-assigned ports and waits for conditions with
//! generous deadlines rather than asserting speeds, so a busy machine slows it down
//! but does not fail it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use les::config::Config;
use les::hooks::{HealthCheck, HookError, LeaderChange, LeaderChanged};
use les::net::TokioNetwork;
use les::node::{Node, NodeBuilder, NodeHandle};

const PATIENCE: Duration = Duration::from_secs(20);

/// One call a handler received.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Started(String),
    Change(LeaderChange),
}

#[derive(Default)]
struct Log {
    calls: Mutex<Vec<Call>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Log {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn changes(&self) -> Vec<LeaderChange> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Change(c) => Some(c),
                Call::Started(_) => None,
            })
            .collect()
    }

    /// Record entry, hold for `delay`, record exit: overlapping calls show in
    /// `max_in_flight`.
    async fn enter(&self, call: Call, delay: Duration) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.calls.lock().unwrap().push(call);
        tokio::time::sleep(delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A handler that records every call; what else it does is up to `behaviour`.
struct Recorder {
    log: Arc<Log>,
    delay: Duration,
    behaviour: Behaviour,
}

enum Behaviour {
    Succeed,
    /// `Err` on every change that makes this node leader.
    FailOnGain,
    /// Panic on the first change, succeed afterwards.
    PanicOnce(AtomicBool),
    /// Block every change until the gate opens.
    Block(Arc<tokio::sync::Notify>),
    /// On losing leadership, wait, then note whether every peer still follows us.
    CheckPeersOnLoss {
        peers: Arc<OnceLock<Vec<NodeHandle>>>,
        still_followed: Arc<Mutex<Option<bool>>>,
    },
}

impl Recorder {
    fn new(behaviour: Behaviour) -> (Self, Arc<Log>) {
        let log = Arc::new(Log::default());
        let r = Recorder {
            log: log.clone(),
            delay: Duration::ZERO,
            behaviour,
        };
        (r, log)
    }
}

impl LeaderChanged for Recorder {
    async fn leader_changed(&self, change: LeaderChange) -> Result<(), HookError> {
        self.log
            .enter(Call::Change(change.clone()), self.delay)
            .await;
        match &self.behaviour {
            Behaviour::Succeed => Ok(()),
            Behaviour::FailOnGain if change.gained() => Err(HookError::new("cannot take the IP")),
            Behaviour::FailOnGain => Ok(()),
            Behaviour::PanicOnce(done) => {
                if !done.swap(true, Ordering::SeqCst) {
                    panic!("handler bug");
                }
                Ok(())
            }
            Behaviour::Block(gate) => {
                gate.notified().await;
                Ok(())
            }
            Behaviour::CheckPeersOnLoss {
                peers,
                still_followed,
            } => {
                if change.lost() {
                    // Several gossip rounds: peers that could see we are leaving would
                    // have elected someone else by now.
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    let followed = peers.get().is_some_and(|ps| {
                        ps.iter().all(|p| p.leader().as_deref() == Some(&change.me))
                    });
                    *still_followed.lock().unwrap() = Some(followed);
                }
                Ok(())
            }
        }
    }

    async fn started(&self, me: &str) -> Result<(), HookError> {
        self.log
            .enter(Call::Started(me.to_string()), Duration::ZERO)
            .await;
        Ok(())
    }
}

/// Health decided by a flag the test flips.
struct Flag(Arc<AtomicBool>);

impl HealthCheck for Flag {
    async fn check(&self) -> Result<(), HookError> {
        if self.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(HookError::new("flag down"))
        }
    }
}

fn free_addrs(n: usize) -> Vec<String> {
    // Bind them all before dropping any, so the OS hands out distinct ports.
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| format!("127.0.0.1:{}", l.local_addr().unwrap().port()))
        .collect()
}

fn config(addr: &str, seeds: &[String]) -> Config {
    let mut cfg = Config::new(addr, seeds.to_vec());
    cfg.bind = addr.parse().unwrap();
    cfg.interval = Duration::from_millis(100);
    cfg
}

/// Start `n` nodes in seniority order (node 0 most senior); `setup` adds handlers.
async fn cluster(
    n: usize,
    mut setup: impl FnMut(usize, NodeBuilder<TokioNetwork>) -> NodeBuilder<TokioNetwork>,
) -> Vec<NodeHandle> {
    let addrs = free_addrs(n);
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let builder = setup(i, Node::builder(config(addr, &addrs)));
        nodes.push(builder.start().await.unwrap());
        // Distinct start times, so seniority is the start order.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes
}

/// Wait until every node in `nodes` names `leader`.
async fn agree_on(nodes: &[&NodeHandle], leader: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let views: Vec<Option<String>> = nodes.iter().map(|n| n.leader()).collect();
        if views.iter().all(|v| v.as_deref() == Some(leader)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no agreement on {leader} within {PATIENCE:?}: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The calls form one unbroken chain: `started` first and once, then each change
/// starting where the previous one ended, never a repeat.
fn assert_chain(log: &Log, me: &str) {
    let calls = log.calls();
    assert_eq!(
        calls.first(),
        Some(&Call::Started(me.to_string())),
        "{calls:?}"
    );
    let mut leader: Option<String> = None;
    let mut term = 0;
    for call in &calls[1..] {
        let Call::Change(c) = call else {
            panic!("started called twice: {calls:?}");
        };
        assert_eq!(c.me, me);
        assert_eq!(
            c.previous, leader,
            "a change was skipped or reordered: {calls:?}"
        );
        assert_ne!(c.previous, c.current, "not a change: {calls:?}");
        assert!(c.term >= term, "term went back: {calls:?}");
        leader = c.current.clone();
        term = c.term;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_are_told_of_each_change_once_in_order_and_never_concurrently() {
    let mut logs = Vec::new();
    let nodes = cluster(3, |i, b| {
        let (mut r, log) = Recorder::new(Behaviour::Succeed);
        if i == 2 {
            // Much slower than the changes below come: they queue up behind each other.
            r.delay = Duration::from_millis(400);
        }
        logs.push(log);
        b.on_leader_change(r)
    })
    .await;
    let addr = |i: usize| nodes[i].addr().to_string();
    agree_on(&[&nodes[0], &nodes[1], &nodes[2]], &addr(0)).await;
    nodes[0].leave().await;
    agree_on(&[&nodes[1], &nodes[2]], &addr(1)).await;
    nodes[1].leave().await;
    // A node that had peers and lost them all leads alone.
    agree_on(&[&nodes[2]], &addr(2)).await;
    nodes[2].leave().await;

    for (i, log) in logs.iter().enumerate() {
        assert_chain(log, &addr(i));
        let changes = log.changes();
        assert_eq!(
            changes.len() as u64,
            nodes[i].metrics().leader_changes,
            "node {i}: one call per change the node saw: {changes:?}"
        );
        assert_eq!(log.max_in_flight.load(Ordering::SeqCst), 1, "node {i}");
        let last = changes.last().unwrap();
        assert!(
            last.lost() && last.current.is_none(),
            "node {i} left leading: {last:?}"
        );
    }
    // The slow handler saw the whole history, in order, after it had happened.
    let slow: Vec<Option<String>> = logs[2]
        .changes()
        .iter()
        .map(|c| c.current.clone())
        .collect();
    assert_eq!(
        slow,
        vec![Some(addr(0)), Some(addr(1)), Some(addr(2)), None]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_returns_does_not_stall_gossip() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut stuck_log = None;
    let nodes = cluster(3, |i, b| {
        if i != 0 {
            return b;
        }
        let (r, log) = Recorder::new(Behaviour::Block(gate.clone()));
        stuck_log = Some(log);
        b.on_leader_change(r).hook_timeout(Duration::from_secs(120))
    })
    .await;
    let stuck_log = stuck_log.unwrap();
    let addr = |i: usize| nodes[i].addr().to_string();
    agree_on(&[&nodes[0], &nodes[1], &nodes[2]], &addr(0)).await;
    wait_until("the handler to be called", || {
        stuck_log.changes().len() == 1
    })
    .await;

    // The handler is stuck in its first call; membership and elections go on.
    nodes[2].leave().await;
    wait_until("node 0 to drop the node that left", || {
        nodes[0].metrics().members == 1
    })
    .await;
    nodes[1].leave().await;
    wait_until("node 0 to drop the other one", || {
        nodes[0].metrics().members == 0
    })
    .await;
    assert!(nodes[0].is_leader());
    assert_eq!(stuck_log.changes().len(), 1, "still in the first call");

    gate.notify_one();
    gate.notify_one(); // the leave's change, if it queued behind
    nodes[0].leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_caught_and_the_next_changes_still_arrive() {
    let addr = free_addrs(1).remove(0);
    // A one-node cluster leads at once; the handler panics on that first change.
    let (r, log) = Recorder::new(Behaviour::PanicOnce(AtomicBool::new(false)));
    let node = Node::builder(config(&addr, std::slice::from_ref(&addr)))
        .on_leader_change(r)
        .step_down_cooldown(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    // A panic on gaining leadership is a failure: the node steps down, then leads again
    // after the cooldown, and the handler hears all of it.
    wait_until("the step-down and the second gain", || {
        log.changes().len() >= 3
    })
    .await;
    let currents: Vec<Option<String>> = log.changes()[..3]
        .iter()
        .map(|c| c.current.clone())
        .collect();
    assert_eq!(currents, vec![Some(addr.clone()), None, Some(addr.clone())]);
    wait_until("leadership again", || node.is_leader()).await;
    node.diag().await.unwrap();
    node.leave().await;
    assert_chain(&log, &addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_handler_fails_steps_down_and_the_next_most_senior_leads() {
    let mut failing_log = None;
    let nodes = cluster(3, |i, b| {
        if i != 0 {
            return b;
        }
        let (r, log) = Recorder::new(Behaviour::FailOnGain);
        failing_log = Some(log);
        b.on_leader_change(r)
            .step_down_cooldown(Duration::from_secs(120))
    })
    .await;
    let failing_log = failing_log.unwrap();
    let addr = |i: usize| nodes[i].addr().to_string();
    agree_on(&[&nodes[0], &nodes[1], &nodes[2]], &addr(1)).await;
    let diag = nodes[0].diag().await.unwrap();
    assert!(!diag.state.eligible, "ineligible during the cooldown");
    let changes = failing_log.changes();
    assert!(changes[0].gained(), "{changes:?}");
    assert!(changes[1].lost(), "{changes:?}");
    // And it stays that way: node 0 does not take leadership back during the cooldown.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(failing_log.changes().iter().filter(|c| c.gained()).count() == 1);
    for n in &nodes {
        n.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_leader_is_told_while_its_peers_still_follow_it() {
    let peers = Arc::new(OnceLock::new());
    let still_followed = Arc::new(Mutex::new(None));
    let nodes = cluster(3, |i, b| {
        if i != 0 {
            return b;
        }
        let (r, _) = Recorder::new(Behaviour::CheckPeersOnLoss {
            peers: peers.clone(),
            still_followed: still_followed.clone(),
        });
        b.on_leader_change(r)
    })
    .await;
    let addr = |i: usize| nodes[i].addr().to_string();
    agree_on(&[&nodes[0], &nodes[1], &nodes[2]], &addr(0)).await;
    assert!(peers.set(vec![nodes[1].clone(), nodes[2].clone()]).is_ok());
    nodes[0].leave().await;
    assert_eq!(
        *still_followed.lock().unwrap(),
        Some(true),
        "peers elected a successor while the leader was still releasing"
    );
    agree_on(&[&nodes[1], &nodes[2]], &addr(1)).await;
    nodes[1].leave().await;
    nodes[2].leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_node_never_leads_and_a_leader_that_turns_unhealthy_steps_down() {
    let healthy = Arc::new(AtomicBool::new(false));
    let mut log0 = None;
    let nodes = cluster(3, |i, b| {
        if i != 0 {
            return b;
        }
        let (r, log) = Recorder::new(Behaviour::Succeed);
        log0 = Some(log);
        b.on_leader_change(r)
            .health_check(Flag(healthy.clone()), Duration::from_millis(50))
    })
    .await;
    let log0 = log0.unwrap();
    let addr = |i: usize| nodes[i].addr().to_string();
    let all = [&nodes[0], &nodes[1], &nodes[2]];
    // The most senior node starts unhealthy: the next one leads, and node 0 never
    // led, not even before its first check.
    agree_on(&all, &addr(1)).await;
    assert!(!nodes[0].diag().await.unwrap().state.eligible);
    assert!(
        log0.changes().iter().all(|c| !c.gained()),
        "{:?}",
        log0.changes()
    );

    healthy.store(true, Ordering::SeqCst);
    agree_on(&all, &addr(0)).await; // the most senior eligible node leads

    healthy.store(false, Ordering::SeqCst);
    agree_on(&all, &addr(1)).await;
    let changes = log0.changes();
    assert!(changes.iter().any(|c| c.gained()) && changes.last().unwrap().lost());
    for n in &nodes {
        n.leave().await;
    }
}

//! Keyed clusters in-process (loopback, OS-assigned ports): they converge, a node with
//! another key or another cluster name never joins, a key rotates with no leader
//! change, and an unkeyed cluster becomes a keyed one through `accept_unsigned`.
//! The same attacks against real processes are in `tests/attacks.rs`.

use std::time::{Duration, Instant};

use les::auth::{Key, Keyring, Settings};
use les::config::Config;
use les::node::{Node, NodeHandle};

fn ring(keys: &[&Key]) -> Option<Keyring> {
    Keyring::new(keys.iter().map(|k| (*k).clone()).collect())
}

fn keyed(keys: &[&Key]) -> Settings {
    Settings {
        keyring: ring(keys),
        accept_unsigned: false,
    }
}

fn free_addrs(n: usize) -> Vec<String> {
    let ls: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect()
}

async fn start(addr: &str, seeds: &[String], cluster: Option<&str>, auth: Settings) -> NodeHandle {
    let mut cfg = Config::new(addr, seeds.to_vec());
    cfg.bind = addr.parse().expect("socket addr");
    cfg.interval = Duration::from_millis(100);
    cfg.request_timeout = Duration::from_millis(300);
    cfg.cluster = cluster.map(str::to_string);
    Node::builder(cfg)
        .auth(auth)
        .start()
        .await
        .expect("node starts")
}

/// Start nodes one by one (the first is the most senior) and wait for agreement.
async fn cluster(addrs: &[String], cluster_name: Option<&str>, auth: &Settings) -> Vec<NodeHandle> {
    let mut nodes = Vec::new();
    for a in addrs {
        nodes.push(start(a, addrs, cluster_name, auth.clone()).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    wait_until("agreement on the most senior", || {
        nodes
            .iter()
            .all(|n| n.leader().as_deref() == Some(&addrs[0]))
    })
    .await;
    nodes
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn members(n: &NodeHandle) -> Vec<String> {
    n.diag().await.expect("diag").state.members
}

fn leader_changes(nodes: &[NodeHandle]) -> Vec<u64> {
    nodes.iter().map(|n| n.metrics().leader_changes).collect()
}

async fn leave_all(nodes: Vec<NodeHandle>) {
    for n in nodes.iter().rev() {
        n.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_or_cluster_never_joins() {
    let (k1, k2) = (Key::generate().unwrap(), Key::generate().unwrap());
    let addrs = free_addrs(5);
    let nodes = cluster(&addrs[..3], Some("prod"), &keyed(&[&k1])).await;
    let changes = leader_changes(&nodes);
    let term = nodes[0].diag().await.unwrap().state.term;
    let wrong_key = start(&addrs[3], &addrs[..3], Some("prod"), keyed(&[&k2])).await;
    let wrong_name = start(&addrs[4], &addrs[..3], Some("dev"), keyed(&[&k1])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in &nodes {
        let m = members(n).await;
        assert_eq!(m.len(), 3, "{} lists {m:?}", n.addr());
        assert_eq!(n.leader().as_deref(), Some(addrs[0].as_str()));
    }
    assert!(members(&wrong_key).await.len() == 1);
    assert!(members(&wrong_name).await.len() == 1);
    // Both outsiders were refused, and counted.
    let refused: u64 = nodes.iter().map(|n| n.metrics().requests_refused).sum();
    assert!(refused > 0);
    assert_eq!(leader_changes(&nodes), changes);
    assert_eq!(nodes[0].diag().await.unwrap().state.term, term);
    wrong_key.leave().await;
    wrong_name.leave().await;
    leave_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotates_without_a_leader_change() {
    let (k1, k2) = (Key::generate().unwrap(), Key::generate().unwrap());
    let addrs = free_addrs(5);
    let nodes = cluster(&addrs, None, &keyed(&[&k1])).await;
    let changes = leader_changes(&nodes);
    // Install, switch the signer, remove the old key: each step everywhere first,
    // and node by node within a step, as an operator's SIGHUPs would.
    for step in [keyed(&[&k1, &k2]), keyed(&[&k2, &k1]), keyed(&[&k2])] {
        for n in &nodes {
            n.reload_auth(step.clone());
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for n in &nodes {
        assert_eq!(members(n).await.len(), 5, "{}", n.addr());
        assert_eq!(n.leader().as_deref(), Some(addrs[0].as_str()));
    }
    assert_eq!(leader_changes(&nodes), changes, "no leader change");
    let refused: u64 = nodes.iter().map(|n| n.metrics().requests_refused).sum();
    assert_eq!(refused, 0, "no request was refused during the rotation");
    // The old key alone no longer gets in.
    let extra = free_addrs(1);
    let stale = start(&extra[0], &addrs, None, keyed(&[&k1])).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(members(&nodes[0]).await.len(), 5);
    stale.leave().await;
    leave_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unkeyed_cluster_turns_keyed_without_a_leader_change() {
    let k = Key::generate().unwrap();
    let addrs = free_addrs(3);
    let nodes = cluster(&addrs, None, &Settings::default()).await;
    let changes = leader_changes(&nodes);
    let rollout = Settings {
        keyring: ring(&[&k]),
        accept_unsigned: true,
    };
    for step in [rollout, keyed(&[&k])] {
        for n in &nodes {
            n.reload_auth(step.clone());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for n in &nodes {
        assert_eq!(members(n).await.len(), 3, "{}", n.addr());
    }
    assert_eq!(leader_changes(&nodes), changes, "no leader change");
    // Now an unkeyed node is refused.
    let extra = free_addrs(1);
    let unkeyed = start(&extra[0], &addrs, None, Settings::default()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(members(&nodes[0]).await.len(), 3);
    assert!(
        nodes
            .iter()
            .map(|n| n.metrics().requests_refused)
            .sum::<u64>()
            > 0
    );
    unkeyed.leave().await;
    leave_all(nodes).await;
}

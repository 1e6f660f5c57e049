//! Operator step-down on real nodes (in-process, loopback, OS-assigned ports):
//! `POST /step-down` moves leadership to the next most senior node with one leader
//! change per node and a higher term; a keyed node refuses it unless it is signed with
//! the keyring, and changes nothing then; a follower answers 409; with an admin
//! address it is served there only. `les step-down` (the binary) does the same from
//! the command line.

mod common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use les::auth::{Auth, Key, Keyring, Settings};
use les::client::{ClientLinks, ContactError, PeerClient};
use les::config::Config;
use les::net::{SystemClock, TokioNetwork};
use les::node::{Node, NodeHandle};

use common::{raw_http, status_of};

fn keyed(key: &Key) -> Settings {
    Settings {
        keyring: Keyring::new(vec![key.clone()]),
        accept_unsigned: false,
    }
}

fn free_addrs(n: usize) -> Vec<String> {
    common::free_ports(n)
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect()
}

/// Three nodes started one by one (the first is the most senior), agreed on it.
async fn three(auth: &Settings, admin: bool) -> (Vec<String>, Vec<NodeHandle>) {
    let addrs = free_addrs(if admin { 6 } else { 3 });
    let (gossip, admins) = addrs.split_at(3);
    let mut nodes = Vec::new();
    for (i, a) in gossip.iter().enumerate() {
        let mut cfg = Config::new(a, gossip.to_vec());
        cfg.bind = a.parse().expect("socket addr");
        cfg.interval = Duration::from_millis(200);
        cfg.admin_bind = admins.get(i).map(|a| a.parse().expect("socket addr"));
        let node = Node::builder(cfg).auth(auth.clone()).start().await;
        nodes.push(node.expect("node starts"));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    wait_until("agreement on the first node", || {
        nodes
            .iter()
            .all(|n| n.leader().as_deref() == Some(&gossip[0]))
    })
    .await;
    (addrs, nodes)
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn client(auth: Settings) -> PeerClient<TokioNetwork> {
    PeerClient::for_node(
        TokioNetwork,
        Duration::from_secs(2),
        ClientLinks {
            metrics: Arc::default(),
            lost: None,
            auth: Arc::new(Auth::new("", auth)),
            clock: Arc::new(SystemClock),
        },
    )
}

fn changes(nodes: &[NodeHandle]) -> Vec<u64> {
    nodes.iter().map(|n| n.metrics().leader_changes).collect()
}

async fn leave_all(nodes: Vec<NodeHandle>) {
    for n in nodes.iter().rev() {
        n.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_leader_steps_down_only_when_asked_with_the_key_and_the_next_takes_over_once() {
    let key = Key::generate().expect("key");
    let (addrs, nodes) = three(&keyed(&key), false).await;
    let leader = &addrs[0];
    let before = changes(&nodes);
    let term = nodes[0].subscribe().borrow().term;

    let unsigned = raw_http(leader, "POST /step-down", "").await;
    assert_eq!(status_of(&unsigned), 401, "{unsigned}");
    let other_key = Key::generate().expect("key");
    match client(keyed(&other_key)).step_down(leader).await {
        Err(ContactError::Refused { status, .. }) => assert_eq!(status.as_u16(), 401),
        other => panic!("a wrong key must be refused: {other:?}"),
    }
    let get = raw_http(leader, "GET /step-down", "").await;
    assert_eq!(status_of(&get), 405, "{get}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        nodes[0].leader().as_deref(),
        Some(leader.as_str()),
        "nothing changed"
    );
    assert_eq!(changes(&nodes), before);
    assert!(
        nodes[0].metrics().requests_refused >= 2,
        "refusals are counted"
    );

    let operator = client(keyed(&key));
    let follower = operator.step_down(&addrs[1]).await.expect("an answer");
    assert!(!follower.was_leader, "{follower:?}");
    assert!(follower.message.contains("not the leader"), "{follower:?}");

    let reply = operator.step_down(leader).await.expect("stepped down");
    assert!(reply.was_leader && reply.term > term, "{reply:?}");
    assert_eq!(reply.leader.as_deref(), Some(addrs[1].as_str()));
    wait_until("the next most senior leads everywhere", || {
        nodes
            .iter()
            .all(|n| n.leader().as_deref() == Some(&addrs[1]))
            && nodes[1].is_leader()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await; // a few rounds: no flap back
    let after = changes(&nodes);
    let per_node: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(per_node, vec![1, 1, 1], "one leader change per node");
    assert!(
        nodes[1].subscribe().borrow().term > term,
        "a higher term (fencing)"
    );
    leave_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_address_step_down_is_served_there_only() {
    let (addrs, nodes) = three(&Settings::default(), true).await;
    let on_gossip = raw_http(&addrs[0], "POST /step-down", "").await;
    assert_eq!(status_of(&on_gossip), 404, "{on_gossip}");
    assert_eq!(nodes[0].leader().as_deref(), Some(addrs[0].as_str()));
    let on_admin = raw_http(&addrs[3], "POST /step-down", "").await;
    assert_eq!(status_of(&on_admin), 200, "unkeyed: accepted; {on_admin}");
    wait_until("the next most senior leads", || {
        nodes
            .iter()
            .all(|n| n.leader().as_deref() == Some(&addrs[1]))
    })
    .await;
    leave_all(nodes).await;
}

/// `les step-down` with `args`, in a blocking thread (the nodes run on this runtime).
async fn les_step_down(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_les"));
        cmd.arg("step-down").args(args);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LES_")) {
            cmd.env_remove(k);
        }
        cmd.output().expect("run les")
    })
    .await
    .expect("join")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn les_step_down_moves_leadership_and_says_so_or_fails_clearly() {
    let key = Key::generate().expect("key");
    let dir = std::env::temp_dir().join(format!("les-step-down-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key_file = dir.join("keys");
    std::fs::write(&key_file, format!("{}\n", key.to_base64())).expect("key file");
    let key_file = key_file.display().to_string();
    let (addrs, nodes) = three(&keyed(&key), false).await;
    let node = |a: &str| vec!["--node".to_string(), a.to_string()];

    let out = les_step_down(node(&addrs[0])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("refused"), "no key: {}", text(&out));

    let with_key = |a: &str| [node(a), vec!["--key-file".into(), key_file.clone()]].concat();
    let out = les_step_down(with_key(&addrs[1])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("did not step down"), "{}", text(&out));

    let out = les_step_down(with_key(&addrs[0])).await;
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains(&format!("leader before: {}", addrs[0])),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("leader after:  {}", addrs[1])),
        "{printed}"
    );
    assert!(printed.contains(" ms"), "{printed}");
    wait_until("agreement on the second node", || {
        nodes
            .iter()
            .all(|n| n.leader().as_deref() == Some(&addrs[1]))
    })
    .await;
    leave_all(nodes).await;

    let out = les_step_down(with_key(&addrs[0])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("cannot ask"), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rolling_a_key_out_still_refuses_an_unsigned_step_down() {
    let key = Key::generate().expect("key");
    let rolling = Settings {
        accept_unsigned: true,
        ..keyed(&key)
    };
    let (addrs, nodes) = three(&rolling, false).await;
    let unsigned = raw_http(&addrs[0], "POST /step-down", "").await;
    assert_eq!(status_of(&unsigned), 401, "{unsigned}");
    let state = raw_http(&addrs[0], "GET /state/127.0.0.1:9", "").await;
    assert_eq!(status_of(&state), 200, "while unsigned gossip is accepted");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(nodes[0].leader().as_deref(), Some(addrs[0].as_str()));
    leave_all(nodes).await;
}

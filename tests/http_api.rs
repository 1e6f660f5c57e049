//! The HTTP API of a real node (in-process, loopback, OS-assigned ports), and how a
//! node copes with peers that misbehave or that speak only the original Python fields.

mod common;

use std::time::{Duration, Instant};

use common::status_of;

use les::config::Config;
use les::node::{Node, NodeHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Send a raw HTTP/1.1 request and return the whole answer as text.
async fn raw(addr: &str, request_line: &str) -> String {
    common::raw_http(addr, request_line, "Content-Length: 0\r\n").await
}

fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// A listener on a free loopback port, and its address.
async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    (l, addr)
}

async fn start_node(listener: TcpListener, addr: &str, seeds: Vec<String>) -> NodeHandle {
    drop(listener); // free the reserved port for the node itself
    let mut cfg = Config::new(addr, seeds);
    cfg.bind = addr.parse().expect("socket addr");
    cfg.interval = Duration::from_millis(100);
    cfg.request_timeout = Duration::from_millis(300);
    Node::start(cfg).await.expect("node starts")
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_like_the_python_les_and_rejects_nonsense() {
    let (l, addr) = listener().await;
    let node = start_node(l, &addr, vec![addr.clone()]).await;
    wait_until("a one-node cluster to lead", || node.is_leader()).await;

    let ping = raw(&addr, "GET /ping").await;
    assert_eq!((status_of(&ping), body_of(&ping)), (200, "OK"));
    for path in ["/state", "/state/", "/diag", "/diag/"] {
        let a = raw(&addr, &format!("GET {path}")).await;
        assert_eq!(status_of(&a), 200, "{path}: {a}");
        let v: serde_json::Value = serde_json::from_str(body_of(&a)).expect("json");
        let state = if path.starts_with("/diag") {
            &v["state"]
        } else {
            &v
        };
        assert_eq!(state["leader"], serde_json::json!(addr), "{path}");
        assert_eq!(state["members"], serde_json::json!([addr]), "{path}");
        assert!(state["start_time"].as_f64().is_some(), "{path}");
    }
    let diag = raw(&addr, "GET /diag/").await;
    assert!(
        body_of(&diag).contains("\n  \"state\""),
        "pretty-printed: {diag}"
    );
    let metrics = raw(&addr, "GET /metrics").await;
    assert!(body_of(&metrics).contains("les_is_leader 1"), "{metrics}");

    assert_eq!(
        status_of(&raw(&addr, "GET /state/not-an-address").await),
        400
    );
    assert_eq!(status_of(&raw(&addr, "GET /state/a:1%2F..").await), 400);
    assert_eq!(status_of(&raw(&addr, "GET /nothing").await), 404);
    assert_eq!(status_of(&raw(&addr, "DELETE /state").await), 405);
    assert_eq!(status_of(&raw(&addr, "GET /leave/127.0.0.1:9").await), 405);
    node.leave().await;
}

/// Serve `answer` (a complete HTTP response) to every request, forever.
async fn fake_peer(l: TcpListener, answer: Vec<u8>) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&answer).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn http_ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_peers_are_failed_contacts_and_a_python_peer_is_a_member() {
    let (garbage_l, garbage) = listener().await;
    let (huge_l, huge) = listener().await;
    let (hang_l, hang) = listener().await;
    let (python_l, python) = listener().await;
    let (node_l, me) = listener().await;

    tokio::spawn(fake_peer(garbage_l, http_ok(b"{\"members\": oops")));
    // Claims 5 MB and sends them: over the 1 MiB cap.
    tokio::spawn(fake_peer(huge_l, http_ok(&vec![b' '; 5 << 20])));
    // Accepts connections and never answers.
    let hung = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang_l.accept().await {
            held.push(s);
        }
    });
    // A Python LES node: only the original three fields, and it is the most senior.
    let py_state =
        format!(r#"{{"members": ["{python}", "{me}"], "leader": false, "start_time": 1.5}}"#);
    tokio::spawn(fake_peer(python_l, http_ok(py_state.as_bytes())));

    let seeds = vec![
        me.clone(),
        garbage.clone(),
        huge.clone(),
        hang.clone(),
        python.clone(),
    ];
    let node = start_node(node_l, &me, seeds).await;

    wait_until("the Python peer to lead by seniority", || {
        node.leader().as_deref() == Some(&python)
    })
    .await;
    // Let a few more rounds of failures happen; the node must stay well.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let diag = node.diag().await.expect("diag");
    assert_eq!(
        diag.state.members,
        vec![me.clone(), python.clone()],
        "only the usable peer is a member"
    );
    assert_eq!(
        diag.member_states[&python].term, 0,
        "missing les fields take their defaults"
    );
    let m = node.metrics();
    assert!(
        m.requests_failed >= 6,
        "garbage, huge and hang failed every round: {m:?}"
    );
    assert!(
        m.bytes_received < (2 << 20),
        "oversized answers are not buffered whole: {m:?}"
    );
    assert_eq!(
        status_of(&raw(&me, "GET /ping").await),
        200,
        "still serving"
    );

    let t = Instant::now();
    node.leave().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "leave is not held up by a hung peer"
    );
    hung.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_peer_with_an_impossible_term_is_not_added() {
    let (fake_l, fake) = listener().await;
    let (node_l, me) = listener().await;
    // The attack from the issue: a senior-looking fake whose term would freeze ours.
    let state = format!(
        r#"{{"members": ["{fake}"], "leader": false, "start_time": 1, "term": 18446744073709551615}}"#
    );
    tokio::spawn(fake_peer(fake_l, http_ok(state.as_bytes())));
    let node = start_node(node_l, &me, vec![me.clone()]).await;
    wait_until("the lone node to lead", || {
        node.leader().as_deref() == Some(&me)
    })
    .await;
    let term = node.diag().await.expect("diag").state.term;
    assert_eq!(
        status_of(&raw(&me, &format!("GET /state/{fake}")).await),
        200
    );
    wait_until("the fake's state to be refused", || {
        node.metrics().terms_rejected >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let diag = node.diag().await.expect("diag");
    assert_eq!(
        diag.state.members,
        vec![me.clone()],
        "the fake is not a member"
    );
    assert_eq!(diag.state.term, term, "the term did not move");
    assert_eq!(node.leader().as_deref(), Some(me.as_str()));
    node.leave().await;
}

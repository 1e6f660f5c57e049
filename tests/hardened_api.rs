//! The API's limits, with and without a key, on a real node in-process (loopback):
//! which requests are open, what a refusal looks like and where it is counted, probes
//! only of members, no request bodies, the admin listener, and silent connections cut.

mod common;

use std::time::Duration;

use les::auth::{Auth, Key, Keyring, Settings, AUTH_HEADER};
use les::config::Config;
use les::node::{Node, NodeHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{raw_http as raw, status_of as status};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

async fn node(auth: Settings, admin: Option<String>) -> NodeHandle {
    let addr = free_addr();
    let mut cfg = Config::new(&addr, vec![addr.clone()]);
    cfg.bind = addr.parse().expect("socket addr");
    cfg.interval = Duration::from_millis(100);
    cfg.admin_bind = admin.map(|a| a.parse().expect("admin addr"));
    Node::builder(cfg)
        .auth(auth)
        .start()
        .await
        .expect("node starts")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs()
}

fn keyed(key: &Key) -> Settings {
    Settings {
        keyring: Keyring::new(vec![key.clone()]),
        accept_unsigned: false,
    }
}

/// Two unkeyed nodes on fresh loopback ports, gossiping every 50 ms, once they agree on
/// a leader: (the first one's address, the first, the second).
async fn agreeing_pair() -> (String, NodeHandle, NodeHandle) {
    let (a, b) = (free_addr(), free_addr());
    let start = |me: &str| {
        let mut cfg = Config::new(me, vec![a.clone(), b.clone()]);
        cfg.bind = me.parse().expect("socket addr");
        cfg.interval = Duration::from_millis(50);
        Node::start(cfg)
    };
    let na = start(&a).await.expect("a starts");
    let nb = start(&b).await.expect("b starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(na.leader().is_some() && na.leader() == nb.leader()) {
        assert!(std::time::Instant::now() < deadline, "agreement");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (a, na, nb)
}

/// A listener that counts the connections it gets.
async fn bait() -> (String, tokio::task::JoinHandle<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let counter = tokio::spawn(async move {
        let mut n = 0;
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(1500), l.accept()).await {
            n += 1;
        }
        n
    });
    (addr, counter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_node_serves_reads_to_anyone_and_refuses_the_rest() {
    let key = Key::generate().unwrap();
    let n = node(keyed(&key), None).await;
    let a = n.addr().to_string();
    for open in ["GET /ping", "GET /state", "GET /diag/", "GET /metrics"] {
        assert_eq!(status(&raw(&a, open, "").await), 200, "{open}");
    }
    let (target, contacts) = bait().await;
    for closed in [
        format!("GET /state/{target}"),
        format!("POST /leave/{target}"),
        format!("GET /probe/{target}"),
    ] {
        let answer = raw(&a, &closed, "").await;
        assert_eq!(status(&answer), 401, "{closed}: {answer}");
        assert!(answer.contains("no signature"), "{answer}");
        let forged = raw(&a, &closed, &format!("{AUTH_HEADER}: v1 ts=1 nonce=AAAAAAAAAAAAAAAAAAAAAA tag=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n")).await;
        assert_eq!(status(&forged), 401, "{closed}: {forged}");
    }
    assert_eq!(
        contacts.await.unwrap(),
        0,
        "a refused request contacted no one"
    );
    let metrics = raw(&a, "GET /metrics", "").await;
    assert!(
        metrics.contains("les_requests_refused_total{reason=\"unsigned\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("les_requests_refused_total{reason=\"forged\"} 3"));
    assert_eq!(n.diag().await.unwrap().state.members, vec![a.clone()]);

    // A valid tag gets through once; the same request again is a replay.
    let signer = Auth::new("", keyed(&key));
    let now = now_secs();
    let path = format!("/probe/{a}");
    let tag = signer.sign_request("GET", &path, now).unwrap();
    let header = format!("{AUTH_HEADER}: {}\r\n", tag.header);
    let first = raw(&a, &format!("GET {path}"), &header).await;
    assert_ne!(status(&first), 401, "{first}");
    assert!(
        first.to_lowercase().contains(AUTH_HEADER),
        "the answer is tagged"
    );
    let again = raw(&a, &format!("GET {path}"), &header).await;
    assert_eq!(status(&again), 401);
    assert!(again.contains("replayed"), "{again}");
    n.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_probes_reach_only_members_and_bodies_are_refused() {
    let n = node(Settings::default(), None).await;
    let a = n.addr().to_string();
    let (stranger, contacts) = bait().await;
    let answer = raw(&a, &format!("GET /probe/{stranger}"), "").await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert_eq!(contacts.await.unwrap(), 0, "no connection to a non-member");
    let body = raw(&a, "GET /ping", "Content-Length: 5\r\n\r\nhello").await;
    assert_eq!(status(&body), 413, "{body}");
    // Another cluster's request is refused even unkeyed.
    let other = raw(
        &a,
        &format!("GET /state/{stranger}"),
        "X-Les-Cluster: dev\r\n",
    )
    .await;
    assert_eq!(status(&other), 403, "{other}");
    assert!(other.contains("cluster"));
    n.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_takes_diag_and_metrics() {
    let admin = free_addr();
    let n = node(Settings::default(), Some(admin.clone())).await;
    let a = n.addr().to_string();
    assert_eq!(n.admin_addr().map(|s| s.to_string()), Some(admin.clone()));
    for path in ["GET /diag/", "GET /metrics", "GET /ping"] {
        assert_eq!(status(&raw(&admin, path, "").await), 200, "{path}");
    }
    assert_eq!(status(&raw(&a, "GET /diag/", "").await), 404);
    assert_eq!(status(&raw(&a, "GET /metrics", "").await), 404);
    assert_eq!(status(&raw(&a, "GET /ping", "").await), 200);
    // The admin listener serves nothing that changes state.
    assert_eq!(
        status(&raw(&admin, &format!("GET /state/{a}"), "").await),
        404
    );
    n.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_first_request_deadline() {
    let n = node(Settings::default(), None).await;
    let mut silent = TcpStream::connect(n.addr()).await.expect("connect");
    let mut half = TcpStream::connect(n.addr()).await.expect("connect");
    half.write_all(b"GET /sta").await.expect("write");
    let limit = les::api::FIRST_REQUEST_TIMEOUT + Duration::from_secs(2);
    for s in [&mut silent, &mut half] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(limit, s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed by the node: {read:?}"
        );
    }
    n.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_state_is_answered_304_and_the_tag_covers_the_etag() {
    let key = Key::generate().unwrap();
    let n = node(keyed(&key), None).await;
    let a = n.addr().to_string();
    // A lone node elects itself a moment after it starts, which changes its state:
    // take the etag of a state that has stopped changing (two equal reads in a row).
    let read_body = || async {
        let answer = raw(&a, "GET /state", "").await;
        answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    };
    let mut body = read_body().await;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = read_body().await;
        if again == body && n.leader().is_some() {
            break;
        }
        body = again;
    }
    assert!(n.leader().is_some(), "the lone node elects itself");
    let etag = les::wire::state_etag(body.as_bytes());
    let signer = Auth::new("", keyed(&key));
    let now = now_secs();
    let path = format!("/state/{a}");
    let ask = |inm: &str| {
        let tag = signer.sign_request("GET", &path, now).unwrap();
        let headers = format!("{AUTH_HEADER}: {}\r\nIf-None-Match: {inm}\r\n", tag.header);
        (tag, headers)
    };
    let (tag, headers) = ask(&etag);
    let answer = raw(&a, &format!("GET {path}"), &headers).await;
    assert_eq!(status(&answer), 304, "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "no body: {answer:?}");
    let answer_tag = answer
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{AUTH_HEADER}: ")))
        .expect("a tagged 304");
    assert_eq!(
        signer.verify_answer(Some(&tag), 304, Some(answer_tag), etag.as_bytes()),
        Ok(())
    );
    // Had the If-None-Match been altered on the way, the sender's own etag would not
    // verify against the answer.
    assert!(signer
        .verify_answer(Some(&tag), 304, Some(answer_tag), b"\"0000\"")
        .is_err());
    // Another etag gets the body.
    let (_, headers) = ask("\"stale\"");
    assert_eq!(
        status(&raw(&a, &format!("GET {path}"), &headers).await),
        200
    );
    n.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_agree_exchange_no_state_bodies() {
    let (_, na, nb) = agreeing_pair().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = na.metrics();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = na.metrics();
    let requests = after.requests_sent - before.requests_sent;
    let bytes = after.bytes_received - before.bytes_received;
    assert!(requests >= 10, "{requests} requests in a second");
    assert_eq!(bytes, 0, "{requests} requests, {bytes} body bytes: all 304");
    nb.leave().await;
    na.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_probe_timeout_header_is_ignored_not_fatal() {
    let (a, n, nb) = agreeing_pair().await;
    let b = nb.addr().to_string();
    for value in ["abc", "", "-5", "0", "18446744073709551615", "1e9", " 250 "] {
        let headers = format!("{}: {value}\r\n", les::wire::PROBE_TIMEOUT_HEADER);
        let started = std::time::Instant::now();
        let answer = raw(&a, &format!("GET /probe/{b}"), &headers).await;
        assert_eq!(status(&answer), 200, "{value:?}: {answer}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{value:?} took {:?}",
            started.elapsed()
        );
    }
    // A non-member is still never contacted, whatever the header says.
    let (bait_addr, bait) = bait().await;
    let headers = format!("{}: 300\r\n", les::wire::PROBE_TIMEOUT_HEADER);
    let answer = raw(&a, &format!("GET /probe/{bait_addr}"), &headers).await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert_eq!(
        bait.await.expect("bait"),
        0,
        "the node connected to a non-member"
    );
    n.leave().await;
    nb.leave().await;
}

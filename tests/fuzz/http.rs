//! Target `http`: raw HTTP/1.1 requests to one real node on loopback.
//!
//! The API is open to anything that can reach the port, so the server must survive
//! whatever arrives: arbitrary methods, paths with `%`, `..`, unicode, long segments
//! and runs of slashes, odd and oversized headers, bodies it never reads, and plain
//! garbage. One node serves every case (starting one per case would measure start-up,
//! not routing). Properties: every well-formed request gets an answer with a status
//! from [`ALLOWED`] within [`DEADLINE`]; garbage gets such an answer or a closed
//! connection within the same deadline; and after the run the node still answers
//! `GET /ping` with 200 and is the one-node cluster it was, leading itself.
//!
//! The routes that take an address (`/state/{addr}`, `/leave/{addr}`, `/probe/{addr}`)
//! make the node contact that address. Cases whose address is valid but not a
//! loopback one are skipped, so that the fuzzer never sends traffic (or DNS queries)
//! off the machine.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use les::config::Config;
use les::node::{Node, NodeHandle};
use les::wire::check_addr;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

/// Statuses the node may answer with: its routes' 200, 400, 404, 405 and 503; 401
/// and 403 for authentication; and hyper's own 400, 413, 414 (a request target over
/// 65,534 bytes) and 431 (headers over the 64 KiB buffer).
const ALLOWED: &[u16] = &[200, 400, 401, 403, 404, 405, 413, 414, 431, 503];

/// Longest a case may wait for its answer. The node answers in microseconds, except
/// `/probe/` to a refusing port (one connect) and `/diag` (one loop round trip).
const DEADLINE: Duration = Duration::from_secs(5);

/// A request, as bytes, and whether it is well-formed HTTP/1.1 that must be answered.
#[derive(Debug, Clone)]
struct Request {
    bytes: Vec<u8>,
    well_formed: bool,
    /// The request target, for the outbound-traffic filter.
    target: String,
}

fn method() -> BoxedStrategy<String> {
    prop_oneof![
        8 => prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE"])
            .prop_map(str::to_string),
        1 => "[A-Z]{1,12}",
        1 => prop::sample::select(vec!["get", "Get", "M-SEARCH", "X~!#$", "CONNECT"]).prop_map(str::to_string),
    ]
    .boxed()
}

/// One path segment. `port` is the node's own port.
fn segment(port: u16) -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(vec!["ping", "state", "diag", "leave", "probe", "metrics"])
            .prop_map(str::to_string),
        3 => prop::sample::select(vec![
            format!("127.0.0.1:{port}"),
            "127.0.0.1:1".to_string(),
            "[::1]:1".to_string(),
            "localhost:1".to_string(),
            "127.0.0.1:0".to_string(),
            "127.0.0.1:65536".to_string(),
        ]),
        2 => prop::sample::select(vec![
            "", ".", "..", "%2e%2e", "%2F", "%", "%zz", "%00", "%ff%fe", "~", "%20", ";a=1",
            "ping%2f", "PING", "state?x=1", "diag#frag", "*", "@", "a:1@b", "\u{e9}t\u{e9}",
            "\u{1F600}", "\u{202E}", "\u{FEFF}",
        ])
        .prop_map(str::to_string),
        2 => "[a-zA-Z0-9._~:%!$&'()*+,;=@-]{0,24}",
        1 => (1usize..4).prop_map(|k| "x".repeat(k * 25_000)),
    ]
    .boxed()
}

/// A request target: mostly origin-form paths, sometimes other forms.
fn target(port: u16) -> BoxedStrategy<String> {
    prop_oneof![
        12 => (prop::collection::vec(segment(port), 0..5), prop::sample::select(vec!["/", "//", "///"]), any::<bool>())
            .prop_map(|(segs, sep, trailing)| {
                let mut t = format!("/{}", segs.join(sep));
                if trailing {
                    t.push('/');
                }
                t
            }),
        1 => prop::sample::select(vec![
            "*", "/", "//", "////////////////////////ping", "/ping?", "/ping?a=b&c", "/?",
            "http://localhost/ping", "ping", "/./ping", "/../ping", "/ping/..", "/%2e%2e/ping",
        ])
        .prop_map(str::to_string),
        1 => (1usize..2000).prop_map(|n| "/".repeat(n)),
    ]
    .boxed()
}

fn header() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "Accept: */*", "User-Agent: fuzz", "X-Empty:", "Accept-Encoding: gzip, br",
            "Expect: 100-continue", "Upgrade: websocket", "Connection: keep-alive, Upgrade",
            "Content-Type: application/json", "Authorization: Bearer x", "Cookie: a=b",
            "Host: a:1", "Host: [::1]:4000", "Transfer-Encoding: chunked", "Transfer-Encoding: gzip",
            "Content-Length: 0", "Content-Length: 5", "Content-Length: 99999999999999999999",
            "Content-Length: -1", "Content-Length: 1, 2", "TE: trailers", "X-\u{e9}: v",
            "X-Tab:\tv", "X-Obs: a\r\n folded",
        ])
        .prop_map(str::to_string),
        1 => ("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", "[ -~]{0,40}").prop_map(|(k, v)| format!("{k}: {v}")),
        1 => (1usize..4).prop_map(|k| format!("X-Long: {}", "v".repeat(k * 30_000))),
    ]
    .boxed()
}

/// A well-formed request: a valid method, target and version, headers, and a body
/// that matches its `Content-Length`. Whatever hyper makes of it, it must answer.
fn well_formed(port: u16) -> impl Strategy<Value = Request> {
    (
        method(),
        target(port),
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
        prop::collection::vec(header(), 0..6),
        prop_oneof![Just(0usize), Just(0), 1usize..40, Just(200)],
        prop::bool::weighted(0.05),
    )
        .prop_map(move |(method, target, version, headers, body_len, many)| {
            let mut head = format!("{method} {target} {version}\r\nHost: 127.0.0.1:{port}\r\n");
            for h in &headers {
                head.push_str(h);
                head.push_str("\r\n");
            }
            if many {
                for i in 0..120 {
                    head.push_str(&format!("X-Many-{i}: {i}\r\n"));
                }
            }
            let has_length = headers.iter().any(|h| {
                h.to_ascii_lowercase().starts_with("content-length")
                    || h.to_ascii_lowercase().starts_with("transfer-encoding")
            });
            if !has_length {
                head.push_str(&format!("Content-Length: {body_len}\r\n"));
            }
            head.push_str("Connection: close\r\n\r\n");
            let mut bytes = head.into_bytes();
            if !has_length {
                bytes.extend(std::iter::repeat_n(b'b', body_len));
            }
            Request {
                bytes,
                well_formed: true,
                target,
            }
        })
}

/// Garbage: random bytes, or a well-formed request cut short or with a byte changed.
fn garbage(port: u16) -> impl Strategy<Value = Request> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048).prop_map(|bytes| Request {
            bytes,
            well_formed: false,
            target: String::new(),
        }),
        (
            well_formed(port),
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(mut r, at, byte, cut)| {
                if !r.bytes.is_empty() {
                    let i = at.index(r.bytes.len());
                    if cut {
                        r.bytes.truncate(i);
                    } else {
                        r.bytes[i] = byte;
                    }
                }
                r.well_formed = false;
                r
            }),
    ]
}

/// Whether routing `target` could make the node contact a non-loopback address.
fn leaves_the_machine(target: &str) -> bool {
    let cut = |c: &[char]| target.split(c).next().unwrap_or("").to_string();
    let candidates = [
        target.to_string(),
        cut(&['?']),
        cut(&['#']),
        cut(&['?', '#']),
    ];
    candidates.iter().any(|p| {
        // The same split as `api::route`.
        let p = p.trim_end_matches('/');
        let arg = p
            .strip_prefix('/')
            .unwrap_or(p)
            .split_once('/')
            .map(|(_, a)| a);
        arg.is_some_and(|a| {
            check_addr(a).is_ok()
                && !["127.0.0.1:", "[::1]:", "localhost:"]
                    .iter()
                    .any(|h| a.starts_with(h))
        })
    })
}

/// Send `bytes` and read the whole answer, or what came before the deadline.
fn exchange(addr: &str, bytes: &[u8], half_close: bool) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(DEADLINE))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(DEADLINE))
        .map_err(|e| e.to_string())?;
    // The server may answer (and close) before reading a long request: a failed
    // write is not a failure, a missing answer is.
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after (part of) an answer: the server closed with unread input.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => {
                return Err(format!(
                    "read after {:?}: {e} (got {} bytes)",
                    started.elapsed(),
                    out.len()
                ))
            }
        }
        if started.elapsed() > DEADLINE {
            return Err(format!("no end of answer within {DEADLINE:?}"));
        }
    }
}

/// The status code of an answer, if it starts with a status line.
fn status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

fn check_case(addr: &str, r: &Request) -> Result<(), TestCaseError> {
    if r.well_formed && leaves_the_machine(&r.target) {
        return Ok(()); // skipped, see the module docs
    }
    let answer = exchange(addr, &r.bytes, !r.well_formed).map_err(TestCaseError::fail)?;
    match status(&answer) {
        Some(code) => prop_assert!(
            ALLOWED.contains(&code),
            "status {code} for {:?}",
            String::from_utf8_lossy(&r.bytes[..r.bytes.len().min(300)])
        ),
        None => prop_assert!(
            !r.well_formed,
            "no answer to a well-formed request: {:?} -> {:?}",
            String::from_utf8_lossy(&r.bytes[..r.bytes.len().min(300)]),
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        ),
    }
    Ok(())
}

/// `GET /ping` answers 200.
fn ping(addr: &str) -> bool {
    let req = format!("GET /ping HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    exchange(addr, req.as_bytes(), false).is_ok_and(|a| status(&a) == Some(200))
}

fn start_node(rt: &tokio::runtime::Runtime) -> (NodeHandle, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut cfg = Config::new(addr.clone(), vec![addr.clone()]);
    cfg.bind = addr.parse().expect("a socket address");
    cfg.interval = Duration::from_millis(100);
    cfg.request_timeout = Duration::from_millis(300);
    let node = rt.block_on(Node::start(cfg)).expect("the node starts");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !node.is_leader() {
        assert!(Instant::now() < deadline, "a one-node cluster leads itself");
        std::thread::sleep(Duration::from_millis(10));
    }
    (node, addr)
}

#[test]
fn raw_requests_are_answered_and_the_node_survives() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (node, addr) = start_node(&rt);
    let port = node.local_addr().port();
    let strategy = prop_oneof![4 => well_formed(port), 1 => garbage(port)];
    let mut runner = TestRunner::new(crate::config("tests/fuzz/regressions/http.txt"));
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&strategy, |r| {
        crate::progress(&N, "http::raw_requests");
        check_case(&addr, &r)
    });
    if let Err(e) = result {
        panic!("{e}");
    }

    assert!(ping(&addr), "the node no longer answers GET /ping");
    let diag = rt.block_on(node.diag()).expect("the node's /diag/");
    assert_eq!(
        diag.state.leader.as_deref(),
        Some(addr.as_str()),
        "{diag:?}"
    );
    assert_eq!(diag.state.members, vec![addr.clone()], "{diag:?}");
    assert!(!diag.state.leaving, "{diag:?}");
    rt.block_on(node.leave());
}

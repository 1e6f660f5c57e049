//! Attacks on a running cluster: real `les` processes on 127.0.0.1, and an attacker
//! that can reach their ports but (mostly) holds no key.
//!
//! Every case reads each node's leader, term and `les_leader_changes_total` before and
//! after, and asserts they did not move; where a request is refused, that the refusal
//! was counted (`les_requests_refused_total{reason=...}`) and, where it matters, that
//! nothing was contacted on the attacker's behalf (a listener of ours that counts its
//! connections). The attacker's requests come from their own loopback source address
//! (127.0.0.2 and up), so the nodes' rate-limited refusal warnings, which are per
//! source address, can be checked for each.
//!
//! The tests take a process-wide lock and run one at a time: each starts its own
//! cluster with `--interval 200ms`, and the connection flood in particular would
//! otherwise starve the other clusters of CPU on a small machine.
//!
//! Measured numbers (flood RSS, failover time under flood, leader changes during key
//! rotation) are printed: run with `cargo test --test attacks -- --nocapture`. Set
//! `LES_ATTACKS_BIN` to run another `les` binary (a release build, for its memory).

#[path = "../common/mod.rs"]
mod common;
mod flood;
mod keyed;
mod rotation;
mod unkeyed;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{agreed_leader, diag, free_ports, wait_for, Proc};
use les::api::FIRST_REQUEST_TIMEOUT;
use les::auth::{Auth, Key, Keyring, Settings};

const WAIT: Duration = Duration::from_secs(20);

/// One test at a time (see the module comment).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------------
// Files

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let p =
            std::env::temp_dir().join(format!("les-attacks-{}-{tag}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Write `text` to `path`, mode 0600 (key files; config files naming them).
fn write_secret(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    f.write_all(text.as_bytes()).expect("write");
}

fn key_file_text(keys: &[&Key]) -> String {
    keys.iter()
        .map(|k| format!("{}\n", k.to_base64()))
        .collect()
}

fn new_key() -> Key {
    Key::generate().expect("random key")
}

// ---------------------------------------------------------------------------------
// Processes

/// The flags every node gets: loopback, its port, the seeds, 200 ms rounds.
fn std_args(port: u16, seeds: &str) -> Vec<String> {
    let addr = format!("127.0.0.1:{port}");
    [
        "--bind-interface",
        "127.0.0.1",
        "--bind-port",
        &port.to_string(),
        "--advertise-addr",
        &addr,
        "--seeds",
        seeds,
        "--interval",
        "200ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn log_path(dir: &TempDir, port: u16) -> PathBuf {
    dir.path(&format!("{port}.log"))
}

/// The `les` binary: this build's, or `LES_ATTACKS_BIN` (to measure a release build's
/// memory under the flood, say).
fn les_bin() -> String {
    std::env::var("LES_ATTACKS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_les").to_string())
}

/// Start `les` with `args`, its log (stderr) in the temp dir.
fn spawn_les(dir: &TempDir, port: u16, args: &[String]) -> Proc {
    Proc::spawn_logged(
        &format!("127.0.0.1:{port}"),
        Command::new(les_bin()).args(args),
        &log_path(dir, port),
    )
}

fn read_log(dir: &TempDir, port: u16) -> String {
    std::fs::read_to_string(log_path(dir, port)).unwrap_or_default()
}

/// Nodes started in order (so node 0 is the most senior and leads), all seeded with
/// every address. Fields drop in order: the processes are killed before the directory
/// holding their files goes.
struct Cluster {
    procs: Vec<Proc>,
    addrs: Vec<String>,
    ports: Vec<u16>,
    dir: TempDir,
}

impl Cluster {
    /// `n` nodes; `args(i, port, seeds)` gives node `i`'s command line.
    fn start(
        dir: TempDir,
        ports: &[u16],
        n: usize,
        args: impl Fn(usize, u16, &str) -> Vec<String>,
    ) -> Cluster {
        let ports = ports[..n].to_vec();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let seeds = addrs.join(",");
        let mut procs = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            procs.push(spawn_les(&dir, *port, &args(i, *port, &seeds)));
            let a = addrs[i].clone();
            wait_for("node to serve /diag/", WAIT, || diag(&a));
        }
        let leader = wait_for("agreement on a leader", WAIT, || agreed_leader(&addrs));
        assert_eq!(leader, addrs[0], "the most senior node leads");
        Cluster {
            procs,
            addrs,
            ports,
            dir,
        }
    }

    fn seeds(&self) -> String {
        self.addrs.join(",")
    }
}

// ---------------------------------------------------------------------------------
// Talking HTTP by hand, from a chosen loopback source address

#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

/// One request (no body, `Connection: close`) from source address `src` to `addr`.
fn http(src: &str, addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    if method == "POST" {
        req.push_str("content-length: 0\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let raw = rt.block_on(async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(format!("{src}:0").parse().expect("source addr"))
            .expect("bind source");
        let run = async {
            let mut s = sock.connect(addr.parse().expect("addr")).await?;
            s.write_all(req.as_bytes()).await?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await?;
            std::io::Result::Ok(out)
        };
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap_or_else(|_| panic!("{method} {path} to {addr} timed out"))
            .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
    });
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Reply { status, body }
}

/// A request tag made with `key` for cluster `cluster`, timestamped `ts`.
fn sign(key: &Key, cluster: &str, method: &str, path: &str, ts: u64) -> String {
    let auth = Auth::new(
        cluster,
        Settings {
            keyring: Keyring::new(vec![key.clone()]),
            accept_unsigned: false,
        },
    );
    auth.sign_request(method, path, ts).expect("keyed").header
}

fn metrics(addr: &str) -> String {
    let r = http("127.0.0.1", addr, "GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "/metrics of {addr}: {r:?}");
    r.body
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// `les_requests_refused_total{reason="<reason>"}` of `addr`.
fn refused(addr: &str, reason: &str) -> u64 {
    metric(
        &metrics(addr),
        &format!("les_requests_refused_total{{reason=\"{reason}\"}}"),
    )
}

const REASONS: [&str; 7] = [
    "unsigned",
    "malformed",
    "forged",
    "expired",
    "replayed",
    "busy",
    "cluster",
];

fn refused_all(addr: &str) -> u64 {
    let m = metrics(addr);
    REASONS
        .iter()
        .map(|r| metric(&m, &format!("les_requests_refused_total{{reason=\"{r}\"}}")))
        .sum()
}

// ---------------------------------------------------------------------------------
// What must not move

/// What one node says about leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    leader: Option<String>,
    term: u64,
    leader_changes: u64,
}

fn view(addr: &str) -> View {
    let d = diag(addr).unwrap_or_else(|| panic!("{addr} does not answer /diag/"));
    View {
        leader: d.state.leader,
        term: d.state.term,
        leader_changes: metric(&metrics(addr), "les_leader_changes_total"),
    }
}

fn views(addrs: &[String]) -> Vec<View> {
    addrs.iter().map(|a| view(a)).collect()
}

/// Assert every node still names the same leader with the same term and has seen no
/// change of leader since `before`.
fn assert_unchanged(addrs: &[String], before: &[View], after_what: &str) {
    let now = views(addrs);
    assert_eq!(
        now, before,
        "leader, term or leader changes moved after {after_what} (nodes {addrs:?})"
    );
}

fn members_of(addr: &str) -> Vec<String> {
    diag(addr)
        .unwrap_or_else(|| panic!("{addr} does not answer /diag/"))
        .state
        .members
}

/// Assert `outsider` is in none of the member lists of `addrs`.
fn assert_not_member(addrs: &[String], outsider: &str) {
    for a in addrs {
        let m = members_of(a);
        assert!(
            !m.iter().any(|x| x == outsider),
            "{outsider} became a member of {a}: {m:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// A listener of ours: counts connections, answers any request with a fixed body

struct FakeServer {
    addr: String,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// With `term`, answer every request as a node claiming start time 1 (more senior
    /// than anyone) and that term; without, answer 200 "OK".
    fn start(term: Option<&str>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let body = match term {
            Some(t) => {
                format!(r#"{{"members":["{addr}"],"leader":false,"start_time":1,"term":{t}}}"#)
            }
            None => "OK".to_string(),
        };
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        c.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut buf = [0u8; 4096];
                        let _ = stream.read(&mut buf);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(resp.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeServer {
            addr,
            conns,
            stop,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        self.conns.load(Ordering::Relaxed)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Assert `log` has a refusal warning naming a connection from `src`.
fn assert_refusal_logged(log: &str, src: &str, who: &str) {
    let needle = format!("source={src}:");
    assert!(
        log.lines()
            .any(|l| l.contains("refused a request") && l.contains(&needle)),
        "{who} logged no refusal naming {src}; its log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------
// Cases 1-5: a keyed cluster

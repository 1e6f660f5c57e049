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

mod common;

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

/// Fake senior node (1), forged leave (2), probe of a non-member (3), replay (4) and a
/// node with the wrong key (5), against one keyed cluster. The wrong-key node runs
/// for the whole test, so its 5 s overlap the other cases.
#[test]
fn keyed_cluster_refuses_fake_seniors_forged_leaves_probes_replays_and_wrong_keys() {
    let _g = serial();
    let t_start = Instant::now();
    let dir = TempDir::new("keyed");
    let key = new_key();
    let wrong = new_key();
    write_secret(&dir.path("key"), &key_file_text(&[&key]));
    write_secret(&dir.path("wrong"), &key_file_text(&[&wrong]));
    let kf = dir.path("key").display().to_string();
    let ports = free_ports(4);
    let c = Cluster::start(dir, &ports, 3, |_, port, seeds| {
        let mut a = std_args(port, seeds);
        a.extend(["--key-file".to_string(), kf.clone()]);
        a
    });
    let addrs = c.addrs.clone();
    let (leader, follower) = (addrs[0].clone(), addrs[1].clone());
    let before = views(&addrs);
    let forged0: Vec<u64> = addrs.iter().map(|a| refused(a, "forged")).collect();

    // 5. Start the wrong-key node now; it is checked at the end.
    let outsider_port = ports[3];
    let outsider = format!("127.0.0.1:{outsider_port}");
    let wrong_file = c.dir.path("wrong").display().to_string();
    let mut outsider_args = std_args(outsider_port, &c.seeds());
    outsider_args.extend(["--key-file".to_string(), wrong_file]);
    let _outsider_proc = spawn_les(&c.dir, outsider_port, &outsider_args);
    let outsider_started = Instant::now();

    // 1. A fake senior announced without a tag, with a garbage tag, with a tag made
    // with another key: refused, never contacted.
    let src = "127.0.0.2";
    let fakes = [
        FakeServer::start(Some("999")),
        FakeServer::start(Some("18446744073709551615")),
    ];
    for node in [&follower, &leader] {
        let (u0, m0) = (refused(node, "unsigned"), refused(node, "malformed"));
        for f in &fakes {
            let path = format!("/state/{}", f.addr);
            let r = http(src, node, "GET", &path, &[]);
            assert_eq!(r.status, 401, "unsigned announce to {node}: {r:?}");
            let r = http(src, node, "GET", &path, &[("x-les-auth", "garbage")]);
            assert_eq!(r.status, 401, "garbage tag to {node}: {r:?}");
            let tag = sign(&wrong, "", "GET", &path, now_secs());
            let r = http(src, node, "GET", &path, &[("x-les-auth", &tag)]);
            assert_eq!(r.status, 401, "wrong-key tag to {node}: {r:?}");
            assert!(r.body.contains("does not verify"), "{r:?}");
        }
        assert_eq!(
            refused(node, "unsigned"),
            u0 + 2,
            "unsigned counted on {node}"
        );
        assert_eq!(
            refused(node, "malformed"),
            m0 + 2,
            "malformed counted on {node}"
        );
    }
    std::thread::sleep(Duration::from_secs(1)); // five rounds
    for f in &fakes {
        assert_eq!(
            f.connections(),
            0,
            "the fake senior {} was contacted",
            f.addr
        );
        assert_not_member(&addrs, &f.addr);
    }
    assert_refusal_logged(&read_log(&c.dir, c.ports[1]), src, "the follower");
    assert_unchanged(
        &addrs,
        &before,
        "announcing fake senior nodes unsigned/forged",
    );

    // 1b. The same fake announced with the cluster's own key (a keyholder's request):
    // the node fetches it back, but its untagged answer is not believed.
    let f = &fakes[0];
    let path = format!("/state/{}", f.addr);
    let tag = sign(&key, "", "GET", &path, now_secs());
    let r = http(src, &follower, "GET", &path, &[("x-les-auth", &tag)]);
    assert_eq!(r.status, 200, "a signed announce is served: {r:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while f.connections() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "signed announce of a fake senior: fetched back {} time(s)",
        f.connections()
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_not_member(&addrs, &f.addr);
    assert_unchanged(
        &addrs,
        &before,
        "a signed announce of an untagged fake senior",
    );

    // 2. A forged leave notice for the live leader: refused.
    let src = "127.0.0.3";
    for node in [&follower, &addrs[2]] {
        let u0 = refused(node, "unsigned");
        let path = format!("/leave/{leader}");
        let r = http(src, node, "POST", &path, &[]);
        assert_eq!(r.status, 401, "unsigned leave to {node}: {r:?}");
        let tag = sign(&wrong, "", "POST", &path, now_secs());
        let r = http(src, node, "POST", &path, &[("x-les-auth", &tag)]);
        assert_eq!(r.status, 401, "wrong-key leave to {node}: {r:?}");
        assert_eq!(
            refused(node, "unsigned"),
            u0 + 1,
            "unsigned counted on {node}"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_unchanged(&addrs, &before, "forged leave notices for the leader");

    // 3. A probe of a non-member: refused unsigned, 403 signed, never connected.
    let src = "127.0.0.4";
    let target = FakeServer::start(None);
    let path = format!("/probe/{}", target.addr);
    let u0 = refused(&follower, "unsigned");
    let r = http(src, &follower, "GET", &path, &[]);
    assert_eq!(r.status, 401, "unsigned probe: {r:?}");
    assert_eq!(refused(&follower, "unsigned"), u0 + 1);
    let tag = sign(&key, "", "GET", &path, now_secs());
    let r = http(src, &follower, "GET", &path, &[("x-les-auth", &tag)]);
    assert_eq!(r.status, 403, "signed probe of a non-member: {r:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(target.connections(), 0, "the probe target was contacted");
    assert_unchanged(&addrs, &before, "probes of a non-member");

    // 4. Replay: a valid signed request is served once; the same request again is
    // refused as replayed, and one 60 s old as expired.
    let src = "127.0.0.5";
    let path = format!("/state/{}", addrs[2]);
    let tag = sign(&key, "", "GET", &path, now_secs());
    let (r0, e0) = (
        refused(&follower, "replayed"),
        refused(&follower, "expired"),
    );
    let r = http(src, &follower, "GET", &path, &[("x-les-auth", &tag)]);
    assert_eq!(r.status, 200, "a fresh signed request: {r:?}");
    let r = http(src, &follower, "GET", &path, &[("x-les-auth", &tag)]);
    assert_eq!(r.status, 401, "the same request again: {r:?}");
    assert_eq!(refused(&follower, "replayed"), r0 + 1, "replay counted");
    let old = sign(&key, "", "GET", &path, now_secs() - 60);
    let r = http(src, &follower, "GET", &path, &[("x-les-auth", &old)]);
    assert_eq!(r.status, 401, "a 60 s old request: {r:?}");
    assert_eq!(refused(&follower, "expired"), e0 + 1, "expiry counted");
    // Nonces are remembered per node: the captured request replayed to another node
    // inside the window is accepted there (harmless for /state: the announced address
    // is fetched back and must answer with a tag). Printed, not asserted.
    let r = http(src, &addrs[2], "GET", &path, &[("x-les-auth", &tag)]);
    println!(
        "replay of a captured request to a different node within the window: HTTP {}",
        r.status
    );
    assert_unchanged(&addrs, &before, "replayed and expired requests");

    // 5. The wrong-key node never joins; everyone says why.
    let rest = Duration::from_secs(5).saturating_sub(outsider_started.elapsed());
    std::thread::sleep(rest);
    assert_not_member(&addrs, &outsider);
    let own = members_of(&outsider);
    // Alone, it leads itself (no quorum mode): its on_leader hook would run.
    println!(
        "wrong-key node: leader it names for itself: {:?}",
        diag(&outsider).map(|d| d.state.leader)
    );
    assert_eq!(
        own,
        vec![outsider.clone()],
        "the wrong-key node knows only itself"
    );
    for (i, a) in addrs.iter().enumerate() {
        assert!(
            refused(a, "forged") > forged0[i],
            "{a} did not count the wrong-key node's requests as forged"
        );
        let log = read_log(&c.dir, c.ports[i]);
        assert!(
            log.lines().any(|l| l.contains("refused a request")
                && l.contains("source=127.0.0.1:")
                && l.contains("does not verify")),
            "{a} logged no refusal of the wrong-key node (source 127.0.0.1); its log:\n{log}"
        );
    }
    let log = read_log(&c.dir, outsider_port);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused our request"))
        .collect();
    println!(
        "wrong-key node: {} log line(s) saying it was refused, e.g. {:?}",
        lines.len(),
        lines.first()
    );
    assert!(
        !lines.is_empty(),
        "the wrong-key node never logged that it was refused; its log:\n{log}"
    );
    assert!(
        lines.len() <= addrs.len(),
        "the wrong-key node repeats its refusal line ({} lines)",
        lines.len()
    );
    assert_unchanged(&addrs, &before, "a wrong-key node trying to join for 5 s");
    println!("keyed attacks: {:.1?}", t_start.elapsed());
}

// ---------------------------------------------------------------------------------
// Cases 2, 3 (unkeyed) and 6: an unkeyed cluster named `prod`

/// Unkeyed, a forged leave for the live leader is served (200) but checked with the
/// leader itself, so nothing changes; a probe of a non-member is refused (403) without
/// a connection; nodes of another cluster name, or of none, never merge.
#[test]
fn unkeyed_cluster_checks_leaves_refuses_probes_and_other_clusters() {
    let _g = serial();
    let t_start = Instant::now();
    let ports = free_ports(5);
    let c = Cluster::start(TempDir::new("prod"), &ports, 3, |_, port, seeds| {
        let mut a = std_args(port, seeds);
        a.extend(["--cluster".to_string(), "prod".to_string()]);
        a
    });
    let addrs = c.addrs.clone();
    let (leader, follower) = (addrs[0].clone(), addrs[1].clone());
    let before = views(&addrs);
    let cluster0: Vec<u64> = addrs.iter().map(|a| refused(a, "cluster")).collect();
    let prod = [("x-les-cluster", "prod")];

    // 6. Two outsiders seeded with the cluster: one named `other`, one unnamed. They
    // run through the 5 s of case 2.
    let other = format!("127.0.0.1:{}", ports[3]);
    let mut a = std_args(ports[3], &c.seeds());
    a.extend(["--cluster".to_string(), "other".to_string()]);
    let _other = spawn_les(&c.dir, ports[3], &a);
    let unnamed = format!("127.0.0.1:{}", ports[4]);
    let _unnamed = spawn_les(&c.dir, ports[4], &std_args(ports[4], &c.seeds()));

    // 3 (unkeyed). A probe of a non-member: 403, no connection; without the cluster
    // name, 403 as another cluster.
    let src = "127.0.0.6";
    let target = FakeServer::start(None);
    let path = format!("/probe/{}", target.addr);
    let r = http(src, &follower, "GET", &path, &prod);
    assert_eq!(r.status, 403, "probe of a non-member: {r:?}");
    assert!(r.body.contains("only members"), "{r:?}");
    let r = http(src, &follower, "GET", &path, &[]);
    assert_eq!(r.status, 403, "probe without the cluster name: {r:?}");
    assert!(r.body.contains("cluster"), "{r:?}");

    // 2 (unkeyed). A forged leave for the live leader, sent to both followers.
    let src = "127.0.0.7";
    let path = format!("/leave/{leader}");
    for node in [&follower, &addrs[2]] {
        let r = http(src, node, "POST", &path, &prod);
        assert_eq!(r.status, 200, "unkeyed leave to {node}: {r:?}");
        let c0 = refused(node, "cluster");
        let r = http(src, node, "POST", &path, &[]);
        assert_eq!(r.status, 403, "leave without the cluster name: {r:?}");
        // At least: the outsiders of case 6 are being refused meanwhile too.
        assert!(
            refused(node, "cluster") > c0,
            "cluster refusal counted on {node}"
        );
    }
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(5) {
        assert_unchanged(&addrs, &before, "a forged leave on an unkeyed cluster");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(target.connections(), 0, "the probe target was contacted");
    assert_refusal_logged(&read_log(&c.dir, c.ports[1]), "127.0.0.6", "the follower");

    // 6. The outsiders never merged, and were refused as another cluster.
    for outsider in [&other, &unnamed] {
        assert_not_member(&addrs, outsider);
        assert_eq!(members_of(outsider), vec![outsider.clone()], "{outsider}");
    }
    for (i, a) in addrs.iter().enumerate() {
        assert!(
            refused(a, "cluster") >= cluster0[i] + 2,
            "{a} did not count the outsiders' requests as another cluster"
        );
    }
    for port in [ports[3], ports[4]] {
        let log = read_log(&c.dir, port);
        let n = log
            .lines()
            .filter(|l| l.contains("refused our request"))
            .count();
        println!("outsider 127.0.0.1:{port}: {n} line(s) saying it was refused");
        assert!(n >= 1, "outsider {port} never logged a refusal:\n{log}");
    }
    assert_unchanged(&addrs, &before, "outsiders of other clusters for 5 s");
    println!("unkeyed attacks: {:.1?}", t_start.elapsed());
}

// ---------------------------------------------------------------------------------
// Case 7: key rotation

/// K1 -> K1,K2 -> K2,K1 -> K2 on a running 5-node cluster, SIGHUP after each step on
/// each node: no leader change, no request refused, all five stay members; then a
/// node holding only K1 cannot join.
#[test]
fn key_rotation_on_a_running_cluster_changes_no_leader() {
    let _g = serial();
    let t_start = Instant::now();
    let (k1, k2) = (new_key(), new_key());
    let dir = TempDir::new("rotate");
    let ports = free_ports(6);
    let files: Vec<PathBuf> = ports
        .iter()
        .map(|p| dir.path(&format!("{p}.key")))
        .collect();
    for f in &files {
        write_secret(f, &key_file_text(&[&k1]));
    }
    let fs = files.clone();
    let c = Cluster::start(dir, &ports, 5, move |i, port, seeds| {
        let mut a = std_args(port, seeds);
        a.extend(["--key-file".to_string(), fs[i].display().to_string()]);
        a
    });
    let addrs = c.addrs.clone();
    let before = views(&addrs);
    let refused0: Vec<u64> = addrs.iter().map(|a| refused_all(a)).collect();

    // A botched edit first: an unreadable key file on SIGHUP keeps the current keyring.
    write_secret(&files[2], "not a key\n");
    c.procs[2].signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_secs(1));
    assert_unchanged(&addrs, &before, "a SIGHUP with a broken key file");
    let log = read_log(&c.dir, c.ports[2]);
    assert!(
        log.contains("cannot reload the keyring"),
        "no error logged for a broken key file; the log:\n{log}"
    );
    assert_eq!(agreed_leader(&addrs).as_deref(), Some(addrs[0].as_str()));
    write_secret(&files[2], &key_file_text(&[&k1])); // re-read at the next SIGHUP

    let steps: [(&str, Vec<&Key>); 3] = [
        ("add K2", vec![&k1, &k2]),
        ("make K2 first", vec![&k2, &k1]),
        ("remove K1", vec![&k2]),
    ];
    for (what, keys) in &steps {
        for (i, p) in c.procs.iter().enumerate() {
            write_secret(&files[i], &key_file_text(keys));
            p.signal(libc::SIGHUP);
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1)); // five rounds
        assert_unchanged(&addrs, &before, what);
        assert_eq!(
            agreed_leader(&addrs).as_deref(),
            Some(addrs[0].as_str()),
            "all five list all five after {what}"
        );
    }
    let after = views(&addrs);
    let changes: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.leader_changes - b.leader_changes)
        .sum();
    println!("key rotation: {changes} leader change(s) across 5 nodes");
    for (i, a) in addrs.iter().enumerate() {
        assert_eq!(
            refused_all(a),
            refused0[i],
            "{a} refused requests during the rotation"
        );
        let log = read_log(&c.dir, c.ports[i]);
        let reloads = log
            .lines()
            .filter(|l| l.contains("keyring reloaded"))
            .count();
        assert_eq!(reloads, 3, "{a} reloaded {reloads} times; its log:\n{log}");
    }

    // A node with only the retired key cannot join.
    let stale = format!("127.0.0.1:{}", ports[5]);
    write_secret(&files[5], &key_file_text(&[&k1]));
    let mut a = std_args(ports[5], &c.seeds());
    a.extend(["--key-file".to_string(), files[5].display().to_string()]);
    let _stale = spawn_les(&c.dir, ports[5], &a);
    std::thread::sleep(Duration::from_secs(5));
    assert_not_member(&addrs, &stale);
    assert_eq!(agreed_leader(&addrs).as_deref(), Some(addrs[0].as_str()));
    assert_unchanged(
        &addrs,
        &before,
        "a node with the retired key trying to join",
    );
    println!("key rotation: {:.1?}", t_start.elapsed());
}

// ---------------------------------------------------------------------------------
// Case 8: rolling a key out to an unkeyed cluster

fn write_config(path: &Path, port: u16, seeds: &[String], keys: Option<(&Path, bool)>) {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
    let mut text = format!(
        "bind_interface = \"127.0.0.1\"\nbind_port = {port}\nadvertise_addr = \"127.0.0.1:{port}\"\nseeds = [{}]\ninterval = \"200ms\"\n",
        seeds.join(", ")
    );
    if let Some((key_file, accept_unsigned)) = keys {
        text.push_str(&format!(
            "key_file = {:?}\naccept_unsigned = {accept_unsigned}\n",
            key_file.display().to_string()
        ));
    }
    write_secret(path, &text);
}

/// Unkeyed -> key_file with accept_unsigned -> accept_unsigned off, through each
/// node's config file and SIGHUP: no leader change, no request refused on the way, and
/// an unsigned request refused at the end.
#[test]
fn rolling_a_key_out_through_config_files_changes_no_leader() {
    let _g = serial();
    let t_start = Instant::now();
    let dir = TempDir::new("rollout");
    let ports = free_ports(3);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let configs: Vec<PathBuf> = ports
        .iter()
        .map(|p| dir.path(&format!("{p}.toml")))
        .collect();
    for (i, p) in ports.iter().enumerate() {
        write_config(&configs[i], *p, &addrs, None);
    }
    let cf = configs.clone();
    let c = Cluster::start(dir, &ports, 3, move |i, _, _| {
        vec!["--config".to_string(), cf[i].display().to_string()]
    });
    let before = views(&addrs);
    let mut refused0: Vec<u64> = addrs.iter().map(|a| refused_all(a)).collect();
    let unsigned0 = refused(&addrs[1], "unsigned");
    let key_file = c.dir.path("key");
    write_secret(&key_file, &key_file_text(&[&new_key()]));

    for (step, accept_unsigned) in [(1, true), (2, false)] {
        for (i, p) in c.procs.iter().enumerate() {
            write_config(
                &configs[i],
                ports[i],
                &addrs,
                Some((&key_file, accept_unsigned)),
            );
            p.signal(libc::SIGHUP);
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(1));
        assert_unchanged(&addrs, &before, &format!("rollout step {step}"));
        assert_eq!(
            agreed_leader(&addrs).as_deref(),
            Some(addrs[0].as_str()),
            "all three list all three after step {step}"
        );
        for (i, a) in addrs.iter().enumerate() {
            assert_eq!(
                refused_all(a),
                refused0[i],
                "{a} refused requests during rollout step {step}"
            );
        }
        let path = format!("/state/{}", addrs[2]);
        let r = http("127.0.0.8", &addrs[1], "GET", &path, &[]);
        let expected = if accept_unsigned { 200 } else { 401 };
        assert_eq!(
            r.status, expected,
            "unsigned request after step {step}: {r:?}"
        );
        refused0[1] += u64::from(!accept_unsigned);
        // accept_unsigned lets unsigned requests through, not wrong tags.
        let tag = sign(&new_key(), "", "GET", &path, now_secs());
        let r = http(
            "127.0.0.8",
            &addrs[1],
            "GET",
            &path,
            &[("x-les-auth", &tag)],
        );
        assert_eq!(r.status, 401, "wrong-key request after step {step}: {r:?}");
        refused0[1] += 1;
    }
    // The literal `GET /state/x`: not an address, so answered 400 before any
    // authentication (it changes nothing either way). Printed, not asserted.
    let r = http("127.0.0.9", &addrs[1], "GET", "/state/x", &[]);
    println!(
        "rollout: unsigned GET /state/x (not an address): HTTP {}",
        r.status
    );
    assert_ne!(r.status, 200, "{r:?}");
    assert_eq!(refused(&addrs[1], "unsigned"), unsigned0 + 1);
    for (i, a) in addrs.iter().enumerate() {
        let log = read_log(&c.dir, ports[i]);
        let reloads = log
            .lines()
            .filter(|l| l.contains("keyring reloaded"))
            .count();
        assert_eq!(reloads, 2, "{a} reloaded {reloads} times; its log:\n{log}");
    }
    println!("rollout: {:.1?}", t_start.elapsed());
}

// ---------------------------------------------------------------------------------
// Case 9: a connection flood

/// Raise this process's open-file soft limit towards `want`; returns the new limit.
fn raise_fd_limit(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(want.max(lim.rlim_cur));
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Open `n` connections to `addr` and keep them open: each is reopened a second after
/// the node closes it. With `half_sent`, one in ten sends half a request line and
/// stops.
struct Flood {
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    reopened: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    fn start(addr: &str, n: usize, half_sent: bool) -> Flood {
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let reopened = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, pk, re, s) = (open.clone(), peak.clone(), reopened.clone(), stop.clone());
        let addr: std::net::SocketAddr = addr.parse().expect("addr");
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut tasks = Vec::new();
                for i in 0..n {
                    let (o, pk, re, s) = (o.clone(), pk.clone(), re.clone(), s.clone());
                    tasks.push(tokio::spawn(async move {
                        let deadline = Instant::now() + Duration::from_secs(60);
                        let mut first = true;
                        while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                            if !first {
                                re.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            first = false;
                            let conn = tokio::time::timeout(
                                Duration::from_secs(2),
                                tokio::net::TcpStream::connect(addr),
                            )
                            .await;
                            let Ok(Ok(mut stream)) = conn else { continue };
                            let now_open = o.fetch_add(1, Ordering::Relaxed) + 1;
                            pk.fetch_max(now_open, Ordering::Relaxed);
                            if half_sent && i % 10 == 0 {
                                let _ = stream.write_all(b"GET /sta").await;
                            }
                            let mut buf = [0u8; 256];
                            while !s.load(Ordering::Relaxed) {
                                match tokio::time::timeout(
                                    Duration::from_millis(500),
                                    stream.read(&mut buf),
                                )
                                .await
                                {
                                    Ok(Ok(0)) | Ok(Err(_)) => break,
                                    _ => {}
                                }
                            }
                            o.fetch_sub(1, Ordering::Relaxed);
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        Flood {
            open,
            peak,
            reopened,
            stop,
            thread: Some(thread),
        }
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// 2,000 idle and half-sent connections held against the next most senior node: the
/// cluster keeps its leader, the node stays small, and a SIGKILL of the leader still
/// fails over to the flooded node.
#[test]
fn a_connection_flood_on_a_follower_neither_moves_the_leader_nor_blocks_failover() {
    let _g = serial();
    let t_start = Instant::now();
    let want = 2_000usize;
    let limit = raise_fd_limit(want as u64 + 200);
    let conns = if limit >= want as u64 + 100 {
        want
    } else {
        (limit as usize).saturating_sub(200)
    };
    println!("flood: fd soft limit {limit}, holding {conns} connections");
    let dir = TempDir::new("flood");
    let key = new_key();
    write_secret(&dir.path("key"), &key_file_text(&[&key]));
    let kf = dir.path("key").display().to_string();
    let ports = free_ports(3);
    let mut c = Cluster::start(dir, &ports, 3, |_, port, seeds| {
        let mut a = std_args(port, seeds);
        a.extend(["--key-file".to_string(), kf.clone()]);
        a
    });
    let addrs = c.addrs.clone();
    let flooded = addrs[1].clone();
    let flooded_pid = c.procs[1].pid();
    let before = views(&addrs);
    let rss_before = rss_kib(flooded_pid);
    println!("flood: flooded node RSS {rss_before} KiB before any flood");

    // Phase 1: idle connections only; phase 2: one in ten half-sent, and the leader
    // killed while it goes on.
    let mut rss_max = 0;
    let mut failover = None;
    for half_sent in [false, true] {
        let phase = if half_sent {
            "idle + half-sent"
        } else {
            "idle only"
        };
        let failed0 = metric(&metrics(&addrs[2]), "les_requests_failed_total");
        let flood = Flood::start(&flooded, conns, half_sent);
        let ramp = Instant::now();
        // The node holds at most --max-connections (1024) at once, so client-side
        // "open" peaks near that: wait for it, briefly.
        while flood.peak.load(Ordering::Relaxed) < 1000 && ramp.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Hold through a first-request timeout (3 s), checking as we go.
        let mut rss_phase = 0;
        let hold = Instant::now();
        while hold.elapsed() < Duration::from_secs(4) {
            assert_unchanged(
                &addrs,
                &before,
                &format!("holding a connection flood ({phase})"),
            );
            rss_phase = rss_phase.max(rss_kib(flooded_pid));
            std::thread::sleep(Duration::from_millis(300));
        }
        let m = metrics(&flooded);
        println!(
            "flood ({phase}): client-side peak {} open, {} now, {} reopened; node: les_connections_open {}, les_connections_shed_total {}; RSS max {rss_phase} KiB",
            flood.peak.load(Ordering::Relaxed),
            flood.open(),
            flood.reopened.load(Ordering::Relaxed),
            metric(&m, "les_connections_open"),
            metric(&m, "les_connections_shed_total"),
        );
        rss_max = rss_max.max(rss_phase);
        let failed = metric(&metrics(&addrs[2]), "les_requests_failed_total") - failed0;
        println!(
            "flood ({phase}): {failed} request(s) from {} failed meanwhile",
            addrs[2]
        );
        if !half_sent {
            continue;
        }
        // SIGKILL the leader while the flood goes on.
        let killed = Instant::now();
        c.procs[0].signal(libc::SIGKILL);
        c.procs[0].wait_exit(WAIT).expect("killed leader exits");
        let survivors = addrs[1..].to_vec();
        let next = wait_for("failover under the flood", WAIT, || {
            agreed_leader(&survivors)
        });
        let took = killed.elapsed();
        rss_max = rss_max.max(rss_kib(flooded_pid));
        println!(
            "flood: failover to {next} in {took:.2?} after SIGKILL of the leader (flood open: {})",
            flood.open()
        );
        assert_eq!(
            next, flooded,
            "the next most senior (the flooded node) leads"
        );
        failover = Some(took);
    }
    std::thread::sleep(FIRST_REQUEST_TIMEOUT + Duration::from_millis(500));
    let rss_after = rss_kib(flooded_pid);
    let open_after = metric(&metrics(&flooded), "les_connections_open");
    println!("flood: les_connections_open {open_after} on the flooded node after the flood ended");
    println!(
        "flood: flooded node RSS {rss_before} KiB before, {rss_max} KiB max under flood, {rss_after} KiB {FIRST_REQUEST_TIMEOUT:?} after it ended"
    );
    println!("flood: {:.1?}", t_start.elapsed());
    let failover = failover.expect("failover measured");
    assert!(
        failover < Duration::from_secs(10),
        "failover under flood took {failover:?}"
    );
    // DEFECT (reported to the main session, not weakened): with the debug binary
    // `cargo test` builds, this measures 16.3-17.2 MiB (11.2-11.4 MiB idle), over the
    // 16 MiB budget. A release binary (LES_ATTACKS_BIN=target/release/les) measured
    // 10.7 MiB (5.4 MiB idle) and passes. Either way about 5.3 MiB is added by ~1,025
    // held connections and not given back after the flood ends.
    assert!(
        rss_max < 16 * 1024,
        "DEFECT: flooded node RSS {rss_max} KiB, over 16 MiB (before the flood: {rss_before} KiB)"
    );
}

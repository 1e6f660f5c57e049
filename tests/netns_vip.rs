//! A floating virtual IP moved by les between real network namespaces, both ways: the
//! `floating_ip` example (a `LeaderChanged` implementation) and the `les` binary with
//! `on_leader` / `on_follower` commands.
//!
//! Each test builds its own lab, entirely inside namespaces it creates (names carry
//! this process's pid), on 198.18.N.0/24 with no route out:
//!
//! ```text
//!   ns n1 (198.18.N.11)   ns n2 (.12)   ns n3 (.13)   ns client (.100)
//!        eth0               eth0          eth0            eth0
//!          \                 |             |               /
//!           p1 ------------- p2 -- br0 -- p3 ------------ pc     (ns br)
//! ```
//!
//! Each node namespace runs a les node and a tiny HTTP server on port 8080 (a thread of
//! this test, answering the node's name); the client namespace fetches
//! `http://198.18.N.200:8080/` every 20 ms; a sampler thread reads the addresses of the
//! three node namespaces every few milliseconds and records any moment the VIP is in
//! two of them. Then: SIGKILL the leader, restart it, SIGTERM the new leader, and check
//! where the VIP is and who answers. Everything it started is killed (by pid) and every
//! namespace deleted when the test ends, pass or fail; node processes also die with the
//! test thread (PR_SET_PDEATHSIG) if the test process is killed.
//!
//! Needs root, `ip` (iproute2) and `arping` (iputils-arping). Without them the test
//! says why it is skipped, on stderr; with `CI` set it fails instead.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;

use common::netns::{say, ARPING, IP};

/// Port of the service behind the VIP.
const SERVICE_PORT: u16 = 8080;
/// Port of the les API in every node namespace.
const LES_PORT: u16 = 4000;
/// No background thread of a lab runs longer than this, whatever happens.
const LAB_LIFETIME: Duration = Duration::from_secs(300);
/// Deadline for each awaited condition.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long a SIGTERM handoff may take, including a loaded machine; the measured
/// times are printed.
const HANDOFF: Duration = Duration::from_secs(10);
const NAMES: [&str; 3] = ["n1", "n2", "n3"];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    /// `examples/floating_ip.rs`.
    Example,
    /// `les --on-leader ... --on-follower ...`.
    HookCommands,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Move the calling thread into network namespace `ns`.
fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on a valid namespace fd; it only changes this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Whether `addr` is configured on any interface of the calling thread's namespace.
fn has_addr(addr: Ipv4Addr) -> bool {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we walk read-only and free once.
    unsafe {
        assert_eq!(libc::getifaddrs(&mut list), 0, "getifaddrs");
        let mut found = false;
        let mut p = list;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() && i32::from((*a).sa_family) == libc::AF_INET {
                let sin = &*(a as *const libc::sockaddr_in);
                found |= u32::from_be(sin.sin_addr.s_addr) == u32::from(addr);
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

/// `GET path` over HTTP/1.1; the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.take(1 << 20).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// One fetch of the VIP by the client.
#[derive(Debug, Clone)]
struct Answer {
    at: Instant,
    from: Option<String>,
}

/// Where the VIP was, whenever that changed.
#[derive(Debug, Clone)]
struct Placement {
    at: Instant,
    holders: [bool; 3],
}

#[derive(Default)]
struct Observations {
    answers: Mutex<Vec<Answer>>,
    placements: Mutex<Vec<Placement>>,
    sweeps: Mutex<u64>,
    doubles: Mutex<Vec<Placement>>,
}

impl Observations {
    fn answers_since(&self, t: Instant) -> Vec<Answer> {
        let all = self.answers.lock().unwrap();
        all.iter().filter(|a| a.at >= t).cloned().collect()
    }

    /// When the VIP was first seen on `node` alone, at or after `t`.
    fn placed_on(&self, node: usize, t: Instant) -> Option<Instant> {
        let all = self.placements.lock().unwrap();
        let alone = |p: &Placement| p.holders.iter().enumerate().all(|(i, h)| *h == (i == node));
        // The placement in force at `t` counts too, from `t`.
        let current = all.iter().rev().find(|p| p.at <= t).filter(|p| alone(p));
        current
            .map(|_| t)
            .or_else(|| all.iter().find(|p| p.at > t && alone(p)).map(|p| p.at))
    }

    fn placements_since(&self, t: Instant) -> Vec<Placement> {
        let all = self.placements.lock().unwrap();
        all.iter().filter(|p| p.at >= t).cloned().collect()
    }

    fn holders_now(&self) -> [bool; 3] {
        self.placements
            .lock()
            .unwrap()
            .last()
            .map_or([false; 3], |p| p.holders)
    }
}

struct Lab {
    way: Way,
    /// Prefix of every namespace name: `lesvip-<pid>-<way>`.
    tag: String,
    /// Third octet of 198.18.N.0/24.
    net: u8,
    namespaces: Vec<String>,
    nodes: Vec<Option<Child>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    seen: Arc<Observations>,
    logs: PathBuf,
    started: Instant,
}

impl Lab {
    fn new(way: Way, net: u8) -> Lab {
        remove_stale_labs();
        let tag = format!(
            "lesvip-{}-{}",
            std::process::id(),
            if way == Way::Example { "ex" } else { "hk" }
        );
        let logs = std::env::temp_dir().join(&tag);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).unwrap();
        let mut lab = Lab {
            way,
            tag,
            net,
            namespaces: Vec::new(),
            nodes: vec![None, None, None],
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            seen: Arc::new(Observations::default()),
            logs,
            started: Instant::now(),
        };
        lab.build()
            .unwrap_or_else(|e| panic!("cannot build the lab: {e}"));
        lab
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.net, host)
    }

    fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.addr(11 + i as u8)
    }

    fn vip(&self) -> Ipv4Addr {
        self.addr(200)
    }

    fn les_addr(&self, i: usize) -> String {
        format!("{}:{LES_PORT}", self.node_ip(i))
    }

    fn build(&mut self) -> Result<(), String> {
        let br = self.ns("br");
        ip(&["netns", "add", &br])?;
        self.namespaces.push(br.clone());
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let hosts: Vec<(String, u8)> = NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), 11 + i as u8))
            .chain([("client".to_string(), 100)])
            .collect();
        for (name, host) in hosts {
            let ns = self.ns(&name);
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            // Created from inside the bridge namespace straight into the host's: no
            // interface ever exists in the namespace this test runs in.
            let port = format!("p-{name}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"])?;
            let cidr = format!("{}/24", self.addr(host));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Run `f` in a thread inside namespace `ns`, stopped with the lab.
    fn spawn_in(&mut self, ns: String, f: impl FnOnce(&AtomicBool) + Send + 'static) {
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            enter(&ns);
            f(&stop);
        }));
    }

    fn alive(stop: &AtomicBool, since: Instant) -> bool {
        !stop.load(Ordering::Relaxed) && since.elapsed() < LAB_LIFETIME
    }

    /// The service on the VIP's port in each node namespace: answers with its name.
    fn start_servers(&mut self) {
        for name in NAMES {
            let t0 = self.started;
            self.spawn_in(self.ns(name), move |stop| {
                let l = TcpListener::bind(("0.0.0.0", SERVICE_PORT)).unwrap();
                l.set_nonblocking(true).unwrap();
                while Lab::alive(stop, t0) {
                    let Ok((mut s, _)) = l.accept() else {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                        match s.read(&mut buf) {
                            Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                            _ => break,
                        }
                    }
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                        name.len()
                    );
                }
            });
        }
    }

    /// Records where the VIP is, sweeping the three node namespaces every 2 ms.
    fn start_sampler(&mut self) {
        let files: Vec<File> = NAMES
            .iter()
            .map(|n| File::open(format!("/run/netns/{}", self.ns(n))).unwrap())
            .collect();
        let (vip, seen, t0) = (self.vip(), self.seen.clone(), self.started);
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut last = None;
            while Lab::alive(&stop, t0) {
                let mut holders = [false; 3];
                for (i, f) in files.iter().enumerate() {
                    // SAFETY: as in `enter`; the fd stays open for the loop.
                    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    holders[i] = has_addr(vip);
                }
                let p = Placement {
                    at: Instant::now(),
                    holders,
                };
                *seen.sweeps.lock().unwrap() += 1;
                if holders.iter().filter(|h| **h).count() > 1 {
                    seen.doubles.lock().unwrap().push(p.clone());
                }
                if last != Some(holders) {
                    last = Some(holders);
                    seen.placements.lock().unwrap().push(p);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }));
    }

    /// The client: fetches the VIP every 20 ms and records who answered.
    fn start_client(&mut self) {
        let target = SocketAddr::from((self.vip(), SERVICE_PORT));
        let (seen, t0) = (self.seen.clone(), self.started);
        self.spawn_in(self.ns("client"), move |stop| {
            while Lab::alive(stop, t0) {
                let from = http_get(target, "/", Duration::from_millis(100));
                seen.answers.lock().unwrap().push(Answer {
                    at: Instant::now(),
                    from,
                });
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }

    /// Start (or restart) node `i` in its namespace.
    fn start_node(&mut self, i: usize) {
        let seeds: Vec<String> = (0..3).map(|j| self.les_addr(j)).collect();
        let seeds = seeds.join(",");
        let les = Path::new(env!("CARGO_BIN_EXE_les"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(NAMES[i])]);
        let vip = format!("{}/24", self.vip());
        match self.way {
            Way::Example => {
                let example = les.with_file_name("examples").join("floating_ip");
                assert!(
                    example.exists(),
                    "{} is missing: `cargo test` builds the examples (a run limited with \
                     --test does not; build it with `cargo build --example floating_ip`)",
                    example.display()
                );
                cmd.arg(example).args(["--vip", &vip, "--iface", "eth0"]);
            }
            Way::HookCommands => {
                // As in the README: wait while another machine answers ARP for the
                // VIP, take it, announce it.
                let on_leader = format!(
                    "while timeout 0.1 arping -D -q -c 1 -w 1 -I eth0 {a}; [ $? -eq 1 ]; do sleep 0.05; done\n\
                     ip addr replace {vip} dev eth0 || exit 1\n\
                     arping -q -U -c 1 -I eth0 {a} || true",
                    a = self.vip()
                );
                let on_follower = format!("ip addr del {vip} dev eth0 2>/dev/null; true");
                cmd.arg(les)
                    .args(["--on-leader", &on_leader])
                    .args(["--on-follower", &on_follower]);
            }
        }
        cmd.args(["--bind-port", &LES_PORT.to_string()])
            .args(["--advertise-addr", &self.les_addr(i)])
            .args(["--seeds", &seeds, "--name", NAMES[i]]);
        for (k, _) in std::env::vars() {
            if k.starts_with("LES_") {
                cmd.env_remove(k);
            }
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{}.log", NAMES[i])))
            .unwrap();
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it makes the node die with this thread
        // if the test process is killed before it can clean up.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.nodes[i] = Some(cmd.spawn().unwrap());
    }

    fn signal(&mut self, i: usize, sig: libc::c_int) {
        let pid = self.nodes[i].as_ref().unwrap().id() as libc::pid_t;
        // SAFETY: kill(2) of a child this test started and has not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Wait for node `i` to exit; its exit status.
    fn reap(&mut self, i: usize) -> std::process::ExitStatus {
        let child = self.nodes[i].as_mut().unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.nodes[i] = None;
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", NAMES[i]);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait until the client is answered by node `i` (after `t`); the time of that answer.
    fn answered_by(&self, i: usize, t: Instant) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answers = self.seen.answers_since(t);
            if let Some(a) = answers.iter().find(|a| a.from.as_deref() == Some(NAMES[i])) {
                return a.at;
            }
            assert!(
                Instant::now() < deadline,
                "the client was not answered by {} within {PATIENCE:?}; VIP on {:?}; last answers {:?}",
                NAMES[i],
                self.seen.holders_now(),
                &answers[answers.len().saturating_sub(5)..]
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Node `i`'s view of the leader, asked from the client namespace.
    fn leader_seen_by(&self, i: usize) -> Option<String> {
        let target: SocketAddr = self.les_addr(i).parse().unwrap();
        let ns = self.ns("client");
        std::thread::spawn(move || {
            enter(&ns);
            let body = http_get(target, "/state", Duration::from_millis(500))?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            v["leader"].as_str().map(str::to_string)
        })
        .join()
        .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for child in self.nodes.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for name in NAMES {
                let log = self.logs.join(format!("{name}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                say(&format!(
                    "--- last lines of {} ---\n{}",
                    log.display(),
                    lines[lines.len().saturating_sub(30)..].join("\n")
                ));
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                say(&format!("netns_vip: cleanup: {e}"));
            }
        }
    }
}

/// Delete namespaces left by a lab whose test process was killed (its pid is gone).
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("lesvip-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn move_the_vip(way: Way, net: u8) {
    let mut lab = Lab::new(way, net);
    lab.start_servers();
    lab.start_sampler();
    lab.start_client();
    let seen = lab.seen.clone();

    // Another machine (the client namespace stands in for it) still holds the VIP, as a
    // killed leader does until its crash guard has run.
    let vip = format!("{}/24", lab.vip());
    let client = lab.ns("client");
    ip(&["-n", &client, "addr", "add", &vip, "dev", "eth0"]).unwrap();

    // Start in seniority order: n1 leads, but does not take the VIP while it is held.
    for i in 0..3 {
        lab.start_node(i);
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = Instant::now() + PATIENCE;
    while lab.leader_seen_by(2).as_deref() != Some(lab.les_addr(0).as_str()) {
        assert!(Instant::now() < deadline, "n1 was never elected");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let early = seen.placements_since(lab.started);
    assert!(
        early.iter().all(|p| p.holders == [false; 3]),
        "a node took the VIP while another machine held it: {early:?}"
    );
    let t_let_go = Instant::now();
    ip(&["-n", &client, "addr", "del", &vip, "dev", "eth0"]).unwrap();
    lab.answered_by(0, t_let_go);
    assert_eq!(seen.holders_now(), [true, false, false]);
    let t_taken = seen
        .placed_on(0, t_let_go)
        .expect("VIP on n1 once answered");

    // SIGKILL the leader: its crash guard releases the VIP, the next most senior (n2)
    // takes it and announces it.
    let t_kill = Instant::now();
    lab.signal(0, libc::SIGKILL);
    lab.reap(0);
    let kill_answer = lab.answered_by(1, t_kill);
    let kill_placed = seen.placed_on(1, t_kill).expect("VIP on n2 once answered");
    let gap = seen
        .answers_since(t_kill)
        .iter()
        .filter(|a| a.at < kill_answer && a.from.is_none())
        .count();

    // Restart n1: it is junior now, so the VIP stays on n2.
    let t_restart = Instant::now();
    lab.start_node(0);
    let deadline = Instant::now() + PATIENCE;
    while lab.leader_seen_by(0).as_deref() != Some(lab.les_addr(1).as_str()) {
        assert!(Instant::now() < deadline, "restarted n1 never followed n2");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    // (A fetch that times out on a loaded machine says nothing about where the VIP is;
    // an answer from another node would.)
    let since_restart = seen.answers_since(t_restart);
    let others: Vec<&Answer> = since_restart
        .iter()
        .filter(|a| a.from.as_deref().is_some_and(|n| n != "n2"))
        .collect();
    assert!(
        others.is_empty(),
        "the VIP left n2 when n1 came back: {others:?}"
    );
    assert!(since_restart
        .iter()
        .any(|a| a.from.as_deref() == Some("n2")));
    assert_eq!(seen.placed_on(1, t_restart), Some(t_restart));
    let moved = seen.placements_since(t_restart);
    assert!(
        moved.is_empty(),
        "the VIP moved when n1 came back: {moved:?}"
    );

    // SIGTERM the leader (n2): it releases the VIP, then leaves; n3 (senior to the
    // restarted n1) takes it.
    let t_term = Instant::now();
    lab.signal(1, libc::SIGTERM);
    let term_answer = lab.answered_by(2, t_term);
    let term_placed = seen.placed_on(2, t_term).expect("VIP on n3 once answered");
    let status = lab.reap(1);
    assert!(status.success(), "n2 exited with {status} after SIGTERM");
    assert!(
        term_placed - t_term < HANDOFF,
        "SIGTERM handoff took {:?}",
        term_placed - t_term
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(seen.holders_now(), [false, false, true]);

    let sweeps = *seen.sweeps.lock().unwrap();
    let doubles = seen.doubles.lock().unwrap().clone();
    say(&format!(
        "netns_vip [{way:?}]: VIP on n1 {} ms after the stale holder let go; \
         SIGKILL: VIP on n2 after {} ms, answered by n2 after {} ms ({gap} fetches unanswered); \
         SIGTERM: VIP on n3 after {} ms, answered by n3 after {} ms; \
         {sweeps} sweeps of the three namespaces, {} with the VIP in two",
        ms(t_taken - t_let_go),
        ms(kill_placed - t_kill),
        ms(kill_answer - t_kill),
        ms(term_placed - t_term),
        ms(term_answer - t_term),
        doubles.len()
    ));
    assert!(sweeps > 100, "the sampler hardly ran: {sweeps} sweeps");
    assert!(
        doubles.is_empty(),
        "the VIP was in two namespaces at once: {doubles:?}"
    );
}

#[test]
#[ignore = "needs root, iproute2 and iputils-arping (and nftables): run with -- --include-ignored, as .ci/run does"]
fn the_floating_ip_example_moves_the_vip_between_namespaces() {
    if common::netns::skip_unless_possible(
        "the_floating_ip_example_moves_the_vip_between_namespaces",
        &[IP, ARPING],
    ) {
        return;
    }
    move_the_vip(Way::Example, 1);
}

#[test]
#[ignore = "needs root, iproute2 and iputils-arping (and nftables): run with -- --include-ignored, as .ci/run does"]
fn hook_commands_move_the_vip_between_namespaces() {
    if common::netns::skip_unless_possible(
        "hook_commands_move_the_vip_between_namespaces",
        &[IP, ARPING],
    ) {
        return;
    }
    move_the_vip(Way::HookCommands, 2);
}

//! A network lab made of namespaces: one bridge namespace and any number of host
//! namespaces wired to it, on `198.18.N.0/24` (no route out), with the tools to run a
//! process in a host namespace, cut the bridge into groups, see which namespaces hold an
//! address, and read a node's JSON log.
//!
//! ```text
//!   ns <tag>-n1 (198.18.N.11)   ns <tag>-n2 (.12)   ...
//!        eth0                       eth0
//!          \                         |
//!           p-n1 --------- br0 --- p-n2 ...        (ns <tag>-br)
//! ```
//!
//! Every name carries the pid of the process that made it (`<tag>` is
//! `les<kind>-<pid>-...`), every namespace is deleted when the [`Net`] is dropped (pass,
//! fail or panic), and [`remove_stale_labs`] deletes those left by a process that was
//! killed. Used by `tests/netns_vip.rs`, `tests/netns_partition.rs` and the benchmark's
//! partition mode (`examples/bench`), so it needs only std, libc, serde_json and
//! humantime.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// No background thread of a lab runs longer than this, whatever happens.
pub const LAB_LIFETIME: Duration = Duration::from_secs(300);

/// Print straight to the stderr file descriptor, past the test harness's capture, so a
/// skip or a measured time shows without --nocapture.
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// A tool the lab needs: the command, arguments that make it exit 0, its package.
pub type Tool = (&'static str, &'static [&'static str], &'static str);

pub const IP: Tool = ("ip", &["-V"], "iproute2");
pub const ARPING: Tool = ("arping", &["-V"], "iputils-arping");
pub const NFT: Tool = ("nft", &["--version"], "nftables");

/// Why this machine cannot run a lab needing `tools`, if it cannot.
pub fn missing_prerequisite(tools: &[Tool]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces need it)".into());
    }
    for (tool, args, package) in tools {
        let ok = Command::new(tool)
            .args(*args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("`{tool}` is not installed (package {package})"));
        }
    }
    None
}

/// Skip loudly (true), or fail under CI, when `why` is set.
pub fn skip_or_fail(test: &str, why: Option<String>, hint: &str) -> bool {
    let Some(why) = why else {
        return false;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: cannot run under CI: {why}. {hint}");
    }
    say(&format!("\n*** SKIPPED {test}: {why}. {hint} ***\n"));
    true
}

/// Skip loudly (true), or fail under CI, unless this machine can run a lab with `tools`.
pub fn skip_unless_possible(test: &str, tools: &[Tool]) -> bool {
    let packages: Vec<&str> = tools.iter().map(|t| t.2).collect();
    let hint = format!("Run as root with {} installed.", packages.join(", "));
    skip_or_fail(test, missing_prerequisite(tools), &hint)
}

/// Run `tool args`; its standard output, or an error naming the command.
pub fn run(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{tool}: writing its input: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args, None).map(drop)
}

/// Move the calling thread into network namespace `ns`.
pub fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).unwrap();
    enter_fd(&f, ns);
}

fn enter_fd(f: &File, ns: &str) {
    // SAFETY: setns on a valid namespace fd; it only changes this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Run `f` on a thread of its own inside namespace `ns`; its result.
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .unwrap()
}

/// Whether `addr` is configured on any interface of the calling thread's namespace.
pub fn has_addr(addr: Ipv4Addr) -> bool {
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

/// Make `cmd`'s process die (SIGKILL) with the thread that spawns it, so a lab whose
/// process is killed leaves no node running, and keep the caller's `LES_*` variables
/// from configuring it.
pub fn contain(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("LES_") {
            cmd.env_remove(k);
        }
    }
    // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A bridge namespace and host namespaces plugged into it; all deleted on drop.
pub struct Net {
    /// Prefix of every namespace name, `les<kind>-<pid>-...`.
    pub tag: String,
    /// Third octet of 198.18.N.0/24.
    pub net: u8,
    /// Host names in the order given, with their last octet.
    pub hosts: Vec<(String, u8)>,
    namespaces: Vec<String>,
}

impl Net {
    /// Build the bridge and one namespace per `(name, last octet)` in `hosts`. Deletes
    /// namespaces left behind by labs whose process is gone first.
    pub fn new(tag: &str, net: u8, hosts: &[(&str, u8)]) -> Result<Net, String> {
        remove_stale_labs();
        let mut n = Net {
            tag: tag.to_string(),
            net,
            hosts: hosts.iter().map(|(h, o)| (h.to_string(), *o)).collect(),
            namespaces: Vec::new(),
        };
        // On an error `n` is dropped here, deleting what was made so far.
        n.build()?;
        Ok(n)
    }

    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.net, host)
    }

    /// The address of host `name`.
    pub fn host_addr(&self, name: &str) -> Ipv4Addr {
        let (_, octet) = self
            .hosts
            .iter()
            .find(|(h, _)| h == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"));
        self.addr(*octet)
    }

    fn build(&mut self) -> Result<(), String> {
        let br = self.ns("br");
        ip(&["netns", "add", &br])?;
        self.namespaces.push(br.clone());
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for (name, host) in self.hosts.clone() {
            let ns = self.ns(&name);
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            // Created from inside the bridge namespace straight into the host's: no
            // interface ever exists in the namespace the caller runs in.
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

    /// `ip netns exec <ns of host> program`, contained (see [`contain`]).
    pub fn command(&self, host: &str, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host)]).arg(program);
        contain(&mut cmd);
        cmd
    }

    /// Cut the bridge between the hosts in `side` and all the others: every frame
    /// between the two groups (IP, ARP, broadcasts) is dropped silently, as by a failed
    /// switch, while each group still talks within itself. No RST, no ICMP.
    pub fn cut(&self, side: &[&str]) -> Result<(), String> {
        let quoted = |names: Vec<&str>| {
            names
                .iter()
                .map(|n| format!("\"p-{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let others: Vec<&str> = self
            .hosts
            .iter()
            .map(|(h, _)| h.as_str())
            .filter(|h| !side.contains(h))
            .collect();
        let (a, b) = (quoted(side.to_vec()), quoted(others));
        let rules = format!(
            "table bridge lescut {{\n  chain cut {{\n    type filter hook forward priority 0; policy accept;\n    \
             iifname {{ {a} }} oifname {{ {b} }} drop\n    iifname {{ {b} }} oifname {{ {a} }} drop\n  }}\n}}\n"
        );
        run(
            "ip",
            &["netns", "exec", &self.ns("br"), "nft", "-f", "-"],
            Some(&rules),
        )
        .map(drop)
    }

    /// Undo [`Net::cut`].
    pub fn heal(&self) -> Result<(), String> {
        let br = self.ns("br");
        run(
            "ip",
            &[
                "netns", "exec", &br, "nft", "delete", "table", "bridge", "lescut",
            ],
            None,
        )
        .map(drop)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                say(&format!("{}: cleanup: {e}", self.tag));
            }
        }
    }
}

/// Delete namespaces left by a lab whose process was killed: names `les<kind>-<pid>-...`
/// whose pid is gone.
pub fn remove_stale_labs() {
    let Ok(list) = run("ip", &["netns", "list"], None) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let mut parts = name.splitn(3, '-');
        let (Some(kind), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let is_lab = kind.starts_with("les")
            && kind.len() > 3
            && !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit());
        if is_lab && !Path::new("/proc").join(pid).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Where an address was, whenever that changed.
#[derive(Debug, Clone)]
pub struct Placement {
    pub at: Instant,
    /// Per watched namespace, in order: whether it holds the address.
    pub holders: Vec<bool>,
}

/// Sweeps a set of namespaces for one address on a thread of its own.
#[derive(Default)]
pub struct VipWatch {
    placements: Mutex<Vec<Placement>>,
    sweeps: Mutex<u64>,
    doubles: Mutex<Vec<Placement>>,
    longest_gap: Mutex<Duration>,
    width: usize,
}

impl VipWatch {
    /// Start sweeping `namespaces` for `vip` every `every`, until `stop` is set or
    /// [`LAB_LIFETIME`] has passed; join the handle before deleting the namespaces.
    pub fn start(
        namespaces: &[String],
        vip: Ipv4Addr,
        every: Duration,
        stop: Arc<AtomicBool>,
    ) -> (Arc<VipWatch>, JoinHandle<()>) {
        let files: Vec<File> = namespaces
            .iter()
            .map(|n| File::open(format!("/run/netns/{n}")).unwrap())
            .collect();
        let watch = Arc::new(VipWatch {
            width: files.len(),
            ..VipWatch::default()
        });
        let seen = watch.clone();
        let t0 = Instant::now();
        let thread = std::thread::spawn(move || {
            // Ahead of busy neighbours (a compile on a 2-core machine), so sweeps stay a
            // few milliseconds apart; without the privilege it runs at normal priority.
            // SAFETY: setpriority on this thread's own id has no memory effects.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10);
            }
            let mut last = None;
            let mut prev_at: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < LAB_LIFETIME {
                let holders: Vec<bool> = files
                    .iter()
                    .map(|f| {
                        enter_fd(f, "a watched namespace");
                        has_addr(vip)
                    })
                    .collect();
                let p = Placement {
                    at: Instant::now(),
                    holders: holders.clone(),
                };
                *seen.sweeps.lock().unwrap() += 1;
                if let Some(prev) = prev_at {
                    let mut gap = seen.longest_gap.lock().unwrap();
                    *gap = (*gap).max(p.at - prev);
                }
                prev_at = Some(p.at);
                if holders.iter().filter(|h| **h).count() > 1 {
                    seen.doubles.lock().unwrap().push(p.clone());
                }
                if last.as_ref() != Some(&holders) {
                    last = Some(holders);
                    seen.placements.lock().unwrap().push(p);
                }
                std::thread::sleep(every);
            }
        });
        (watch, thread)
    }

    /// When the address was first seen on namespace `i` alone, at or after `t`.
    pub fn placed_on(&self, i: usize, t: Instant) -> Option<Instant> {
        self.placed_within(&[i], t).map(|(_, at)| at)
    }

    /// When the address was first seen on exactly one namespace, one of `among`, at or
    /// after `t`; which one and when.
    pub fn placed_within(&self, among: &[usize], t: Instant) -> Option<(usize, Instant)> {
        let all = self.placements.lock().unwrap();
        let alone = |p: &Placement| {
            let mut held = p.holders.iter().enumerate().filter(|(_, h)| **h);
            match (held.next(), held.next()) {
                (Some((i, _)), None) if among.contains(&i) => Some(i),
                _ => None,
            }
        };
        // The placement in force at `t` counts too, from `t`.
        let current = all.iter().rev().find(|p| p.at <= t).and_then(alone);
        current.map(|i| (i, t)).or_else(|| {
            all.iter()
                .filter(|p| p.at > t)
                .find_map(|p| alone(p).map(|i| (i, p.at)))
        })
    }

    pub fn placements_since(&self, t: Instant) -> Vec<Placement> {
        let all = self.placements.lock().unwrap();
        all.iter().filter(|p| p.at >= t).cloned().collect()
    }

    /// The namespace that holds the address now, if exactly one does.
    pub fn sole_holder(&self) -> Option<usize> {
        let holders = self.holders_now();
        let mut held = holders.iter().enumerate().filter(|(_, h)| **h);
        match (held.next(), held.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }

    pub fn holders_now(&self) -> Vec<bool> {
        self.placements
            .lock()
            .unwrap()
            .last()
            .map_or(vec![false; self.width], |p| p.holders.clone())
    }

    pub fn sweeps(&self) -> u64 {
        *self.sweeps.lock().unwrap()
    }

    /// The longest time between two sweeps so far.
    pub fn longest_gap(&self) -> Duration {
        *self.longest_gap.lock().unwrap()
    }

    /// Every sweep that found the address in more than one namespace.
    pub fn doubles(&self) -> Vec<Placement> {
        self.doubles.lock().unwrap().clone()
    }
}

/// A `leader changed` line of a node's JSON log (`--log-format json`).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderLine {
    pub at: SystemTime,
    pub leader: Option<String>,
    pub term: u64,
    /// The node gained leadership with this change (it acts as leader from `at`).
    pub is_self: bool,
}

/// A `member removed` line of a node's JSON log.
#[derive(Debug, Clone, PartialEq)]
pub struct RemovalLine {
    pub at: SystemTime,
    pub peer: String,
    /// `timed out`, `unreachable`, ... (the `reason` field).
    pub reason: String,
}

/// What a node's JSON log says so far: its start time (seniority), its leader changes
/// and the members it removed.
#[derive(Debug, Clone, Default)]
pub struct NodeLog {
    pub start_time: Option<f64>,
    pub changes: Vec<LeaderLine>,
    pub removals: Vec<RemovalLine>,
}

/// Read the JSON log at `path`; lines that are not JSON (a panic, a hook's output) are
/// skipped.
pub fn read_log(path: &Path) -> NodeLog {
    let mut log = NodeLog::default();
    let Ok(f) = File::open(path) else {
        return log;
    };
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let fields = &v["fields"];
        let at = v["timestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        match (fields["message"].as_str(), at) {
            (Some("les node started"), _) => log.start_time = fields["start_time"].as_f64(),
            (Some("member removed"), Some(at)) => log.removals.push(RemovalLine {
                at,
                peer: fields["peer"].as_str().unwrap_or_default().to_string(),
                reason: fields["reason"].as_str().unwrap_or_default().to_string(),
            }),
            (Some("leader changed"), Some(at)) => {
                log.changes.push(LeaderLine {
                    at,
                    leader: fields["leader"]
                        .as_str()
                        .filter(|l| *l != "none")
                        .map(str::to_string),
                    term: fields["term"].as_u64().unwrap_or(0),
                    is_self: fields["is_self"].as_bool().unwrap_or(false),
                });
            }
            _ => {}
        }
    }
    log
}

/// The intervals in which a node acted as leader, from its leader changes: from each
/// `is_self=true` line to its next change, or to `end`.
pub fn acting_intervals(changes: &[LeaderLine], end: SystemTime) -> Vec<(SystemTime, SystemTime)> {
    let mut out = Vec::new();
    let mut since = None;
    for c in changes {
        if let Some(s) = since.take() {
            out.push((s, c.at));
        }
        if c.is_self {
            since = Some(c.at);
        }
    }
    if let Some(s) = since {
        out.push((s, end.max(s)));
    }
    out
}

/// Does a help text (`--help` output) offer `flag`?
pub fn offers_flag(program: &Path, flag: &str) -> bool {
    Command::new(program)
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                .any(|w| w == flag)
        })
}

/// The example `name` that `cargo test` builds beside the `les` binary at `les`.
pub fn example_binary(les: &Path, name: &str) -> PathBuf {
    let example = les.with_file_name("examples").join(name);
    assert!(
        example.exists(),
        "{} is missing: `cargo test` builds the examples (a run limited with \
         --test does not; build it with `cargo build --example {name}`)",
        example.display()
    );
    example
}

/// Send `cmd`'s standard output and error to `log` (appended), its input from nothing.
pub fn log_to(cmd: &mut Command, log: &Path) {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
}

/// Print the last `n` lines of each of `logs` (after a failure).
pub fn print_tails(logs: &[PathBuf], n: usize) {
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        say(&format!(
            "--- last lines of {} ---\n{}",
            log.display(),
            lines[lines.len().saturating_sub(n)..].join("\n")
        ));
    }
}

/// `GET path` over HTTP/1.1; the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<String> {
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

/// The leader the les node at `target` names in its `/state`, asked from namespace `ns`.
pub fn leader_seen(ns: &str, target: SocketAddr) -> Option<String> {
    in_namespace(ns, move || {
        let body = http_get(target, "/state", Duration::from_millis(500))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["leader"].as_str().map(str::to_string)
    })
}

/// A fresh, empty directory for a lab's logs: `<temp>/<tag>`.
pub fn log_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Hosts for [`Net::new`]: `names` on .11, .12, ... in order.
pub fn numbered<'a>(names: &[&'a str]) -> Vec<(&'a str, u8)> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, 11 + i as u8))
        .collect()
}

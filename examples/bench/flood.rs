//! Connection flood: a persistent attacker holds thousands of idle connections and a
//! few hundred half-sent requests against one follower of a 3-node cluster, opening a
//! new one whenever the node closes one, while the benchmark watches the node's memory
//! and connection counters, checks that the cluster keeps its leader, and then crashes
//! the leader to time the failover under the flood. Each flood trial is paired with a
//! failover trial without a flood, and unkeyed and keyed clusters alternate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use les::client::PeerClient;
use les::net::TokioNetwork;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::cluster::{cpu_seconds_fine, metric, open_files_limit, peak_rss_kib, rss_kib, Cluster};
use crate::stats::Summary;

const NODES: usize = 3;

/// The attack and its length.
#[derive(Debug, Clone, Serialize)]
pub struct FloodPlan {
    pub idle: usize,
    pub partial: usize,
    pub seconds: u64,
    /// Soft open-files limit to start the nodes with (default: the benchmark's own,
    /// raised to the hard limit).
    pub node_nofile: Option<u64>,
}

/// One configuration over its trials.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodSide {
    /// Crash failover without a flood (its own fresh cluster per trial).
    pub failover_ms: Summary,
    /// Crash failover at the end of the flood, the flood still on.
    pub flood_failover_ms: Summary,
    /// Flooded node: largest VmRSS sampled during the flood, MiB.
    pub rss_max_mib: Summary,
    /// Flooded node: VmHWM at the end of the flood, MiB.
    pub rss_peak_mib: Summary,
    /// Flooded node: RSS before the flood, MiB.
    pub rss_before_mib: Summary,
    /// Flooded node: largest les_connections_open seen.
    pub open_max: Summary,
    /// Flooded node: most file descriptors open (sampled from /proc/<pid>/fd).
    pub fds_max: Summary,
    /// Flooded node: les_connections_shed_total at the end of the flood.
    pub shed: Summary,
    /// Connections the node closed under the attacker (who then reopened them), per s.
    pub closed_per_s: Summary,
    /// Attacker connects that failed.
    pub connect_errors: Summary,
    /// Flooded node's CPU during the flood, % of one core.
    pub cpu_percent: Summary,
    /// Latency of the benchmark's own /metrics requests to the flooded node, ms.
    pub scrape_ms: Summary,
    /// Of those, the ones that failed.
    pub scrape_failures: usize,
    /// A newcomer's `GET /ping` on a fresh connection to the flooded node, ms.
    pub fresh_ms: Summary,
    /// Of those, the ones that failed or took over 2 s.
    pub fresh_failures: usize,
    /// Trials where any node changed leader (or term) during the flood.
    pub leader_lost: usize,
    /// Trials whose failover (with or without the flood) chose a wrong leader.
    pub wrong_leader: usize,
    /// Trials whose failover under the flood did not reach agreement within 20 s.
    pub no_agreement: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloodRun {
    pub nodes: usize,
    pub trials: usize,
    pub plan: FloodPlan,
    pub fd_limit: (u64, u64),
    pub node_fd_limit: String,
    pub unkeyed: FloodSide,
    pub keyed: FloodSide,
}

/// The attacker's counters.
#[derive(Default)]
struct Counters {
    open: AtomicI64,
    closed_by_node: AtomicU64,
    connect_errors: AtomicU64,
}

struct Attack {
    stop: CancellationToken,
    counters: Arc<Counters>,
    thread: std::thread::JoinHandle<()>,
}

impl Attack {
    /// Open `idle` silent connections and `partial` half-sent requests to `addr`,
    /// reopening each one the node closes, on a thread of its own.
    fn start(addr: SocketAddr, idle: usize, partial: usize) -> Attack {
        let stop = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let (s, c) = (stop.clone(), counters.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("attacker runtime");
            rt.block_on(async move {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..idle + partial {
                    set.spawn(hold(addr, i >= idle, s.clone(), c.clone()));
                }
                while set.join_next().await.is_some() {}
            });
        });
        Attack {
            stop,
            counters,
            thread,
        }
    }

    fn stop(self) -> Arc<Counters> {
        self.stop.cancel();
        let _ = self.thread.join();
        self.counters
    }
}

/// One of the attacker's connections, for ever (until `stop`).
async fn hold(addr: SocketAddr, partial: bool, stop: CancellationToken, c: Arc<Counters>) {
    let mut buf = [0u8; 512];
    while !stop.is_cancelled() {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::net::TcpStream::connect(addr) => r,
        };
        let mut s = match conn {
            Ok(s) => s,
            Err(_) => {
                c.connect_errors.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                }
            }
        };
        if partial && s.write_all(b"GET /sta").await.is_err() {
            c.closed_by_node.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        c.open.fetch_add(1, Ordering::Relaxed);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    c.open.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
            }
        }
        c.open.fetch_sub(1, Ordering::Relaxed);
        c.closed_by_node.fetch_add(1, Ordering::Relaxed);
    }
}

/// A newcomer's request: a fresh TCP connection, `GET /ping`, the whole answer read.
/// Milliseconds, or `None` if it failed or took over 2 s.
fn fresh_ping(addr: SocketAddr) -> Option<f64> {
    use std::io::{Read as _, Write as _};
    let t = Instant::now();
    let limit = Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    (answer.starts_with(b"HTTP/1.1 200") && t.elapsed() < limit)
        .then(|| t.elapsed().as_secs_f64() * 1e3)
}

/// Raise this process's soft limit on open files to the hard limit (the nodes it
/// starts inherit it). Returns (soft, hard) after.
pub fn raise_fd_limit() -> anyhow::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        anyhow::ensure!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0,
            "getrlimit: {}",
            std::io::Error::last_os_error()
        );
        let before = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        anyhow::ensure!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0,
            "setrlimit: {}",
            std::io::Error::last_os_error()
        );
        eprintln!(
            "open-files limit: soft {before} -> {}, hard {}",
            lim.rlim_cur, lim.rlim_max
        );
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Set this process's soft open-files limit to `soft` (capped at the hard limit) while
/// `f` runs (the processes it spawns inherit that), then back to the hard limit.
fn with_soft_fd_limit<T>(soft: Option<u64>, f: impl FnOnce() -> T) -> T {
    let Some(soft) = soft else {
        return f();
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let hard = lim.rlim_max;
        lim.rlim_cur = soft.min(hard);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        let out = f();
        lim.rlim_cur = hard;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        out
    }
}

/// What one flood trial measured.
#[derive(Default)]
struct Trial {
    failover_ms: Option<f64>,
    rss_max_mib: f64,
    rss_peak_mib: f64,
    rss_before_mib: f64,
    open_max: f64,
    fds_max: f64,
    shed: f64,
    closed_per_s: f64,
    connect_errors: f64,
    cpu_percent: f64,
    scrape_ms: Vec<f64>,
    scrape_failures: usize,
    fresh_ms: Vec<f64>,
    fresh_failures: usize,
    leader_lost: bool,
    wrong_leader: bool,
    node_fd_limit: String,
}

/// Crash failover in a fresh cluster with no flood: (ms, wrong leader).
fn plain_failover(
    bin: &Path,
    extra: &[String],
    dir: &Path,
    plan: &FloodPlan,
) -> anyhow::Result<(f64, bool)> {
    let wait = Duration::from_secs(20);
    let mut c = with_soft_fd_limit(plan.node_nofile, || Cluster::launch(bin, NODES, extra, dir))?;
    let (leader, _) = c.wait_agreement(None, wait).context("convergence")?;
    std::thread::sleep(Duration::from_secs(2));
    let (_, ms, wrong) = crate::crash_failover(&mut c, leader, wait)?;
    c.shutdown();
    Ok((ms, wrong))
}

/// (leader changes, term) of every node, from /metrics.
fn terms(
    c: &Cluster,
    client: &PeerClient<TokioNetwork>,
    rt: &tokio::runtime::Runtime,
) -> Vec<(f64, f64)> {
    c.nodes
        .iter()
        .filter(|n| n.alive())
        .map(|n| {
            let text = rt
                .block_on(client.get(&n.addr, "/metrics"))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            (
                metric(&text, "les_leader_changes_total").unwrap_or(-1.0),
                metric(&text, "les_term").unwrap_or(-1.0),
            )
        })
        .collect()
}

fn flood_trial(
    bin: &Path,
    extra: &[String],
    keyed: bool,
    dir: &Path,
    plan: &FloodPlan,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Trial> {
    let wait = Duration::from_secs(20);
    let mut c = with_soft_fd_limit(plan.node_nofile, || Cluster::launch(bin, NODES, extra, dir))?;
    let (leader, settled) = c.wait_agreement(None, wait).context("convergence")?;
    crate::authcost::check_keyed(&c, keyed)?;
    std::thread::sleep(Duration::from_secs(1));
    // The flooded node: the follower next in line, so that after the crash the other
    // survivor's requests must reach the new leader through the flood.
    let target = (0..NODES)
        .filter(|i| *i != leader)
        .filter_map(|i| Some((c.start_time(i)?, i)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, i)| i)
        .context("no follower start time")?;
    let pid = c.nodes[target].pid().context("target pid")?;
    let addr: SocketAddr = c.nodes[target].addr.parse()?;
    let client = PeerClient::new(TokioNetwork, Duration::from_secs(2));
    let mut out = Trial {
        rss_before_mib: rss_kib(pid).unwrap_or(0) as f64 / 1024.0,
        node_fd_limit: open_files_limit(pid).unwrap_or_default(),
        ..Trial::default()
    };
    let terms_before = terms(&c, &client, rt);

    let cpu0 = cpu_seconds_fine(pid).unwrap_or(0.0);
    let attack = Attack::start(addr, plan.idle, plan.partial);
    let t0 = Instant::now();
    let mut rss_max = 0u64;
    let mut last_shed = 0.0;
    while t0.elapsed() < Duration::from_secs(plan.seconds) {
        rss_max = rss_max.max(rss_kib(pid).unwrap_or(0));
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        out.fds_max = out.fds_max.max(fds as f64);
        let ts = Instant::now();
        match rt.block_on(client.get(&c.nodes[target].addr, "/metrics")) {
            Ok(body) => {
                out.scrape_ms.push(ts.elapsed().as_secs_f64() * 1e3);
                let text = String::from_utf8_lossy(&body);
                out.open_max = out
                    .open_max
                    .max(metric(&text, "les_connections_open").unwrap_or(0.0));
                last_shed = metric(&text, "les_connections_shed_total").unwrap_or(last_shed);
            }
            Err(_) => out.scrape_failures += 1,
        }
        match fresh_ping(addr) {
            Some(ms) => out.fresh_ms.push(ms),
            None => out.fresh_failures += 1,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let flood_secs = t0.elapsed().as_secs_f64();
    rss_max = rss_max.max(rss_kib(pid).unwrap_or(0));
    out.rss_max_mib = rss_max as f64 / 1024.0;
    out.rss_peak_mib = peak_rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
    out.cpu_percent = (cpu_seconds_fine(pid).unwrap_or(0.0) - cpu0) / flood_secs * 100.0;
    out.shed = last_shed;
    let terms_after = terms(&c, &client, rt);
    out.leader_lost = c.changes_since(settled) > 0 || terms_after != terms_before;
    let closed_during = attack.counters.closed_by_node.load(Ordering::Relaxed);
    out.closed_per_s = closed_during as f64 / flood_secs;

    // The crash, the flood still on.
    match crate::crash_failover(&mut c, leader, wait) {
        Ok((_, ms, wrong)) => {
            out.failover_ms = Some(ms);
            out.wrong_leader = wrong;
        }
        Err(e) => eprintln!("\nfailover under the flood: {e:#}"),
    }
    let counters = attack.stop();
    out.connect_errors = counters.connect_errors.load(Ordering::Relaxed) as f64;
    c.shutdown();
    Ok(out)
}

fn summarise(plain: &[(f64, bool)], flood: &[Trial]) -> FloodSide {
    let of = |f: fn(&Trial) -> f64| Summary::of(&flood.iter().map(f).collect::<Vec<_>>());
    FloodSide {
        failover_ms: Summary::of(&plain.iter().map(|p| p.0).collect::<Vec<_>>()),
        flood_failover_ms: Summary::of(
            &flood
                .iter()
                .filter_map(|t| t.failover_ms)
                .collect::<Vec<_>>(),
        ),
        rss_max_mib: of(|t| t.rss_max_mib),
        rss_peak_mib: of(|t| t.rss_peak_mib),
        rss_before_mib: of(|t| t.rss_before_mib),
        open_max: of(|t| t.open_max),
        fds_max: of(|t| t.fds_max),
        shed: of(|t| t.shed),
        closed_per_s: of(|t| t.closed_per_s),
        connect_errors: of(|t| t.connect_errors),
        cpu_percent: of(|t| t.cpu_percent),
        scrape_ms: Summary::of(
            &flood
                .iter()
                .flat_map(|t| t.scrape_ms.iter().copied())
                .collect::<Vec<_>>(),
        ),
        scrape_failures: flood.iter().map(|t| t.scrape_failures).sum(),
        fresh_ms: Summary::of(
            &flood
                .iter()
                .flat_map(|t| t.fresh_ms.iter().copied())
                .collect::<Vec<_>>(),
        ),
        fresh_failures: flood.iter().map(|t| t.fresh_failures).sum(),
        leader_lost: flood.iter().filter(|t| t.leader_lost).count(),
        wrong_leader: plain.iter().filter(|p| p.1).count()
            + flood.iter().filter(|t| t.wrong_leader).count(),
        no_agreement: flood.iter().filter(|t| t.failover_ms.is_none()).count(),
    }
}

/// Unkeyed and keyed, alternating; each trial a plain failover and a flood.
pub fn run(
    bin: &Path,
    extra: &[String],
    trials: usize,
    plan: FloodPlan,
) -> anyhow::Result<FloodRun> {
    let fd_limit = raise_fd_limit()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let key_dir = crate::scratch("flood-key");
    let key_file = crate::authcost::write_key_file(&key_dir)?;
    let keyed_flags = crate::authcost::keyed_args(extra, &key_file);
    eprintln!(
        "flood: {NODES} nodes, {} idle + {} half-sent connections for {} s, {trials} \
         trials each of unkeyed and keyed",
        plan.idle, plan.partial, plan.seconds
    );
    let (mut plain, mut flood) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let mut node_fd_limit = String::new();
    for i in 0..trials {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let (flags, tag) = if k == 1 {
                (&keyed_flags[..], "keyed")
            } else {
                (extra, "unkeyed")
            };
            let p = plain_failover(
                bin,
                flags,
                &crate::scratch(&format!("plain-{tag}-{i}")),
                &plan,
            )
            .with_context(|| format!("{tag} plain failover, trial {}", i + 1))?;
            plain[k].push(p);
            let dir = crate::scratch(&format!("flood-{tag}-{i}"));
            let t = flood_trial(bin, flags, k == 1, &dir, &plan, &rt)
                .with_context(|| format!("{tag} flood, trial {}", i + 1))?;
            eprint!("{}", if k == 1 { "k" } else { "u" });
            node_fd_limit.clone_from(&t.node_fd_limit);
            flood[k].push(t);
        }
    }
    eprintln!();
    let _ = std::fs::remove_dir_all(&key_dir);
    Ok(FloodRun {
        nodes: NODES,
        trials,
        fd_limit,
        node_fd_limit,
        unkeyed: summarise(&plain[0], &flood[0]),
        keyed: summarise(&plain[1], &flood[1]),
        plan,
    })
}

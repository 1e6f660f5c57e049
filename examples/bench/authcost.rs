//! The cost of authentication: 3-node clusters of unkeyed and keyed nodes (a shared
//! key file, `--key-file`), trials interleaved so that whatever else loads the machine
//! loads both alike. Each trial measures steady-state CPU and RSS per node, then crash
//! failover (SIGKILL of the leader) and graceful hand-off (SIGTERM of the next one).
//! A micro-measurement of the tag functions themselves explains the CPU figure.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use les::auth::{Auth, Key, Keyring, Settings};
use les::client::PeerClient;
use les::net::TokioNetwork;
use serde::Serialize;

use crate::cluster::{cpu_seconds_fine, metric, rss_kib, Cluster};
use crate::stats::Summary;

const NODES: usize = 3;

/// One configuration (unkeyed or keyed) over all its trials.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    pub failover_ms: Summary,
    pub handoff_ms: Summary,
    /// CPU seconds per minute, per node (each node of each trial is one sample).
    pub cpu_s_per_min: Summary,
    /// RSS at the end of the steady-state window, per node, in MiB.
    pub rss_mib: Summary,
    /// Requests per node per second in the steady-state window.
    pub requests_per_s: Summary,
    /// Trials whose new leader was not the most senior survivor (must be 0).
    pub wrong_leader: usize,
    /// Requests refused by authentication, all nodes, all trials (must be 0).
    pub refused: f64,
    /// Requests that failed, all nodes, all trials, steady-state windows only.
    pub failed: f64,
}

/// The tag functions, measured in this process on one core.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Micro {
    pub body_bytes: usize,
    /// Full exchanges (sign_request + verify_request + sign_answer + verify_answer)
    /// per second, over repetitions.
    pub exchanges_per_s: Summary,
    pub sign_request_us: f64,
    pub verify_request_us: f64,
    pub sign_answer_us: f64,
    pub verify_answer_us: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthRun {
    pub nodes: usize,
    pub trials: usize,
    pub cost_seconds: u64,
    pub unkeyed: Side,
    pub keyed: Side,
    pub micro: Micro,
}

/// What one trial measured.
#[derive(Default)]
struct Trial {
    failover_ms: f64,
    handoff_ms: f64,
    cpu_s_per_min: Vec<f64>,
    rss_mib: Vec<f64>,
    requests_per_s: Vec<f64>,
    wrong_leader: usize,
    refused: f64,
    failed: f64,
}

/// A fresh key in a key file of mode 0600, in a directory of mode 0700.
pub fn write_key_file(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join("les.key");
    let key = Key::generate().context("generating a key")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", key.to_base64())?;
    Ok(path)
}

/// Node flags for a keyed cluster: `extra` plus `--key-file`.
pub fn keyed_args(extra: &[String], key_file: &Path) -> Vec<String> {
    let mut v = extra.to_vec();
    v.extend([
        "--key-file".to_string(),
        key_file.to_string_lossy().into_owned(),
    ]);
    v
}

/// Check that every node of `c` logged the authentication setting expected.
pub fn check_keyed(c: &Cluster, keyed: bool) -> anyhow::Result<()> {
    let want = if keyed {
        "requests between nodes are authenticated"
    } else {
        "requests between nodes are not authenticated"
    };
    for n in &c.nodes {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            if log.contains(want) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "{} did not log {want:?}", n.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn trial(
    bin: &Path,
    extra: &[String],
    keyed: bool,
    dir: &Path,
    cost: Duration,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Trial> {
    let wait = Duration::from_secs(20);
    let mut c = Cluster::launch(bin, NODES, extra, dir)?;
    let (leader, _) = c.wait_agreement(None, wait).context("convergence")?;
    check_keyed(&c, keyed)?;
    let mut out = Trial {
        wrong_leader: usize::from(crate::most_senior(&c) != Some(leader)),
        ..Trial::default()
    };
    std::thread::sleep(Duration::from_secs(2));

    let client = PeerClient::new(TokioNetwork, Duration::from_secs(2));
    let pids: Vec<i32> = c.nodes.iter().filter_map(|n| n.pid()).collect();
    let scrape = |addr: &str| -> String {
        rt.block_on(client.get(addr, "/metrics"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let counters = |text: &str| {
        (
            metric(text, "les_requests_sent_total").unwrap_or(0.0),
            metric(text, "les_requests_failed_total").unwrap_or(0.0),
        )
    };
    let before: Vec<(f64, (f64, f64))> = c
        .nodes
        .iter()
        .zip(&pids)
        .map(|(n, p)| {
            (
                cpu_seconds_fine(*p).unwrap_or(0.0),
                counters(&scrape(&n.addr)),
            )
        })
        .collect();
    let t = Instant::now();
    std::thread::sleep(cost);
    let texts: Vec<String> = c.nodes.iter().map(|n| scrape(&n.addr)).collect();
    let secs = t.elapsed().as_secs_f64();
    for ((text, pid), (cpu0, (sent0, failed0))) in texts.iter().zip(&pids).zip(&before) {
        let cpu1 = cpu_seconds_fine(*pid).unwrap_or(0.0);
        out.cpu_s_per_min.push((cpu1 - cpu0) / secs * 60.0);
        out.rss_mib.push(rss_kib(*pid).unwrap_or(0) as f64 / 1024.0);
        let (sent1, failed1) = counters(text);
        out.requests_per_s.push((sent1 - sent0) / secs);
        out.failed += failed1 - failed0;
        out.refused += text
            .lines()
            .filter(|l| l.starts_with("les_requests_refused_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }

    let (next, ms, wrong) = crate::crash_failover(&mut c, leader, wait)?;
    out.failover_ms = ms;
    out.wrong_leader += usize::from(wrong);

    let tt = SystemTime::now();
    c.nodes[next].signal(libc::SIGTERM);
    c.nodes[next].reap(Duration::from_secs(5));
    let (third, at) = c
        .wait_agreement(Some(next), wait)
        .context("graceful hand-off")?;
    out.handoff_ms = crate::ms_between(tt, at);
    out.wrong_leader += usize::from(crate::most_senior(&c) != Some(third));
    c.shutdown();
    Ok(out)
}

fn summarise(trials: &[Trial]) -> Side {
    let flat = |f: fn(&Trial) -> &Vec<f64>| -> Vec<f64> {
        trials.iter().flat_map(|t| f(t).iter().copied()).collect()
    };
    Side {
        failover_ms: Summary::of(&trials.iter().map(|t| t.failover_ms).collect::<Vec<_>>()),
        handoff_ms: Summary::of(&trials.iter().map(|t| t.handoff_ms).collect::<Vec<_>>()),
        cpu_s_per_min: Summary::of(&flat(|t| &t.cpu_s_per_min)),
        rss_mib: Summary::of(&flat(|t| &t.rss_mib)),
        requests_per_s: Summary::of(&flat(|t| &t.requests_per_s)),
        wrong_leader: trials.iter().map(|t| t.wrong_leader).sum(),
        refused: trials.iter().map(|t| t.refused).sum(),
        failed: trials.iter().map(|t| t.failed).sum(),
    }
}

/// Unkeyed and keyed trials, alternating (which goes first alternates too).
pub fn run(
    bin: &Path,
    extra: &[String],
    trials: usize,
    cost_seconds: u64,
) -> anyhow::Result<AuthRun> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let key_dir = crate::scratch("auth-key");
    let key_file = write_key_file(&key_dir)?;
    let keyed_flags = keyed_args(extra, &key_file);
    let cost = Duration::from_secs(cost_seconds);
    let (mut plain, mut keyed) = (Vec::new(), Vec::new());
    eprintln!(
        "authentication: {NODES} nodes, {trials} trials each of unkeyed and keyed, \
         {cost_seconds} s steady state per trial"
    );
    for i in 0..trials {
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_key in order {
            let (flags, tag) = if with_key {
                (&keyed_flags[..], "keyed")
            } else {
                (extra, "unkeyed")
            };
            let dir = crate::scratch(&format!("auth-{tag}-{i}"));
            let t = trial(bin, flags, with_key, &dir, cost, &rt)
                .with_context(|| format!("{tag} trial {}", i + 1))?;
            eprint!("{}", if with_key { "k" } else { "u" });
            if with_key {
                keyed.push(t);
            } else {
                plain.push(t);
            }
        }
    }
    eprintln!();
    let _ = std::fs::remove_dir_all(&key_dir);
    eprintln!("authentication: timing the tag functions");
    Ok(AuthRun {
        nodes: NODES,
        trials,
        cost_seconds,
        unkeyed: summarise(&plain),
        keyed: summarise(&keyed),
        micro: micro(512, 5, Duration::from_secs(1)),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The four tag functions on one thread: `reps` runs of `each`, uninstrumented, for
/// the exchange rate, then one instrumented run for the share of each function. The
/// answer body is `body_bytes` long (a 3-node `/state` answer is a few hundred bytes).
pub fn micro(body_bytes: usize, reps: usize, each: Duration) -> Micro {
    let key = Key::generate().expect("the OS random generator");
    let fresh = || {
        Auth::new(
            "",
            Settings {
                keyring: Keyring::new(vec![key.clone()]),
                accept_unsigned: false,
            },
        )
    };
    let body = vec![b'x'; body_bytes];
    let now = unix_now();
    // Every verified nonce is remembered for the replay window, up to a bound; a fresh
    // Auth every so often keeps the loop under it (and pays for the nonce table's
    // growth, as a busy node would).
    const PER_AUTH: u64 = 50_000;
    let exchange = |auth: &Auth| {
        let tag = auth.sign_request("GET", "/state", now).expect("keyed");
        let verified = auth
            .verify_request("GET", "/state", Some(&tag.header), None, now)
            .expect("own tag verifies");
        let answer = auth.sign_answer(&verified, 200, &body).expect("signed");
        auth.verify_answer(Some(&tag), 200, Some(&answer), &body)
            .expect("own answer verifies");
    };
    let mut rates = Vec::new();
    for _ in 0..reps {
        let mut auth = fresh();
        let (mut n, t) = (0u64, Instant::now());
        while t.elapsed() < each {
            for _ in 0..100 {
                exchange(&auth);
            }
            n += 100;
            if n % PER_AUTH == 0 {
                auth = fresh();
            }
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let mut spent = [Duration::ZERO; 4];
    let (mut n, t, mut auth) = (0u64, Instant::now(), fresh());
    while t.elapsed() < each {
        let a = Instant::now();
        let tag = auth.sign_request("GET", "/state", now).expect("keyed");
        let b = Instant::now();
        let verified = auth
            .verify_request("GET", "/state", Some(&tag.header), None, now)
            .expect("own tag verifies");
        let c = Instant::now();
        let answer = auth.sign_answer(&verified, 200, &body).expect("signed");
        let d = Instant::now();
        auth.verify_answer(Some(&tag), 200, Some(&answer), &body)
            .expect("own answer verifies");
        let e = Instant::now();
        for (s, d) in spent.iter_mut().zip([b - a, c - b, d - c, e - d]) {
            *s += d;
        }
        n += 1;
        if n % PER_AUTH == 0 {
            auth = fresh();
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    Micro {
        body_bytes,
        exchanges_per_s: Summary::of(&rates),
        sign_request_us: us(spent[0]),
        verify_request_us: us(spent[1]),
        sign_answer_us: us(spent[2]),
        verify_answer_us: us(spent[3]),
    }
}

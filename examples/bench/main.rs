//! Benchmark: real `les` processes on loopback. Run `cargo run --release --example bench`.
//!
//! For each cluster size it measures, over repeated trials, convergence (launch to
//! agreement), crash failover (SIGKILL of the leader to agreement of the survivors) and
//! graceful hand-off (SIGTERM of the leader to agreement), then the steady-state cost
//! (requests, bytes, RSS, CPU) and, under a CPU load on every core, the number of
//! spurious leader changes. It prints tables, writes BENCHMARKS.md (between markers, so
//! hand-written analysis survives) and an SVG plot, and ends with one JSON line.
//!
//! `--auth-compare` (`authcost.rs`) compares unkeyed and keyed clusters and times the
//! tag functions; `--flood` (`flood.rs`) floods a follower with connections. Each runs
//! alone and writes only its own section. In network namespaces (`netruns.rs`, as
//! root): `--partition-trials`, `--vanish-trials` (a leader host that vanishes) and
//! `--loss-trials` (packet loss on every node); with `--partition-only`,
//! `--vanish-only` or `--loss-only` only those run. `--stepdown-trials N`
//! (`stepdown.rs`) times operator step-downs on 3 nodes, alone, and only prints.

mod args;
mod authcost;
mod cluster;
mod flood;
mod lab;
mod lossy_real;
#[allow(dead_code)] // the tests' lab module; the benchmark uses part of it
#[path = "../../tests/common/netns.rs"]
mod netns;
mod netruns;
mod partition;
mod pgbench;
mod report;
mod scale;
mod scale_report;
mod stats;
mod stepdown;
mod vanish;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use les::client::PeerClient;
use les::net::TokioNetwork;
use serde::Serialize;

use args::Args;
use cluster::{cpu_seconds, rss_kib, Cluster};
use stats::Summary;

/// Timings for one cluster size, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub nodes: usize,
    pub convergence_ms: Summary,
    pub failover_ms: Summary,
    pub handoff_ms: Summary,
    /// Trials where the new leader was not the most senior survivor (must be 0).
    pub wrong_leader: usize,
}

/// Steady-state cost for one cluster size.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cost {
    pub nodes: usize,
    pub seconds: f64,
    pub requests_per_node_per_s: f64,
    pub bytes_per_node_per_s: f64,
    pub rss_kib_max: u64,
    pub rss_kib_mean: f64,
    pub cpu_s_per_min_mean: f64,
    pub cpu_s_per_min_max: f64,
    /// Whole cluster, percent of one core.
    pub cluster_core_percent: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadRun {
    pub nodes: usize,
    pub seconds: u64,
    pub busy_threads: usize,
    pub spurious_changes: usize,
}

fn ms_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("les-bench-{}-{tag}", std::process::id()))
}

/// Index of the most senior live node, by logged start time.
fn most_senior(c: &Cluster) -> Option<usize> {
    (0..c.nodes.len())
        .filter(|i| c.nodes[*i].alive())
        .filter_map(|i| Some((c.start_time(i)?, c.nodes[i].addr.clone(), i)))
        .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)))
        .map(|(_, _, i)| i)
}

/// SIGKILL node `leader` of `c` and wait (bounded) for the survivors to agree: the new
/// leader, the failover time in ms, and whether the new leader is not the most senior.
fn crash_failover(
    c: &mut Cluster,
    leader: usize,
    wait: Duration,
) -> anyhow::Result<(usize, f64, bool)> {
    let tk = SystemTime::now();
    c.nodes[leader].signal(libc::SIGKILL);
    c.nodes[leader].reap(Duration::from_secs(5));
    let (next, at) = c
        .wait_agreement(Some(leader), wait)
        .context("crash failover")?;
    Ok((next, ms_between(tk, at), most_senior(c) != Some(next)))
}

fn timings(bin: &std::path::Path, n: usize, args: &Args) -> anyhow::Result<Timings> {
    let wait = Duration::from_secs(20);
    let (mut conv, mut fail, mut hand, mut wrong) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for trial in 0..args.trials {
        let t0 = SystemTime::now();
        let mut c = Cluster::launch(bin, n, &args.node_args, &scratch(&format!("{n}-{trial}")))?;
        let (leader, at) = c.wait_agreement(None, wait).context("convergence")?;
        conv.push(ms_between(t0, at));
        wrong += usize::from(most_senior(&c) != Some(leader));

        let (next, ms, wrong_one) = crash_failover(&mut c, leader, wait)?;
        fail.push(ms);
        wrong += usize::from(wrong_one);

        if n > 2 {
            let tt = SystemTime::now();
            c.nodes[next].signal(libc::SIGTERM);
            let t_exit = Instant::now();
            c.nodes[next].reap(Duration::from_secs(5));
            let exit_ms = t_exit.elapsed().as_millis();
            let (third, at) = c
                .wait_agreement(Some(next), wait)
                .context("graceful hand-off")?;
            hand.push(ms_between(tt, at));
            wrong += usize::from(most_senior(&c) != Some(third));
            if exit_ms > 2000 {
                eprintln!("warning: leader took {exit_ms} ms to exit after SIGTERM");
            }
        }
        c.shutdown();
        eprint!(".");
    }
    eprintln!();
    Ok(Timings {
        nodes: n,
        convergence_ms: Summary::of(&conv),
        failover_ms: Summary::of(&fail),
        handoff_ms: Summary::of(&hand),
        wrong_leader: wrong,
    })
}

/// One node's counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    cpu_s: f64,
    requests: f64,
    bytes: f64,
}

/// Counters from a node's /metrics: (requests sent, bytes received + bytes served).
async fn traffic(client: &PeerClient<TokioNetwork>, addr: &str) -> Option<(f64, f64)> {
    let body = client.get(addr, "/metrics").await.ok()?;
    let text = String::from_utf8_lossy(&body);
    let get = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    Some((
        get("les_requests_sent_total ")?,
        get("les_bytes_received_total ")? + get("les_bytes_served_total ")?,
    ))
}

/// How long a cluster of `n` runs after agreeing before its steady state is measured:
/// two rotation cycles (a node contacts `fanout` members a round, so it has talked to
/// every member, and its connections and conditional caches are warm, after n / fanout
/// rounds), and at least 2 s. As the scale simulator does; with defaults, 26 s at 100
/// nodes, where a 2 s wait measured the pools still filling (BENCHMARKS.md).
fn settle_time(n: usize) -> Duration {
    let cycle = n.div_ceil(les::defaults::FANOUT) as u32;
    (les::defaults::INTERVAL * 2 * cycle).max(Duration::from_secs(2))
}

fn cost(
    bin: &std::path::Path,
    n: usize,
    args: &Args,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Cost> {
    let c = Cluster::launch(bin, n, &args.node_args, &scratch(&format!("cost-{n}")))?;
    c.wait_agreement(None, Duration::from_secs(20))
        .context("convergence before cost run")?;
    std::thread::sleep(settle_time(n));
    let client = PeerClient::new(TokioNetwork, Duration::from_secs(2));
    let pids: Vec<i32> = c.nodes.iter().filter_map(|n| n.pid()).collect();
    let sample = |rt: &tokio::runtime::Runtime| -> Vec<Sample> {
        c.nodes
            .iter()
            .zip(&pids)
            .map(|(node, pid)| {
                let (requests, bytes) = rt
                    .block_on(traffic(&client, &node.addr))
                    .unwrap_or_default();
                Sample {
                    cpu_s: cpu_seconds(*pid).unwrap_or(0.0),
                    requests,
                    bytes,
                }
            })
            .collect()
    };
    let before = sample(rt);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(args.cost_seconds));
    let after = sample(rt);
    let secs = t.elapsed().as_secs_f64();
    let rss: Vec<u64> = pids.iter().filter_map(|p| rss_kib(*p)).collect();
    c.shutdown();

    let per_node = |f: fn(&Sample) -> f64| -> Vec<f64> {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| f(a) - f(b))
            .collect()
    };
    let cpu = per_node(|s| s.cpu_s);
    let reqs = per_node(|s| s.requests);
    let bytes = per_node(|s| s.bytes);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(Cost {
        nodes: n,
        seconds: secs,
        requests_per_node_per_s: mean(&reqs) / secs,
        bytes_per_node_per_s: mean(&bytes) / secs,
        rss_kib_max: rss.iter().copied().max().unwrap_or(0),
        rss_kib_mean: rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64,
        cpu_s_per_min_mean: mean(&cpu) / secs * 60.0,
        cpu_s_per_min_max: cpu.iter().copied().fold(0.0, f64::max) / secs * 60.0,
        cluster_core_percent: cpu.iter().sum::<f64>() / secs * 100.0,
    })
}

/// A steady cluster while every core is kept busy: count leader changes.
fn loaded(bin: &std::path::Path, args: &Args) -> anyhow::Result<LoadRun> {
    let n = args.load_nodes;
    let c = Cluster::launch(bin, n, &args.node_args, &scratch("load"))?;
    let (_, settled) = c
        .wait_agreement(None, Duration::from_secs(20))
        .context("convergence before load run")?;
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(2);
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.load_seconds));
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        let _ = b.join();
    }
    let spurious = c.changes_since(settled);
    c.shutdown();
    Ok(LoadRun {
        nodes: n,
        seconds: args.load_seconds,
        busy_threads: threads,
        spurious_changes: spurious,
    })
}

/// How this run was started, for the Markdown file.
fn command_line() -> String {
    std::iter::once("cargo run --release --example bench --".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The les binary: given, or `<target dir>/release/les`, built (or brought up to date).
fn les_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(b) = &args.bin {
        return Ok(b.clone());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Where `cargo build` below puts it: under CARGO_TARGET_DIR when that is set.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release/les");
    eprintln!("building the les binary (release)...");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--bin", "les"])
            .current_dir(&root)
            .status()
            .context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build --release --bin les failed");
    Ok(bin)
}

/// --auth-compare and/or --flood: run those only, write their sections only.
fn auth_and_flood(args: &Args) -> anyhow::Result<()> {
    let bin = les_binary(args)?;
    let command = command_line();
    if args.auth_compare {
        let r = authcost::run(
            &bin,
            &args.node_args,
            args.auth_trials,
            args.auth_cost_seconds,
        )?;
        println!("{}", report::auth_table(&r));
        println!("{}", serde_json::to_string(&r)?);
        write_json(args, "auth", &r)?;
        if !args.no_write {
            report::write_auth(&args.out, &command, &r)?;
            eprintln!("wrote {}", args.out.display());
        }
    }
    if args.flood {
        let plan = flood::FloodPlan {
            idle: args.flood_idle,
            partial: args.flood_partial,
            seconds: args.flood_seconds,
            node_nofile: args.flood_node_nofile,
        };
        let r = flood::run(&bin, &args.node_args, args.flood_trials, plan)?;
        println!("{}", report::flood_table(&r));
        println!("{}", serde_json::to_string(&r)?);
        write_json(args, "flood", &r)?;
        if !args.no_write {
            report::write_flood(&args.out, &command, &r)?;
            eprintln!("wrote {}", args.out.display());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.stepdown_trials > 0 {
        let r = stepdown::run(&les_binary(&args)?, &args.node_args, args.stepdown_trials)?;
        println!("{}", stepdown::table(&r));
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    if args.auth_compare || args.flood {
        return auth_and_flood(&args);
    }
    if args.postgres_trials > 0 {
        return postgres(&args);
    }
    if let Some(want) = netruns::Wanted::only(&args) {
        let bin = les_binary(&args)?;
        let runs = netruns::run(&bin, &args, want)?;
        println!("{}", runs.tables());
        write_json(&args, "netns", &runs)?;
        if !args.no_write {
            runs.write(&args.out, &command_line())?;
            eprintln!("wrote {}", args.out.display());
        }
        return Ok(());
    }
    let mut scale_runs = Vec::new();
    for &n in args.sim_nodes.iter().filter(|n| **n > 0) {
        eprintln!("simulating {n} nodes");
        scale_runs.extend(scale::run(n, 42, n >= args.sim_lean_from));
    }
    let mut loss_runs = Vec::new();
    for &n in args.loss_nodes.iter().filter(|n| **n > 0) {
        eprintln!(
            "simulating {n} nodes for {} s with {}% message loss",
            args.loss_seconds,
            args.loss * 100.0
        );
        loss_runs.push(scale::lossy(n, args.loss, args.loss_seconds, 7));
    }
    let bin = if args.sim_only {
        return sim_only(&args, &scale_runs, &loss_runs);
    } else {
        les_binary(&args)?
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut all_timings = Vec::new();
    let mut all_costs = Vec::new();
    let sizes = if args.sim_only {
        Vec::new()
    } else {
        args.nodes.clone()
    };
    for &n in &sizes {
        eprintln!("N = {n}: {} trials", args.trials);
        all_timings.push(timings(&bin, n, &args)?);
        eprintln!("N = {n}: {} s steady state", args.cost_seconds);
        all_costs.push(cost(&bin, n, &args, &rt)?);
    }
    let load = if args.load_seconds > 0 && !args.sim_only {
        eprintln!(
            "{} nodes for {} s with every core busy",
            args.load_nodes, args.load_seconds
        );
        Some(loaded(&bin, &args)?)
    } else {
        None
    };
    let net = if args.sim_only {
        netruns::NetRuns::default()
    } else {
        netruns::run(&bin, &args, netruns::Wanted::in_full_run(&args))?
    };
    let results = report::Results {
        command: command_line(),
        node_args: args.node_args.clone(),
        trials: args.trials,
        timings: all_timings,
        costs: all_costs,
        load,
        scale: scale_runs,
        loss: loss_runs,
    };
    println!("{}", report::tables(&results));
    println!("{}", net.tables());
    if !args.no_write {
        report::write_markdown(&args.out, &args.svg, &results)?;
        report::write_svg(&args.svg, &results)?;
        net.write(&args.out, &results.command)?;
        eprintln!("wrote {} and {}", args.out.display(), args.svg.display());
    }
    println!("{}", report::headline_json(&results));
    write_json(
        &args,
        "results",
        &serde_json::json!({
            "results": &results,
            "partitions": &net.partitions,
            "vanish": &net.vanish,
            "loss_real": &net.loss_real,
        }),
    )?;
    Ok(())
}

const PG_BEGIN: &str = "<!-- postgres:begin (generated by `cargo run --release --example bench -- --postgres-trials N`; edits here are overwritten) -->";
const PG_END: &str = "<!-- postgres:end -->";

/// `--postgres-trials N`: the PostgreSQL backend's timings, and only its section.
fn postgres(args: &Args) -> anyhow::Result<()> {
    let bin = les_binary(args)?;
    eprintln!("PostgreSQL backend: {} trials", args.postgres_trials);
    let r = pgbench::run(&bin, args.postgres_trials, &args.node_args)?;
    let table = pgbench::table(&r);
    println!("{table}");
    write_json(args, "postgres", &r)?;
    if !args.no_write {
        report::write_generated(&args.out, PG_BEGIN, PG_END, None, &command_line(), &table)?;
        eprintln!("wrote {}", args.out.display());
    }
    Ok(())
}

/// `--sim-only`: print the scale table; write only its section, its plot and the JSON.
fn sim_only(
    args: &Args,
    runs: &[scale::ScaleResult],
    loss: &[scale::LossRun],
) -> anyhow::Result<()> {
    println!("{}", scale_report::table(runs));
    for l in loss {
        println!("{}", serde_json::to_string(l)?);
    }
    if !args.no_write {
        let svg = std::path::Path::new("benchmarks/scale.svg");
        scale_report::write_markdown(&args.out, svg, &command_line(), runs)?;
        scale_report::write_svg(svg, runs)?;
        eprintln!("wrote {} and {}", args.out.display(), svg.display());
    }
    write_json(
        args,
        "scale",
        &serde_json::json!({ "scale": runs, "loss": loss }),
    )
}

/// With `--json PATH`: write `figures` there, pretty-printed, as `{"<part>": …}`. The
/// first part this run writes replaces the file; later parts of the same run join it.
fn write_json(args: &Args, part: &str, figures: &impl Serialize) -> anyhow::Result<()> {
    static STARTED: AtomicBool = AtomicBool::new(false);
    let Some(path) = &args.json else {
        return Ok(());
    };
    let mut doc: serde_json::Map<String, serde_json::Value> =
        if STARTED.swap(true, Ordering::Relaxed) {
            std::fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        } else {
            serde_json::Map::new()
        };
    doc.insert(part.to_string(), serde_json::to_value(figures)?);
    std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

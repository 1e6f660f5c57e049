//! The benchmark's command line.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Measure les: convergence, failover, hand-off and cost on loopback")]
pub struct Args {
    /// Trials of the PostgreSQL backend (3 nodes against a throwaway server from the
    /// postgresql package): hand-off, step-down and crash failover. Runs only that part
    /// and writes only its section. 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub postgres_trials: usize,
    /// Cluster sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "3,10,30")]
    pub nodes: Vec<usize>,
    /// Trials per cluster size for the timing measurements.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// Seconds of steady state for the cost measurement.
    #[arg(long, default_value_t = 60)]
    pub cost_seconds: u64,
    /// Seconds of the spurious-change run under CPU load (0 skips it).
    #[arg(long, default_value_t = 120)]
    pub load_seconds: u64,
    /// Nodes in the spurious-change run.
    #[arg(long, default_value_t = 10)]
    pub load_nodes: usize,
    /// Extra flag passed to every node, e.g. --node-arg=--interval=500ms (repeatable).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    /// The les binary; default <target dir>/release/les (CARGO_TARGET_DIR honoured), built.
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Markdown file to update.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Plot to write.
    #[arg(long, default_value = "benchmarks/failover-convergence.svg")]
    pub svg: PathBuf,
    /// Print only; write no files.
    #[arg(long)]
    pub no_write: bool,
    /// Also write every figure measured, as JSON, to this file (to compare runs).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Cluster sizes for the core-level scale simulation (0 skips it).
    #[arg(long, value_delimiter = ',', default_value = "10,100,300")]
    pub sim_nodes: Vec<usize>,
    /// Cluster sizes from this one up run lean in the simulation: no steady state and
    /// 2 rounds of settling instead of 5, so that their member tables (about 0.5 kB an
    /// entry, growing until every node lists every other) stay within memory.
    #[arg(long, default_value_t = 10_000)]
    pub sim_lean_from: usize,
    /// Cluster sizes for the simulated long run with message loss (0 skips it).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    pub loss_nodes: Vec<usize>,
    /// Message loss rate for that run.
    #[arg(long, default_value_t = 0.05)]
    pub loss: f64,
    /// Simulated seconds for that run.
    #[arg(long, default_value_t = 600)]
    pub loss_seconds: u64,
    /// Only run the simulations.
    #[arg(long)]
    pub sim_only: bool,
    /// Trials per partition scenario (3 nodes with the leader cut off alone, 5 with the
    /// leader and one follower), in network namespaces; needs root, iproute2 and
    /// nftables. 0 skips them. Runs the default mode, and quorum mode (a majority
    /// quorum) when the binary offers --quorum.
    #[arg(long, default_value_t = 0)]
    pub partition_trials: usize,
    /// Seconds each partition lasts.
    #[arg(long, default_value_t = 10)]
    pub partition_seconds: u64,
    /// Only run the partitions (and write only their section of the Markdown file).
    #[arg(long)]
    pub partition_only: bool,
    /// Trials per vanished-leader-host scenario, in network namespaces (needs root,
    /// iproute2 and nftables): once the cluster agreed, every frame to and from the
    /// leader's host is dropped silently; times the survivors' switch to one new
    /// leader. 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub vanish_trials: usize,
    /// Cluster sizes for the vanished-host trials.
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    pub vanish_nodes: Vec<usize>,
    /// Only run the vanished-host trials (and write only their section). Combines with
    /// --partition-only and --loss-only.
    #[arg(long)]
    pub vanish_only: bool,
    /// Trials per loss rate of 5 real nodes in network namespaces, each dropping that
    /// share of the packets it sends and receives (nftables; needs root). 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub loss_trials: usize,
    /// Seconds of loss per --loss-trials trial, after the cluster agreed.
    #[arg(long, default_value_t = 60)]
    pub loss_real_seconds: u64,
    /// Loss rates for --loss-trials, comma-separated shares (0.2 = 20 %).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.2")]
    pub loss_rates: Vec<f64>,
    /// Only run the real-process loss trials (and write only their section). Combines
    /// with --partition-only and --vanish-only.
    #[arg(long)]
    pub loss_only: bool,
    /// Only compare unkeyed and keyed 3-node clusters (failover, hand-off, CPU, RSS)
    /// and time the tag functions; writes only the Authentication section. Combines
    /// with --flood.
    #[arg(long)]
    pub auth_compare: bool,
    /// Trials of each configuration for --auth-compare.
    #[arg(long, default_value_t = 7)]
    pub auth_trials: usize,
    /// Seconds of steady state per --auth-compare trial.
    #[arg(long, default_value_t = 20)]
    pub auth_cost_seconds: u64,
    /// Only run the connection flood against a 3-node cluster, unkeyed and keyed;
    /// writes only the Connection flood section. Combines with --auth-compare.
    #[arg(long)]
    pub flood: bool,
    /// Trials of each configuration for --flood.
    #[arg(long, default_value_t = 5)]
    pub flood_trials: usize,
    /// Seconds each flood lasts before the leader is crashed.
    #[arg(long, default_value_t = 20)]
    pub flood_seconds: u64,
    /// Idle connections the flood holds.
    #[arg(long, default_value_t = 2000)]
    pub flood_idle: usize,
    /// Half-sent requests the flood holds.
    #[arg(long, default_value_t = 200)]
    pub flood_partial: usize,
    /// Start the flood's nodes with this soft open-files limit (e.g. 1024, a common
    /// default) instead of the benchmark's own, which is raised to the hard limit.
    #[arg(long)]
    pub flood_node_nofile: Option<u64>,
    /// Only time operator step-downs (`POST /step-down`) on 3 nodes, this many trials;
    /// prints a table and a JSON line, writes nothing.
    #[arg(long, default_value_t = 0)]
    pub stepdown_trials: usize,
}

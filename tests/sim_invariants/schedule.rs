//! Random fault schedules: which nodes, their clocks, when they start, and a bounded list
//! of faults, all derived from one seed.

use std::fmt;

use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

/// One change the schedule makes, after which it runs for a while.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Crash(String),
    /// Graceful stop.
    Stop(String),
    /// Start a node that is down (a restart if it ran before).
    Start(String),
    /// Crash a node and start it again at once.
    Restart(String),
    /// Cut the links between these groups (every node is in one group).
    Partition(Vec<Vec<String>>),
    /// Connections from the first to the second are dropped.
    OneWay(String, String),
    Heal,
    /// Lose this fraction of messages on every link.
    Loss(f64),
    /// Latency between two nodes, min and max ms.
    Latency(String, String, u64, u64),
    /// Freeze a node (SIGSTOP) for this many ms, then let it go on (SIGCONT).
    Pause(String, u64),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash(n) => write!(f, "crash {n}"),
            Fault::Stop(n) => write!(f, "stop {n}"),
            Fault::Start(n) => write!(f, "start {n}"),
            Fault::Restart(n) => write!(f, "restart {n}"),
            Fault::Partition(groups) => {
                let groups: Vec<String> = groups.iter().map(|g| g.join(" ")).collect();
                write!(f, "partition {}", groups.join(" | "))
            }
            Fault::OneWay(a, b) => write!(f, "cut {a} -> {b}"),
            Fault::Heal => write!(f, "heal"),
            Fault::Loss(p) => write!(f, "loss {}%", p * 100.0),
            Fault::Latency(a, b, min, max) => write!(f, "latency {a} - {b} {min}..{max} ms"),
            Fault::Pause(n, ms) => write!(f, "pause {n} for {ms} ms"),
        }
    }
}

/// A whole schedule. The run ends by healing everything, making sure at least two nodes
/// are up, and watching the cluster converge and stay put.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub seed: u64,
    /// Node names and their clock offsets in ms (negative: behind).
    pub nodes: Vec<(String, i64)>,
    /// Simulated ms to wait before starting each node, in order.
    pub start_gaps_ms: Vec<u64>,
    /// Each fault and how long to run after it, in ms.
    pub steps: Vec<(Fault, u64)>,
    /// Quorum mode: `Config::quorum` of every node (0: default mode).
    pub quorum: usize,
    /// A node that never leads (`eligible = false`), if any.
    pub witness: Option<String>,
    /// Each node's clock rate, in node order (empty: all 1.0).
    pub clock_rates: Vec<f64>,
    /// Simulated ms to run after the last start, before the first fault.
    pub warmup_ms: u64,
}

/// Most faults in one schedule.
pub const MAX_FAULTS: usize = 6;
/// Longest run after one fault, in ms (long enough for removals: timeout + suspicion).
pub const MAX_STEP_MS: u64 = 6_000;

impl Schedule {
    /// The schedule for `seed`: 3 to 9 nodes, up to [`MAX_FAULTS`] faults.
    pub fn generate(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = rng.random_range(3..=9);
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        // Skew: usually none, sometimes up to ±2 s, rarely a node an hour behind.
        let mut nodes = skewed_clocks(&mut rng, &names, 0.3, 2_000);
        if rng.random_bool(0.1) {
            let i = rng.random_range(0..n);
            nodes[i].1 = -3_600_000;
        }
        let start_gaps_ms = start_gaps(&mut rng, n, 1_500);

        let mut up: Vec<String> = names.clone();
        let mut down: Vec<String> = Vec::new();
        let mut steps = Vec::new();
        for _ in 0..rng.random_range(1..=MAX_FAULTS) {
            // A draw may not fit the cluster's state (nothing to start): draw again.
            let fault = (0..100)
                .find_map(|_| draw_fault(&mut rng, &names, &up, &down))
                .unwrap_or(Fault::Heal);
            match &fault {
                Fault::Crash(node) | Fault::Stop(node) => {
                    up.retain(|n| n != node);
                    down.push(node.clone());
                }
                Fault::Start(node) => {
                    down.retain(|n| n != node);
                    up.push(node.clone());
                }
                _ => {}
            }
            let run_ms = rng.random_range(100..=MAX_STEP_MS);
            steps.push((fault, run_ms));
        }
        Schedule {
            seed,
            nodes,
            start_gaps_ms,
            steps,
            quorum: 0,
            witness: None,
            clock_rates: Vec::new(),
            warmup_ms: 0,
        }
    }
}

/// One random fault, or `None` if the draw does not fit the cluster's state.
fn draw_fault(
    rng: &mut SmallRng,
    names: &[String],
    up: &[String],
    down: &[String],
) -> Option<Fault> {
    let fault = match rng.random_range(0..9) {
        0 | 1 if !up.is_empty() => {
            let node = pick(rng, up);
            if rng.random_bool(0.7) {
                Fault::Crash(node)
            } else {
                Fault::Stop(node)
            }
        }
        2 if !down.is_empty() => Fault::Start(pick(rng, down)),
        3 => Fault::Partition(random_groups(rng, names)),
        4 => one_way(rng, names)?,
        5 => Fault::Heal,
        6 => Fault::Loss(*[0.01, 0.05, 0.1, 0.2, 0.3].choose(rng).unwrap_or(&0.05)),
        7 => {
            let a = pick(rng, names);
            let b = pick(rng, names);
            if a == b {
                return None;
            }
            let min = rng.random_range(1..100);
            let max = min + rng.random_range(0..100);
            Fault::Latency(a, b, min, max)
        }
        8 if !up.is_empty() => Fault::Restart(pick(rng, up)),
        _ => return None,
    };
    Some(fault)
}

/// Each node with its clock offset: with probability `p` all skewed, each by up to
/// `max_ms` either way; otherwise none.
pub fn skewed_clocks(
    rng: &mut SmallRng,
    names: &[String],
    p: f64,
    max_ms: i64,
) -> Vec<(String, i64)> {
    let skewed = rng.random_bool(p);
    names
        .iter()
        .map(|name| {
            let offset = if skewed {
                rng.random_range(-max_ms..=max_ms)
            } else {
                0
            };
            (name.clone(), offset)
        })
        .collect()
}

/// How long to wait before starting each of `n` nodes: often at once, else up to
/// `max_ms`.
pub fn start_gaps(rng: &mut SmallRng, n: usize, max_ms: u64) -> Vec<u64> {
    (0..n)
        .map(|_| {
            if rng.random_bool(0.4) {
                0
            } else {
                rng.random_range(1..max_ms)
            }
        })
        .collect()
}

/// Two or three groups (at most one per node), every node in one, at random.
pub fn random_groups(rng: &mut SmallRng, names: &[String]) -> Vec<Vec<String>> {
    let mut shuffled = names.to_vec();
    shuffled.shuffle(rng);
    let k = rng.random_range(2..=3.min(names.len()));
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); k];
    for (i, name) in shuffled.into_iter().enumerate() {
        // Every group gets at least one node, the rest at random.
        let g = if i < k { i } else { rng.random_range(0..k) };
        groups[g].push(name);
    }
    for g in &mut groups {
        g.sort();
    }
    groups
}

/// A one-way cut between two different nodes, or `None` if the draw picked one twice.
pub fn one_way(rng: &mut SmallRng, names: &[String]) -> Option<Fault> {
    let a = pick(rng, names);
    let b = pick(rng, names);
    (a != b).then_some(Fault::OneWay(a, b))
}

pub fn pick(rng: &mut SmallRng, from: &[String]) -> String {
    from.choose(rng).cloned().unwrap_or_default()
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {}: {} nodes", self.seed, self.nodes.len())?;
        if self.quorum > 0 {
            write!(f, ", quorum {}", self.quorum)?;
        }
        if let Some(w) = &self.witness {
            write!(f, ", witness {w}")?;
        }
        let rates: Vec<String> = (self.nodes.iter().zip(&self.clock_rates))
            .filter(|(_, r)| **r != 1.0)
            .map(|((n, _), r)| format!("{n} x{r:.3}"))
            .collect();
        if !rates.is_empty() {
            write!(f, " (clock rates: {})", rates.join(", "))?;
        }
        let skews: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, o)| *o != 0)
            .map(|(n, o)| format!("{n} {o:+} ms"))
            .collect();
        if !skews.is_empty() {
            write!(f, " (clocks: {})", skews.join(", "))?;
        }
        write!(f, "; start gaps {:?} ms", self.start_gaps_ms)?;
        if self.warmup_ms > 0 {
            write!(f, "; run {} ms", self.warmup_ms)?;
        }
        for (fault, ms) in &self.steps {
            write!(f, "; {fault}, run {ms} ms")?;
        }
        write!(f, "; heal all")
    }
}

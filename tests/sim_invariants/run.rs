//! Running schedules and keeping what the invariants need: the trace, plus each node's
//! term and leader sampled at every tick.
//!
//! The runs are shared: the first invariant test to ask runs every schedule (on every
//! core), the others wait for the same results.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use les::sim::{Cluster, NodeSpec, TraceEntry, TraceEvent, SEED_ENV};

use crate::converges_to_the_most_senior::CONVERGENCE_ROUNDS;
use crate::schedule::{Fault, Schedule};

/// Environment variable: how many schedules to run (default [`DEFAULT_CASES`]).
pub const CASES_ENV: &str = "LES_SIM_CASES";
/// Environment variable: when set, failures print the whole trace of the run.
pub const TRACE_ENV: &str = "LES_SIM_TRACE";
/// Schedules CI runs.
pub const DEFAULT_CASES: usize = 500;
/// Simulated time per step of these runs. Coarser than the default: many runs to do.
pub const TICK: Duration = Duration::from_millis(10);
/// The gossip interval (the default configuration's): a "round".
pub const ROUND: Duration = Duration::from_millis(500);
/// How long a fault's effects may linger after it heals, in rounds: a request sent
/// into the fault times out (1 s), the suspicion it raised expires (2 s), the member it
/// removed is refused re-entry with its old start time (5 s), then rejoins (a round).
/// Leader changes in that time are the fault's doing; after it, none are expected.
pub const SETTLE_ROUNDS: u32 = 18;
/// How long the stable period after settling lasts, in rounds.
pub const STABLE_ROUNDS: u32 = 10;

/// A node incarnation: name and how many times it had started.
pub type Incarnation = (String, u32);

/// Everything one schedule's run left behind.
#[derive(Debug)]
pub struct Run {
    pub schedule: Schedule,
    /// Why the run could not finish (a panic in the simulation), if it did not.
    pub broke: Option<String>,
    pub trace: Vec<TraceEntry>,
    /// Each incarnation's term, sampled at every tick (only changes are kept).
    pub terms: BTreeMap<Incarnation, Vec<(Duration, u64)>>,
    /// Each incarnation's leader, sampled at every tick (only changes are kept).
    pub leaders: BTreeMap<Incarnation, Vec<(Duration, Option<String>)>>,
    /// When the last fault was healed.
    pub healed_at: Duration,
    /// Since when every up node has named the most senior up node, without a break,
    /// until the end of the run (`None` if they do not at the end).
    pub agreed_since: Option<Duration>,
    /// Start of the stable period: settled and agreed. `None` if agreement did not come
    /// within the convergence bound.
    pub stable_from: Option<Duration>,
    /// The most senior up node at the end, and whom each up node named.
    pub most_senior: Option<String>,
    pub leaders_at_end: Vec<(String, Option<String>)>,
    /// Highest one-way latency any link was given.
    pub max_latency: Duration,
}

impl Run {
    /// What the run was and the command that replays it (and, with `LES_SIM_TRACE`
    /// set, everything that happened in it).
    pub fn describe(&self) -> String {
        // The quorum tests' names contain "quorum": the filter runs only them.
        let filter = if self.schedule.quorum > 0 {
            " quorum"
        } else {
            ""
        };
        let mut out = format!(
            "{}\n  replay: {SEED_ENV}={} cargo test --all-features --test sim_invariants{filter}",
            self.schedule, self.schedule.seed
        );
        if std::env::var_os(TRACE_ENV).is_some() {
            for e in &self.trace {
                out.push_str(&format!("\n  {:>7} ms  {:?}", e.at.as_millis(), e.event));
            }
        }
        out
    }
}

/// The seeds to run: `LES_SIM_SEED` alone, or as many seeds as the variable `cases_env`
/// says (default `default_cases`).
pub fn seeds(cases_env: &str, default_cases: usize) -> Vec<u64> {
    if let Some(seed) = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return vec![seed];
    }
    let cases = std::env::var(cases_env)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default_cases);
    (1..=cases as u64).collect()
}

/// Every default-mode run, done once per test binary, spread over the machine's cores.
pub fn runs() -> &'static [Run] {
    static RUNS: OnceLock<Vec<Run>> = OnceLock::new();
    RUNS.get_or_init(|| {
        run_all(&seeds(CASES_ENV, DEFAULT_CASES), |seed| {
            let schedule = Schedule::generate(seed);
            run_catching(schedule, execute)
        })
    })
}

/// Run `run(seed)` for every seed, on every core; the runs in seed order.
pub fn run_all(seeds: &[u64], run: impl Fn(u64) -> Run + Sync) -> Vec<Run> {
    {
        let next = AtomicUsize::new(0);
        let done = Mutex::new(Vec::with_capacity(seeds.len()));
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(seeds.len())
            .max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { break };
                    let result = run(seed);
                    done.lock().unwrap().push(result);
                });
            }
        });
        let mut runs = done.into_inner().unwrap();
        runs.sort_by_key(|r| r.schedule.seed);
        runs
    }
}

/// Check `invariant` on every default-mode run that finished; fail listing the runs
/// that break it.
pub fn check(invariant: &str, f: impl Fn(&Run) -> Result<(), String>) {
    check_in(runs(), invariant, f);
}

/// Check `invariant` on every run of `runs` that finished.
pub fn check_in(runs: &[Run], invariant: &str, f: impl Fn(&Run) -> Result<(), String>) {
    let failures: Vec<String> = runs
        .iter()
        .filter(|r| r.broke.is_none())
        .filter_map(|r| f(r).err().map(|why| format!("{why}\n  {}", r.describe())))
        .collect();
    assert!(
        failures.is_empty(),
        "{invariant}: broken in {} of {} runs; the first ones:\n{}",
        failures.len(),
        runs.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Run `schedule` with `execute`, turning a panic in the simulation into a broken run.
pub fn run_catching(schedule: Schedule, execute: fn(&Schedule) -> Run) -> Run {
    match catch_unwind(AssertUnwindSafe(|| execute(&schedule))) {
        Ok(run) => run,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Run {
                schedule,
                broke: Some(why),
                trace: Vec::new(),
                terms: BTreeMap::new(),
                leaders: BTreeMap::new(),
                healed_at: Duration::ZERO,
                agreed_since: None,
                stable_from: None,
                most_senior: None,
                leaders_at_end: Vec::new(),
                max_latency: Duration::ZERO,
            }
        }
    }
}

/// Samples of each up node's term and leader, taken after every step.
#[derive(Default)]
pub struct Samples {
    pub terms: BTreeMap<Incarnation, Vec<(Duration, u64)>>,
    pub leaders: BTreeMap<Incarnation, Vec<(Duration, Option<String>)>>,
}

impl Samples {
    pub fn take(&mut self, sim: &Cluster) {
        let now = sim.now();
        for name in sim.up() {
            let key = (name.clone(), sim.incarnation(&name));
            if let Some(term) = sim.term(&name) {
                let terms = self.terms.entry(key.clone()).or_default();
                if terms.last().is_none_or(|(_, t)| *t != term) {
                    terms.push((now, term));
                }
            }
            let leader = sim.leader(&name);
            let leaders = self.leaders.entry(key).or_default();
            if leaders.last().is_none_or(|(_, l)| *l != leader) {
                leaders.push((now, leader));
            }
        }
    }
}

pub fn run_sampled(sim: &mut Cluster, duration: Duration, samples: &mut Samples) {
    let end = sim.now() + duration;
    while sim.now() < end {
        sim.step();
        samples.take(sim);
    }
}

/// A cluster of the schedule's nodes (not started), with its mode, witness and clocks.
pub fn build(schedule: &Schedule) -> Cluster {
    let quorum = schedule.quorum;
    let mut builder = Cluster::builder()
        .seed(schedule.seed)
        .tick(TICK)
        .configure(move |c| c.quorum = quorum);
    for (i, (name, offset_ms)) in schedule.nodes.iter().enumerate() {
        let offset = Duration::from_millis(offset_ms.unsigned_abs());
        let mut spec = NodeSpec::new(name.clone());
        spec = if *offset_ms < 0 {
            spec.clock_behind(offset)
        } else {
            spec.clock_ahead(offset)
        };
        if let Some(rate) = schedule.clock_rates.get(i) {
            spec = spec.clock_rate(*rate);
        }
        if schedule.witness.as_ref() == Some(name) {
            spec = spec.configure(|c| c.eligible = false);
        }
        if (schedule.steps.iter()).any(|(f, _)| matches!(f, Fault::Pause(n, _) if n == name)) {
            spec = spec.pausable();
        }
        builder = builder.node(spec);
    }
    builder.build()
}

/// Start the nodes with the schedule's gaps, run the warm-up, then every fault in turn.
/// Returns the highest one-way latency any link was given.
pub fn play(sim: &mut Cluster, schedule: &Schedule, samples: &mut Samples) -> Duration {
    let mut max_latency = Duration::from_millis(10);
    for ((name, _), gap) in schedule.nodes.iter().zip(&schedule.start_gaps_ms) {
        run_sampled(sim, Duration::from_millis(*gap), samples);
        sim.start(name);
    }
    run_sampled(sim, Duration::from_millis(schedule.warmup_ms), samples);
    for (fault, run_ms) in &schedule.steps {
        if let Fault::Latency(_, _, _, max) = fault {
            max_latency = max_latency.max(Duration::from_millis(*max));
        }
        apply(sim, fault, samples);
        run_sampled(sim, Duration::from_millis(*run_ms), samples);
    }
    max_latency
}

/// Make one fault happen (a pause runs its whole length).
fn apply(sim: &mut Cluster, fault: &Fault, samples: &mut Samples) {
    match fault {
        Fault::Crash(n) => sim.crash(n),
        Fault::Stop(n) => sim.stop(n),
        Fault::Start(n) => sim.start(n),
        Fault::Restart(n) => sim.restart(n),
        Fault::Partition(groups) => {
            let groups: Vec<Vec<&str>> = groups
                .iter()
                .map(|g| g.iter().map(String::as_str).collect())
                .collect();
            let groups: Vec<&[&str]> = groups.iter().map(Vec::as_slice).collect();
            sim.partition(&groups);
        }
        Fault::OneWay(a, b) => sim.partition_oneway(a, b),
        Fault::Heal => sim.heal(),
        Fault::Loss(p) => sim.set_loss(*p),
        Fault::Latency(a, b, min, max) => sim.set_link_latency(
            a,
            b,
            Duration::from_millis(*min),
            Duration::from_millis(*max),
        ),
        Fault::Pause(n, ms) => {
            sim.pause(n);
            run_sampled(sim, Duration::from_millis(*ms), samples);
            sim.resume(n);
        }
    }
}

/// The last fault heals: every link repaired, no loss, and nodes that are down started
/// in order until `enough` holds. Returns when.
pub fn heal_all(sim: &mut Cluster, enough: impl Fn(&Cluster) -> bool) -> Duration {
    sim.heal();
    sim.set_loss(0.0);
    for name in sim.names() {
        if enough(sim) {
            break;
        }
        if !sim.is_running(&name) {
            sim.start(&name);
        }
    }
    sim.now()
}

/// Run one default-mode schedule to the end.
pub fn execute(schedule: &Schedule) -> Run {
    let mut sim = build(schedule);
    let mut samples = Samples::default();
    let max_latency = play(&mut sim, schedule, &mut samples);

    // The last fault heals: links repaired, no loss, and at least two nodes up (a node
    // alone from its start never elects, by design).
    let healed_at = heal_all(&mut sim, |sim| sim.up().len() >= 2);
    let settled = healed_at + ROUND * SETTLE_ROUNDS;
    let deadline = healed_at + ROUND * CONVERGENCE_ROUNDS;
    let mut agreed_since: Option<Duration> = None;
    let watch = |sim: &Cluster, agreed_since: &mut Option<Duration>| {
        let senior = sim.most_senior();
        if senior.is_some() && sim.agreed_leader() == senior {
            agreed_since.get_or_insert(sim.now());
        } else {
            *agreed_since = None;
        }
    };
    let mut stable_from = None;
    loop {
        watch(&sim, &mut agreed_since);
        if agreed_since.is_some() && sim.now() >= settled {
            stable_from = Some(sim.now());
            break;
        }
        if sim.now() >= deadline {
            break;
        }
        sim.step();
        samples.take(&sim);
    }
    if stable_from.is_some() {
        let end = sim.now() + ROUND * STABLE_ROUNDS;
        while sim.now() < end {
            sim.step();
            samples.take(&sim);
            watch(&sim, &mut agreed_since);
        }
    }
    let ending = Ending {
        healed_at,
        agreed_since,
        stable_from,
        max_latency,
    };
    Run::finished(schedule, &sim, samples, ending)
}

/// What the watch after the heal found.
pub struct Ending {
    pub healed_at: Duration,
    pub agreed_since: Option<Duration>,
    pub stable_from: Option<Duration>,
    pub max_latency: Duration,
}

impl Run {
    /// The run of `schedule` that ended with `sim` in its final state.
    pub fn finished(schedule: &Schedule, sim: &Cluster, samples: Samples, e: Ending) -> Run {
        Run {
            schedule: schedule.clone(),
            broke: None,
            trace: sim.trace(),
            terms: samples.terms,
            leaders: samples.leaders,
            healed_at: e.healed_at,
            agreed_since: e.agreed_since,
            stable_from: e.stable_from,
            most_senior: sim.most_senior(),
            leaders_at_end: sim
                .up()
                .into_iter()
                .map(|n| (n.clone(), sim.leader(&n)))
                .collect(),
            max_latency: e.max_latency,
        }
    }
}

/// Every `LeaderChanged` entry of the run: (time, incarnation, new leader, term).
pub fn leader_changes(
    run: &Run,
) -> impl Iterator<Item = (Duration, Incarnation, Option<&str>, u64)> {
    run.trace.iter().filter_map(|e| match &e.event {
        TraceEvent::LeaderChanged {
            node,
            incarnation,
            to,
            term,
            ..
        } => Some((e.at, (node.clone(), *incarnation), to.as_deref(), *term)),
        _ => None,
    })
}

//! Random fault schedules in quorum mode: 3 to 5 nodes, quorum a majority, sometimes a
//! witness, clocks running up to 4 % fast or slow, and faults that test leases —
//! partitions both ways, one-way cuts, message loss, pauses shorter and longer than the
//! lease, crashes and restarts.

use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::schedule::{one_way, pick, random_groups, skewed_clocks, start_gaps, Fault, Schedule};

/// Most faults in one quorum schedule.
pub const MAX_QUORUM_FAULTS: usize = 4;
/// Longest run after one quorum fault, in ms: past the lease (3 s), so that both sides
/// of a partition act on it.
pub const MAX_QUORUM_STEP_MS: u64 = 4_000;
/// Largest deviation of a clock's rate from real time (the core assumes at most 5 %).
pub const MAX_DRIFT: f64 = 0.04;

impl Schedule {
    /// The quorum-mode schedule for `seed`.
    pub fn generate_quorum(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = rng.random_range(3..=5);
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let nodes = skewed_clocks(&mut rng, &names, 0.2, 1_000);
        let clock_rates = names
            .iter()
            .map(|_| {
                if rng.random_bool(0.7) {
                    1.0 + rng.random_range(-MAX_DRIFT..=MAX_DRIFT)
                } else {
                    1.0
                }
            })
            .collect();
        let witness = rng.random_bool(0.3).then(|| pick(&mut rng, &names));
        let start_gaps_ms = start_gaps(&mut rng, n, 1_000);
        let steps = quorum_steps(&mut rng, &names);
        Schedule {
            seed,
            nodes,
            start_gaps_ms,
            steps,
            quorum: n / 2 + 1,
            witness,
            clock_rates,
            warmup_ms: 2_000,
        }
    }
}

/// Up to [`MAX_QUORUM_FAULTS`] faults, each with how long to run after it.
fn quorum_steps(rng: &mut SmallRng, names: &[String]) -> Vec<(Fault, u64)> {
    let mut up: Vec<String> = names.to_vec();
    let mut down: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    for _ in 0..rng.random_range(1..=MAX_QUORUM_FAULTS) {
        let fault = (0..100)
            .find_map(|_| draw_quorum_fault(rng, names, &up, &down))
            .unwrap_or(Fault::Heal);
        match &fault {
            Fault::Crash(node) => {
                up.retain(|n| n != node);
                down.push(node.clone());
            }
            Fault::Start(node) => {
                down.retain(|n| n != node);
                up.push(node.clone());
            }
            _ => {}
        }
        steps.push((fault, rng.random_range(100..=MAX_QUORUM_STEP_MS)));
    }
    steps
}

/// One random fault, or `None` if the draw does not fit the cluster's state.
fn draw_quorum_fault(
    rng: &mut SmallRng,
    names: &[String],
    up: &[String],
    down: &[String],
) -> Option<Fault> {
    let fault = match rng.random_range(0..10) {
        0 | 1 => Fault::Partition(random_groups(rng, names)),
        2 => one_way(rng, names)?,
        3 => Fault::Loss(*[0.05, 0.1, 0.2, 0.3].choose(rng).unwrap_or(&0.1)),
        4 | 5 if !up.is_empty() => {
            // Shorter than the lease (3 s), or longer.
            let ms = if rng.random_bool(0.5) {
                rng.random_range(300..2_800)
            } else {
                rng.random_range(3_200..8_000)
            };
            Fault::Pause(pick(rng, up), ms)
        }
        6 if !up.is_empty() => Fault::Crash(pick(rng, up)),
        7 if !down.is_empty() => Fault::Start(pick(rng, down)),
        8 if !up.is_empty() => Fault::Restart(pick(rng, up)),
        9 => Fault::Heal,
        _ => return None,
    };
    Some(fault)
}

//! Property-based fuzzing of everything les accepts from outside: peer state documents,
//! configuration (TOML, flags), event sequences fed to the protocol core, and raw HTTP
//! requests to a live node.
//!
//! Why proptest rather than a coverage-guided fuzzer: it runs on stable Rust inside
//! `cargo test`, so the targets are built and run by the ordinary suite and cannot rot,
//! and its strategies let each target generate *near-valid* input (the right field
//! names with wrong types, boundary numbers, hostile but validated peer states), which
//! reaches far deeper than random bytes alone.
//!
//! Every target reads its case count from `LES_FUZZ_CASES` (default [`DEFAULT_CASES`],
//! sized so that the whole binary runs in well under a minute in a debug build on two
//! loaded cores). The long runs are documented in `TESTING.md`:
//!
//! ```text
//! LES_FUZZ_CASES=1000000 cargo test --release --test fuzz -- --test-threads=1 <target>
//! ```
//!
//! Failures are persisted by proptest under `tests/fuzz/regressions/<target>.txt`, one
//! file per target, and replayed first on every later run; commit them with the fix.

mod auth;
mod config;
mod core_events;
mod http;
mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};

/// Cases per target when `LES_FUZZ_CASES` is not set.
pub const DEFAULT_CASES: u32 = 500;

/// The case count for every target: `LES_FUZZ_CASES`, or [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    match std::env::var("LES_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("LES_FUZZ_CASES must be a number of cases, got {v:?}")),
        Err(_) => DEFAULT_CASES,
    }
}

/// The proptest settings of one target: [`cases`] cases, failures persisted in `file`
/// (`tests/fuzz/regressions/<target>.txt`, relative to the package root, which is
/// where cargo runs tests).
pub fn config(file: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..ProptestConfig::default()
    }
}

/// Cases between two progress lines.
const PROGRESS_EVERY: u64 = 10_000;

/// Count one case of `test` in `counter`, printing a progress line to stderr every
/// [`PROGRESS_EVERY`] cases. A long run cut short by a time limit then still records
/// how many cases it completed (shrinking runs count too, so the figure is an upper
/// bound only while a failure is being shrunk).
pub fn progress(counter: &AtomicU64, test: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    if n % PROGRESS_EVERY == 0 {
        eprintln!(
            "fuzz progress: {test}: {n} cases, {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
}

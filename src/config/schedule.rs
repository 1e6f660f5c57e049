//! Validation of the relinquish schedules (`relinquish_every`, `relinquish_cron`), and
//! the one cron parser both the configuration and the runtime use.
//!
//! A schedule that fires every few milliseconds would make the cluster change leader
//! all the time, and a typo in a cron expression would silently never fire: both are
//! rejected before anything starts, with the key named. Each schedule must leave at
//! least [`MIN_ROUNDS`] rounds between two step-downs, so the cluster has settled on
//! the new leader well before it is asked to move again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use super::{Config, ConfigError};

/// Fewest gossip rounds (`interval`s) between two scheduled step-downs.
pub const MIN_ROUNDS: u32 = 3;

/// Longest `relinquish_every` accepted: a year (rotate less often with a cron
/// expression, or not at all).
pub const MAX_RELINQUISH_EVERY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Occurrences of a cron expression checked for gaps shorter than the minimum.
const GAPS_CHECKED: usize = 16;

/// Parse a cron expression: five fields (minute granularity) or six with seconds
/// first, with croner's extensions (`L`, `#`, `W`, names, `@daily` and friends). The
/// error is the parser's own message.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    if expr.trim().is_empty() {
        return Err("is empty (leave it out to schedule nothing)".into());
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr.trim())
        .map_err(|e| e.to_string())
}

/// The first time after `after_epoch` (epoch seconds, UTC) that `cron` names, in epoch
/// seconds; `None` if it names no later time (or the time is out of range).
pub fn next_after(cron: &Cron, after_epoch: f64) -> Option<f64> {
    let secs = after_epoch.floor();
    if !secs.is_finite() {
        return None;
    }
    let start: DateTime<Utc> = DateTime::from_timestamp(secs as i64, 0)?;
    let next = cron.find_next_occurrence(&start, false).ok()?;
    Some(next.timestamp() as f64)
}

/// Check both schedules of `cfg`; the error names the key.
pub(super) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    let min_gap = cfg.interval * MIN_ROUNDS;
    let too_often = |key| ConfigError::Invalid {
        key,
        why: format!(
            "must leave at least {MIN_ROUNDS} rounds between step-downs ({} with interval {})",
            humantime::format_duration(min_gap),
            humantime::format_duration(cfg.interval)
        ),
    };
    if let Some(every) = cfg.relinquish_every {
        if every < min_gap {
            return Err(too_often("relinquish_every"));
        }
        if every > MAX_RELINQUISH_EVERY {
            return Err(ConfigError::Invalid {
                key: "relinquish_every",
                why: "must be at most 365days (use relinquish_cron for rarer rotations)".into(),
            });
        }
    }
    if let Some(expr) = &cfg.relinquish_cron {
        let invalid = |why: String| ConfigError::Invalid {
            key: "relinquish_cron",
            why: format!("{expr:?}: {why}"),
        };
        let cron = parse_cron(expr).map_err(invalid)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut at =
            next_after(&cron, now).ok_or_else(|| invalid("names no time in the future".into()))?;
        for _ in 0..GAPS_CHECKED {
            let Some(next) = next_after(&cron, at) else {
                break;
            };
            if next - at < min_gap.as_secs_f64() {
                return Err(too_often("relinquish_cron"));
            }
            at = next;
        }
    }
    Ok(())
}

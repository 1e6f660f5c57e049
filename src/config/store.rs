//! The settings a store backend checks and ignores (see [`crate::backend`]): apart
//! from [`super`] because they are the part that differs between backends.

use std::time::Duration;

use super::{defaults, Config, ConfigError};
use crate::auth::check_cluster_name;

impl Config {
    /// The timings checked under a store backend (seeds and the other gossip settings
    /// are ignored there).
    pub(super) fn validate_store(&self) -> Result<(), ConfigError> {
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                key: "interval",
                why: "must be between 10ms and 60s".into(),
            });
        }
        if self.lease < self.interval * 2 || self.lease > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid {
                key: "lease",
                why: format!(
                    "must be at least twice interval ({}) and at most 1h under the database backend: the leader renews its lease every interval, and a shorter lease lapses on one slow round",
                    humantime::format_duration(self.interval * 2)
                ),
            });
        }
        if self.request_timeout.is_zero() || self.request_timeout >= self.lease {
            return Err(ConfigError::Invalid {
                key: "request_timeout",
                why: "must be greater than zero and less than lease under the database backend"
                    .into(),
            });
        }
        if let Some(name) = &self.cluster {
            check_cluster_name(name).map_err(|why| ConfigError::Invalid {
                key: "cluster",
                why: format!("{name:?}: {why}"),
            })?;
        }
        Ok(())
    }

    /// The gossip-only settings set away from their defaults (ignored, and logged as
    /// such, under a store backend).
    pub fn gossip_only_settings(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if !self.seeds.is_empty() {
            set.push("seeds");
        }
        if self.quorum != defaults::QUORUM {
            set.push("quorum");
        }
        if self.fanout != defaults::FANOUT {
            set.push("fanout");
        }
        if self.suspicion_timeout != defaults::SUSPICION_TIMEOUT {
            set.push("suspicion_timeout");
        }
        if self.rejoin_holdoff != defaults::REJOIN_HOLDOFF {
            set.push("rejoin_holdoff");
        }
        if self.watch_interval != defaults::WATCH_INTERVAL {
            set.push("watch_interval");
        }
        set
    }
}

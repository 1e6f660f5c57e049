//! Configuration: command-line flags, `LES_*` environment variables and a TOML file,
//! merged into one validated [`Config`].
//!
//! Precedence is flag > environment > file > default. clap reads flags and environment
//! together ([`RunArgs`], every field optional); the TOML file is read into [`FileConfig`]
//! (unknown keys are rejected, so a typo is an error rather than a silently ignored
//! setting); [`RunArgs::resolve`] merges the two over the defaults and validates the
//! result. Library users skip all that and build a [`Config`] directly with
//! [`Config::new`].
//!
//! Every key is documented with its default in `les.toml.example`, which a test parses
//! and compares with [`defaults`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::check_cluster_name;
pub use crate::backend::Backend;
use crate::core::CoreConfig;
use crate::wire::{check_addr, AddrError};

/// The defaults, re-exported from [`crate::defaults`] where every layer can read them.
pub use crate::defaults;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub bind: SocketAddr,
    /// `host:port` other nodes use to reach this one; also its identity.
    pub advertise_addr: String,
    /// Nodes contacted at start (may include this node). Only this node means a
    /// one-node cluster, which leads at once.
    pub seeds: Vec<String>,
    /// Human-friendly name shown in `/diag/` and `les status`.
    pub name: Option<String>,
    /// Gossip round period.
    pub interval: Duration,
    /// Deadline for one request to a peer.
    pub request_timeout: Duration,
    /// Suspicion period before a member that timed out is removed.
    pub suspicion_timeout: Duration,
    /// How long a removed member may not come back with its old start time.
    pub rejoin_holdoff: Duration,
    /// Members contacted per round once there are more (0 = all).
    pub fanout: usize,
    /// Whether this node may lead; `false` makes a witness that only votes.
    pub eligible: bool,
    /// Quorum mode: nodes (this one included, witnesses count) that must confirm a
    /// leader before it acts; `0` or `1` = off.
    pub quorum: usize,
    /// Quorum mode: how long a confirmation lets the leader act (see README).
    pub lease: Duration,
    /// How often a follower pings its leader (the leader watch); zero turns it off.
    pub watch_interval: Duration,
    /// Cluster name; nodes of different names never merge. `None` = no name (what
    /// Python nodes have).
    pub cluster: Option<String>,
    /// Most connections the HTTP API keeps open.
    pub max_connections: usize,
    /// Where to serve the read-only `/ping`, `/diag` and `/metrics` apart from the
    /// gossip port (which then stops serving `/diag` and `/metrics`).
    pub admin_bind: Option<SocketAddr>,
    /// What decides leadership: gossip (the default) or a database (see
    /// [`crate::backend`]). Under a database the gossip-only settings (`seeds`,
    /// `quorum`, `fanout`, …) are ignored.
    pub backend: Backend,
    /// A leader that has led this long steps down on purpose (see
    /// [`crate::node`]'s relinquish schedule); `None` = never.
    pub relinquish_every: Option<Duration>,
    /// A cron expression (five fields, or six with seconds first; UTC): at each time
    /// it names, the leader steps down. `None` = never.
    pub relinquish_cron: Option<String>,
}

impl Config {
    /// A configuration with every default, listening on `0.0.0.0` at the advertised port.
    pub fn new(advertise_addr: impl Into<String>, seeds: Vec<String>) -> Self {
        let advertise_addr = advertise_addr.into();
        let port = advertise_addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(defaults::BIND_PORT);
        Config {
            bind: SocketAddr::new(defaults::BIND_INTERFACE, port),
            advertise_addr,
            seeds,
            name: None,
            interval: defaults::INTERVAL,
            request_timeout: defaults::REQUEST_TIMEOUT,
            suspicion_timeout: defaults::SUSPICION_TIMEOUT,
            rejoin_holdoff: defaults::REJOIN_HOLDOFF,
            fanout: defaults::FANOUT,
            eligible: defaults::ELIGIBLE,
            quorum: defaults::QUORUM,
            lease: defaults::LEASE,
            watch_interval: defaults::WATCH_INTERVAL,
            cluster: None,
            max_connections: defaults::MAX_CONNECTIONS,
            admin_bind: None,
            backend: Backend::Gossip,
            relinquish_every: None,
            relinquish_cron: None,
        }
    }

    /// Check the settings before anything starts; the error names the offending key.
    /// In quorum mode (`quorum >= 2`) `lease` must be at least `interval +
    /// request_timeout`. A `quorum` of 1, or one larger than the nodes the seeds name,
    /// is allowed: the runtime logs what it means when the node starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_addr(&self.advertise_addr).map_err(|why| ConfigError::Address {
            key: "advertise_addr",
            value: self.advertise_addr.clone(),
            why,
        })?;
        if let Backend::Postgres(_) = self.backend {
            return self.validate_store();
        }
        if self.seeds.is_empty() {
            return Err(ConfigError::Invalid {
                key: "seeds",
                why: "at least one seed is required (list only this node's own address for a one-node cluster)".into(),
            });
        }
        for seed in &self.seeds {
            check_addr(seed).map_err(|why| ConfigError::Address {
                key: "seeds",
                value: seed.clone(),
                why,
            })?;
        }
        let positive = |key: &'static str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::Invalid {
                    key,
                    why: "must be greater than zero".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("interval", self.interval)?;
        positive("request_timeout", self.request_timeout)?;
        positive("suspicion_timeout", self.suspicion_timeout)?;
        for (key, d) in [
            ("interval", self.interval),
            ("request_timeout", self.request_timeout),
            ("suspicion_timeout", self.suspicion_timeout),
            ("rejoin_holdoff", self.rejoin_holdoff),
            ("lease", self.lease),
            ("watch_interval", self.watch_interval),
        ] {
            at_most_a_day(key, d)?;
        }
        if self.interval < Duration::from_millis(10) {
            return Err(ConfigError::Invalid {
                key: "interval",
                why: "must be at least 10ms".into(),
            });
        }
        if !self.watch_interval.is_zero() && self.watch_interval < Duration::from_millis(20) {
            return Err(ConfigError::Invalid {
                key: "watch_interval",
                why: "must be 0 (off) or at least 20ms".into(),
            });
        }
        if let Some(name) = &self.cluster {
            check_cluster_name(name).map_err(|why| ConfigError::Invalid {
                key: "cluster",
                why: format!("{name:?}: {why}"),
            })?;
        }
        if self.max_connections < 16 {
            return Err(ConfigError::Invalid {
                key: "max_connections",
                why: "must be at least 16".into(),
            });
        }
        if self.admin_bind == Some(self.bind) {
            return Err(ConfigError::Invalid {
                key: "admin_addr",
                why: "must differ from the gossip address (bind_interface:bind_port)".into(),
            });
        }
        schedule::validate(self)?;
        let renewal = self.interval + self.request_timeout;
        if self.quorum >= 2 && self.lease < renewal {
            return Err(ConfigError::Invalid {
                key: "lease",
                why: format!(
                    "must be at least interval + request_timeout ({}) in quorum mode: the leader renews its lease in its regular rounds; a shorter lease lapses on one slow answer",
                    humantime::format_duration(renewal)
                ),
            });
        }
        Ok(())
    }

    /// The part of the configuration the protocol core needs.
    pub fn core_config(&self) -> CoreConfig {
        CoreConfig {
            fanout: self.fanout,
            suspicion_timeout: self.suspicion_timeout,
            rejoin_holdoff: self.rejoin_holdoff,
            // Peers need at least request_timeout + suspicion_timeout to remove a silent
            // node, and our own ticks are `interval` apart: a gap longer than both means
            // we were frozen long enough to have been removed.
            pause_threshold: self.interval + self.suspicion_timeout,
            eligible: self.eligible,
            name: self.name.clone(),
            quorum: self.quorum,
            lease: self.lease,
            cluster: self.cluster.clone(),
            watch_interval: self.watch_interval,
            request_timeout: self.request_timeout,
            ..CoreConfig::default()
        }
    }
}

/// Longest any duration setting may be. Far above any sane value, and low enough that
/// sums and the lease's stretch by the clock-rate bound cannot overflow.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(24 * 3600);

fn at_most_a_day(key: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d > MAX_SETTING_DURATION {
        return Err(ConfigError::Invalid {
            key,
            why: "must be at most 1day".into(),
        });
    }
    Ok(())
}

/// A configuration that cannot be used. Nothing has started when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting that must be a `host:port` address (`advertise_addr`, a seed) is not one.
    #[error("`{key}`: {value:?} is not a valid host:port address: {why}")]
    Address {
        /// The setting's key, as in the config file (`advertise_addr`, `seeds`).
        key: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: AddrError,
    },
    /// A setting's value is out of range or inconsistent with another setting.
    #[error("`{key}` {why}")]
    Invalid {
        /// The setting's key, as in the config file.
        key: &'static str,
        /// What is wrong, in words (`must be at most 1day`).
        why: String,
    },
    /// A required setting (`advertise_addr`, `seeds`) was given neither as a flag, nor in
    /// the environment, nor in the config file.
    #[error(
        "`{key}` is required (flag --{flag}, environment {env}, or `{key}` in the config file)"
    )]
    Missing {
        /// The setting's key in the config file.
        key: &'static str,
        /// The flag that sets it, without the leading `--`.
        flag: &'static str,
        /// The environment variable that sets it (`LES_…`).
        env: &'static str,
    },
    /// Several required settings are missing (all of them are named at once).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    MissingSeveral(Vec<ConfigError>),
    /// The config file (`--config`) could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for [`FileConfig`] (an unknown key, a wrong type).
    #[error("config file {path}: {message}")]
    Parse {
        /// The path given.
        path: PathBuf,
        /// What is wrong, on one line: the line, the key and what was expected.
        message: String,
    },
}

mod args;
mod file;
pub use file::FileConfig;
pub mod schedule;
mod store;

pub use args::RunArgs;

/// Hook commands, health check and their timings (the `les` binary's settings around
/// the node, wired by [`crate::daemon`]; library users call
/// [`crate::node::NodeBuilder`] methods instead).
#[derive(Debug, Clone, PartialEq)]
pub struct HookConfig {
    /// Run when this node becomes leader.
    pub on_leader: Option<String>,
    /// Run when this node stops leading, at start-up, and after a crash.
    pub on_follower: Option<String>,
    /// Run on every change, and at start-up.
    pub on_change: Option<String>,
    /// Longest the commands of one change (or a health check) may run.
    pub hook_timeout: Duration,
    /// How long a node whose `on_leader` failed stays ineligible.
    pub step_down_cooldown: Duration,
    /// Command whose non-zero exit makes the node ineligible.
    pub health_check: Option<String>,
    /// Period of the health check.
    pub health_interval: Duration,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            on_leader: None,
            on_follower: None,
            on_change: None,
            hook_timeout: defaults::HOOK_TIMEOUT,
            step_down_cooldown: defaults::STEP_DOWN_COOLDOWN,
            health_check: None,
            health_interval: defaults::HEALTH_INTERVAL,
        }
    }
}

impl HookConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, command) in [
            ("on_leader", &self.on_leader),
            ("on_follower", &self.on_follower),
            ("on_change", &self.on_change),
            ("health_check", &self.health_check),
        ] {
            if command.as_ref().is_some_and(|c| c.trim().is_empty()) {
                return Err(ConfigError::Invalid {
                    key,
                    why: "is empty (leave it out to run nothing)".into(),
                });
            }
        }
        for (key, d) in [
            ("hook_timeout", self.hook_timeout),
            ("step_down_cooldown", self.step_down_cooldown),
            ("health_interval", self.health_interval),
        ] {
            if d < Duration::from_millis(10) {
                return Err(ConfigError::Invalid {
                    key,
                    why: "must be at least 10ms".into(),
                });
            }
            at_most_a_day(key, d)?;
        }
        Ok(())
    }
}

/// Where the keys come from (the `les` binary's settings; library users pass
/// [`crate::auth::Settings`] to [`crate::node::NodeBuilder::auth`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyConfig {
    /// The keyring file, or `None` to run unkeyed.
    pub key_file: Option<PathBuf>,
    /// With a key file, also accept unsigned requests and answers (key rollout).
    pub accept_unsigned: bool,
}

/// Everything `les` needs to run a node: the node config and process-level settings.
/// [`crate::daemon::node_builder`] turns it into a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The validated node configuration.
    pub config: Config,
    /// Hook commands and health check.
    pub hooks: HookConfig,
    /// Keyring settings for signed requests.
    pub keys: KeyConfig,
    /// Log output format (`--log-format`); verbosity comes from `RUST_LOG`.
    pub log_format: LogFormat,
}

impl RunArgs {
    /// Merge flags/env over the config file (if any) over defaults, and validate.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        self.resolve_with(file)
    }

    /// [`RunArgs::resolve`] with an already parsed file.
    pub fn resolve_with(&self, file: FileConfig) -> Result<Resolved, ConfigError> {
        if file.interval.is_some() && file.loop_rate.is_some() {
            return Err(ConfigError::Invalid {
                key: "loop_rate",
                why: "and `interval` are the same setting; give only one".into(),
            });
        }
        // A flag or env for one spelling of the interval beats the file's other
        // spelling: each layer folds `loop_rate` into `interval` before they merge.
        let mut flags = Layer::from(self);
        flags.interval = flags.interval.or(self.loop_rate.map(Duration::from_secs));
        let file_loop_rate = file.loop_rate;
        let mut file = Layer::from(file);
        file.interval = file.interval.or(file_loop_rate.map(Duration::from_secs));
        flags.or(file).resolve()
    }
}

/// Declares [`Layer`], one source's settings with every field optional, and how the
/// flags and the file fill it: the field names are shared by all three structs.
macro_rules! layer {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// The settings of one source (flags and environment, or the file), merged
        /// field by field before the defaults apply.
        #[derive(Debug, Default)]
        struct Layer {
            $($field: Option<$ty>,)*
        }

        impl Layer {
            /// Each setting from `self`, or else from `lower`.
            fn or(self, lower: Layer) -> Layer {
                Layer { $($field: self.$field.or(lower.$field),)* }
            }
        }

        impl From<&RunArgs> for Layer {
            fn from(args: &RunArgs) -> Self {
                Layer { $($field: args.$field.clone(),)* }
            }
        }

        impl From<FileConfig> for Layer {
            fn from(file: FileConfig) -> Self {
                Layer { $($field: file.$field,)* }
            }
        }
    };
}

layer! {
    bind_interface: IpAddr,
    bind_port: u16,
    advertise_addr: String,
    seeds: Vec<String>,
    name: String,
    interval: Duration,
    request_timeout: Duration,
    suspicion_timeout: Duration,
    rejoin_holdoff: Duration,
    fanout: usize,
    eligible: bool,
    quorum: usize,
    lease: Duration,
    watch_interval: Duration,
    log_format: LogFormat,
    on_leader: String,
    on_follower: String,
    on_change: String,
    hook_timeout: Duration,
    step_down_cooldown: Duration,
    health_check: String,
    health_interval: Duration,
    cluster: String,
    key_file: PathBuf,
    accept_unsigned: bool,
    max_connections: usize,
    admin_addr: SocketAddr,
    backend: String,
    relinquish_every: Duration,
    relinquish_cron: String,
}

impl Layer {
    /// The one place defaults apply: fill what no source set, and validate.
    fn resolve(self) -> Result<Resolved, ConfigError> {
        let backend: Backend = match &self.backend {
            Some(b) => b.parse().map_err(|why: String| ConfigError::Invalid {
                key: "backend",
                why: format!("is not usable: {why}"),
            })?,
            None => Backend::Gossip,
        };
        // Every missing setting at once, not one per run.
        let mut missing = Vec::new();
        if self.advertise_addr.is_none() {
            missing.push(ConfigError::Missing {
                key: "advertise_addr",
                flag: "advertise-addr",
                env: "LES_ADVERTISE_ADDR",
            });
        }
        if self.seeds.is_none() && backend == Backend::Gossip {
            missing.push(ConfigError::Missing {
                key: "seeds",
                flag: "seeds",
                env: "LES_SEEDS",
            });
        }
        match missing.len() {
            0 => {}
            1 => return Err(missing.remove(0)),
            _ => return Err(ConfigError::MissingSeveral(missing)),
        }
        // Both present (or seeds not needed) from here on.
        let advertise_addr = self.advertise_addr.unwrap_or_default();
        let seeds = self.seeds.unwrap_or_default();
        let config = Config {
            bind: SocketAddr::new(
                self.bind_interface.unwrap_or(defaults::BIND_INTERFACE),
                self.bind_port.unwrap_or(defaults::BIND_PORT),
            ),
            advertise_addr,
            seeds,
            name: self.name,
            interval: self.interval.unwrap_or(defaults::INTERVAL),
            request_timeout: self.request_timeout.unwrap_or(defaults::REQUEST_TIMEOUT),
            suspicion_timeout: self
                .suspicion_timeout
                .unwrap_or(defaults::SUSPICION_TIMEOUT),
            rejoin_holdoff: self.rejoin_holdoff.unwrap_or(defaults::REJOIN_HOLDOFF),
            fanout: self.fanout.unwrap_or(defaults::FANOUT),
            eligible: self.eligible.unwrap_or(defaults::ELIGIBLE),
            quorum: self.quorum.unwrap_or(defaults::QUORUM),
            lease: self.lease.unwrap_or(defaults::LEASE),
            watch_interval: self.watch_interval.unwrap_or(defaults::WATCH_INTERVAL),
            cluster: self.cluster.filter(|c| !c.is_empty()),
            max_connections: self.max_connections.unwrap_or(defaults::MAX_CONNECTIONS),
            admin_bind: self.admin_addr,
            backend,
            relinquish_every: self.relinquish_every,
            relinquish_cron: self.relinquish_cron,
        };
        config.validate()?;
        let hooks = HookConfig {
            on_leader: self.on_leader,
            on_follower: self.on_follower,
            on_change: self.on_change,
            hook_timeout: self.hook_timeout.unwrap_or(defaults::HOOK_TIMEOUT),
            step_down_cooldown: self
                .step_down_cooldown
                .unwrap_or(defaults::STEP_DOWN_COOLDOWN),
            health_check: self.health_check,
            health_interval: self.health_interval.unwrap_or(defaults::HEALTH_INTERVAL),
        };
        hooks.validate()?;
        let keys = KeyConfig {
            key_file: self.key_file,
            accept_unsigned: self.accept_unsigned.unwrap_or(false),
        };
        if keys.accept_unsigned && keys.key_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "accept_unsigned",
                why: "needs key_file (it is the switch for rolling a key out)".into(),
            });
        }
        Ok(Resolved {
            config,
            hooks,
            keys,
            log_format: self.log_format.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests;

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
//! Every key is documented with its default in `les.toml.example`, which a test parses.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum as _;
use serde::{Deserialize, Serialize};

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
        }
    }

    /// Check the settings before anything starts; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_addr(&self.advertise_addr).map_err(|why| ConfigError::Address {
            key: "advertise_addr",
            value: self.advertise_addr.clone(),
            why,
        })?;
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
        if self.interval < Duration::from_millis(10) {
            return Err(ConfigError::Invalid {
                key: "interval",
                why: "must be at least 10ms".into(),
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
            ..CoreConfig::default()
        }
    }
}

/// A configuration that cannot be used. Nothing has started when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("`{key}`: {value:?} is not a valid host:port address: {why}")]
    Address {
        key: &'static str,
        value: String,
        why: AddrError,
    },
    #[error("`{key}` {why}")]
    Invalid { key: &'static str, why: String },
    #[error(
        "`{key}` is required (flag --{flag}, environment {env}, or `{key}` in the config file)"
    )]
    Missing {
        key: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The TOML configuration file. Every key is optional; unknown keys are an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind_interface: Option<IpAddr>,
    pub bind_port: Option<u16>,
    pub advertise_addr: Option<String>,
    pub seeds: Option<Vec<String>>,
    pub name: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Python-compatible alias of `interval`, in whole seconds.
    pub loop_rate: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub suspicion_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub rejoin_holdoff: Option<Duration>,
    pub fanout: Option<usize>,
    pub eligible: Option<bool>,
    pub log_format: Option<LogFormat>,
    pub on_leader: Option<String>,
    pub on_follower: Option<String>,
    pub on_change: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub hook_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub step_down_cooldown: Option<Duration>,
    pub health_check: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub health_interval: Option<Duration>,
}

impl FileConfig {
    /// Read and parse a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parse TOML text; the error message names the key and line.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 250ms, 1s, 1m30s)"))
}

fn parse_seed(s: &str) -> Result<String, String> {
    let s = s.trim();
    check_addr(s).map_err(|why| format!("{s:?} is not a host:port address: {why}"))?;
    Ok(s.to_string())
}

/// Flags (and `LES_*` environment variables) for running a node.
///
/// Every field is optional so that a value from the config file can fill it; defaults
/// are applied last by [`RunArgs::resolve`]. The `[default: …]` in each flag's help is
/// generated from [`defaults`] ([`help_default`]), never typed here.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(mut_args(document_default))]
pub struct RunArgs {
    /// TOML config file (every key documented in les.toml.example).
    #[arg(long, env = "LES_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface address the HTTP API binds to.
    #[arg(long, env = "LES_BIND_INTERFACE", value_name = "IP")]
    pub bind_interface: Option<IpAddr>,
    /// Port the HTTP API listens on.
    #[arg(long, env = "LES_BIND_PORT", value_name = "PORT")]
    pub bind_port: Option<u16>,
    /// host:port other nodes use to reach this node; also its identity (required).
    #[arg(long, env = "LES_ADVERTISE_ADDR", value_name = "HOST:PORT")]
    pub advertise_addr: Option<String>,
    /// Comma-separated host:port list of nodes to contact at start (required).
    #[arg(long, env = "LES_SEEDS", value_name = "LIST", value_delimiter = ',', value_parser = parse_seed)]
    pub seeds: Option<Vec<String>>,
    /// Gossip round period in whole seconds (the Python LES flag; prefer --interval).
    #[arg(
        long,
        env = "LES_LOOP_RATE",
        value_name = "SECONDS",
        conflicts_with = "interval"
    )]
    pub loop_rate: Option<u64>,
    /// Gossip round period, e.g. 250ms or 2s.
    #[arg(long, env = "LES_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Deadline for one request to a peer.
    #[arg(long, env = "LES_REQUEST_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,
    /// How long a member that timed out stays suspect before removal.
    #[arg(long, env = "LES_SUSPICION_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub suspicion_timeout: Option<Duration>,
    /// How long a removed member may not return with its old start time.
    #[arg(long, env = "LES_REJOIN_HOLDOFF", value_name = "DURATION", value_parser = parse_duration)]
    pub rejoin_holdoff: Option<Duration>,
    /// Members contacted per round in large clusters; 0 = all.
    #[arg(long, env = "LES_FANOUT", value_name = "N")]
    pub fanout: Option<usize>,
    /// Whether this node may lead; false makes a witness that only votes.
    #[arg(long, env = "LES_ELIGIBLE", value_name = "BOOL")]
    pub eligible: Option<bool>,
    /// Node name shown in /diag/ and `les status`.
    #[arg(long, env = "LES_NAME")]
    pub name: Option<String>,
    /// Log format; verbosity comes from RUST_LOG (default: info).
    #[arg(long, env = "LES_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Shell command run when this node becomes leader; a non-zero exit makes it step
    /// down. Gets LES_ROLE, LES_LEADER, LES_PREVIOUS_LEADER, LES_SELF, LES_TERM.
    #[arg(long, env = "LES_ON_LEADER", value_name = "COMMAND")]
    pub on_leader: Option<String>,
    /// Shell command run when this node stops leading, once at start-up, and by a guard
    /// process if les dies without leaving (release what on_leader took).
    #[arg(long, env = "LES_ON_FOLLOWER", value_name = "COMMAND")]
    pub on_follower: Option<String>,
    /// Shell command run on every change of leader, and once at start-up.
    #[arg(long, env = "LES_ON_CHANGE", value_name = "COMMAND")]
    pub on_change: Option<String>,
    /// Longest the hook commands of one change, or a health check, may run before they
    /// are killed and count as failed.
    #[arg(long, env = "LES_HOOK_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub hook_timeout: Option<Duration>,
    /// How long a node whose on_leader failed stays ineligible.
    #[arg(long, env = "LES_STEP_DOWN_COOLDOWN", value_name = "DURATION", value_parser = parse_duration)]
    pub step_down_cooldown: Option<Duration>,
    /// Shell command run every --health-interval; while it exits non-zero the node is
    /// not eligible, and a leader steps down.
    #[arg(long, env = "LES_HEALTH_CHECK", value_name = "COMMAND")]
    pub health_check: Option<String>,
    /// Period of the health check.
    #[arg(long, env = "LES_HEALTH_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub health_interval: Option<Duration>,
}

/// The default `--help` shows for the flag with clap id `id` (the field name), from
/// [`defaults`]; `None` for a flag without one.
fn help_default(id: &str) -> Option<String> {
    let d = |d: Duration| humantime::format_duration(d).to_string();
    Some(match id {
        "bind_interface" => defaults::BIND_INTERFACE.to_string(),
        "bind_port" => defaults::BIND_PORT.to_string(),
        "interval" => d(defaults::INTERVAL),
        "request_timeout" => d(defaults::REQUEST_TIMEOUT),
        "suspicion_timeout" => d(defaults::SUSPICION_TIMEOUT),
        "rejoin_holdoff" => d(defaults::REJOIN_HOLDOFF),
        "fanout" => defaults::FANOUT.to_string(),
        "eligible" => defaults::ELIGIBLE.to_string(),
        "log_format" => LogFormat::default()
            .to_possible_value()?
            .get_name()
            .to_string(),
        "hook_timeout" => d(defaults::HOOK_TIMEOUT),
        "step_down_cooldown" => d(defaults::STEP_DOWN_COOLDOWN),
        "health_interval" => d(defaults::HEALTH_INTERVAL),
        _ => return None,
    })
}

/// Append `[default: …]` to a flag's help. clap's own `default_value` would fill the
/// field, so a value from the config file could no longer win over the default.
fn document_default(arg: clap::Arg) -> clap::Arg {
    let Some(default) = help_default(arg.get_id().as_str()) else {
        return arg;
    };
    let help = arg.get_help().map(|h| format!("{h} [default: {default}]"));
    let long = arg
        .get_long_help()
        .map(|h| format!("{h} [default: {default}]"));
    let arg = match help {
        Some(h) => arg.help(h),
        None => arg,
    };
    match long {
        Some(h) => arg.long_help(h),
        None => arg,
    }
}

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
        }
        Ok(())
    }
}

/// Everything `les` needs to run a node: the node config and process-level settings.
/// [`crate::daemon::node_builder`] turns it into a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub config: Config,
    pub hooks: HookConfig,
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
        let advertise_addr =
            self.advertise_addr
                .clone()
                .or(file.advertise_addr)
                .ok_or(ConfigError::Missing {
                    key: "advertise_addr",
                    flag: "advertise-addr",
                    env: "LES_ADVERTISE_ADDR",
                })?;
        let seeds = self
            .seeds
            .clone()
            .or(file.seeds)
            .ok_or(ConfigError::Missing {
                key: "seeds",
                flag: "seeds",
                env: "LES_SEEDS",
            })?;
        let mut config = Config::new(advertise_addr, seeds);
        let interface = self
            .bind_interface
            .or(file.bind_interface)
            .unwrap_or(defaults::BIND_INTERFACE);
        let port = self
            .bind_port
            .or(file.bind_port)
            .unwrap_or(defaults::BIND_PORT);
        config.bind = SocketAddr::new(interface, port);
        config.name = self.name.clone().or(file.name);
        // A flag or env for one spelling of the interval beats the file's other spelling.
        let cli_interval = self.interval.or(self.loop_rate.map(Duration::from_secs));
        let file_interval = file.interval.or(file.loop_rate.map(Duration::from_secs));
        if file.interval.is_some() && file.loop_rate.is_some() {
            return Err(ConfigError::Invalid {
                key: "loop_rate",
                why: "and `interval` are the same setting; give only one".into(),
            });
        }
        config.interval = cli_interval.or(file_interval).unwrap_or(defaults::INTERVAL);
        config.request_timeout = self
            .request_timeout
            .or(file.request_timeout)
            .unwrap_or(defaults::REQUEST_TIMEOUT);
        config.suspicion_timeout = self
            .suspicion_timeout
            .or(file.suspicion_timeout)
            .unwrap_or(defaults::SUSPICION_TIMEOUT);
        config.rejoin_holdoff = self
            .rejoin_holdoff
            .or(file.rejoin_holdoff)
            .unwrap_or(defaults::REJOIN_HOLDOFF);
        config.fanout = self.fanout.or(file.fanout).unwrap_or(defaults::FANOUT);
        config.eligible = self
            .eligible
            .or(file.eligible)
            .unwrap_or(defaults::ELIGIBLE);
        config.validate()?;
        let hooks = HookConfig {
            on_leader: self.on_leader.clone().or(file.on_leader),
            on_follower: self.on_follower.clone().or(file.on_follower),
            on_change: self.on_change.clone().or(file.on_change),
            hook_timeout: self
                .hook_timeout
                .or(file.hook_timeout)
                .unwrap_or(defaults::HOOK_TIMEOUT),
            step_down_cooldown: self
                .step_down_cooldown
                .or(file.step_down_cooldown)
                .unwrap_or(defaults::STEP_DOWN_COOLDOWN),
            health_check: self.health_check.clone().or(file.health_check),
            health_interval: self
                .health_interval
                .or(file.health_interval)
                .unwrap_or(defaults::HEALTH_INTERVAL),
        };
        hooks.validate()?;
        Ok(Resolved {
            config,
            hooks,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs {
            advertise_addr: Some("localhost:4000".into()),
            seeds: Some(vec!["localhost:4000".into()]),
            ..RunArgs::default()
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let r = args().resolve_with(FileConfig::default()).unwrap();
        assert_eq!(r.config.bind, "0.0.0.0:4000".parse().unwrap());
        assert_eq!(r.config.interval, defaults::INTERVAL);
        assert_eq!(r.log_format, LogFormat::Text);
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file = FileConfig::parse("bind_port = 4100\ninterval = \"2s\"\nfanout = 3\n").unwrap();
        let mut a = args();
        a.bind_port = Some(4200);
        let r = a.resolve_with(file).unwrap();
        assert_eq!(r.config.bind.port(), 4200);
        assert_eq!(r.config.interval, Duration::from_secs(2));
        assert_eq!(r.config.fanout, 3);
    }

    #[test]
    fn loop_rate_is_the_python_spelling_of_interval() {
        let mut a = args();
        a.loop_rate = Some(5);
        assert_eq!(
            a.resolve_with(FileConfig::default())
                .unwrap()
                .config
                .interval,
            Duration::from_secs(5)
        );
        let both = FileConfig::parse("loop_rate = 1\ninterval = \"1s\"").unwrap();
        let err = args().resolve_with(both).unwrap_err().to_string();
        assert!(err.contains("loop_rate"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it() {
        let err = FileConfig::parse("bind_prot = 1").unwrap_err();
        assert!(err.contains("bind_prot"), "{err}");
    }

    #[test]
    fn a_bad_duration_in_the_file_names_the_key() {
        let err = FileConfig::parse("interval = \"fast\"").unwrap_err();
        assert!(err.contains("interval"), "{err}");
    }

    #[test]
    fn missing_and_invalid_values_name_the_key() {
        let err = RunArgs::default()
            .resolve_with(FileConfig::default())
            .unwrap_err();
        assert!(err.to_string().contains("advertise_addr"), "{err}");
        let mut a = args();
        a.seeds = Some(vec!["nope".into()]);
        let err = a
            .resolve_with(FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("seeds") && err.contains("nope"), "{err}");
        let mut a = args();
        a.interval = Some(Duration::ZERO);
        let err = a
            .resolve_with(FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("interval"), "{err}");
    }

    #[test]
    fn hook_settings_merge_like_the_others_and_bad_ones_name_the_key() {
        let file = FileConfig::parse(
            "on_leader = \"file-leader\"\non_follower = \"file-follower\"\nhook_timeout = \"3s\"\nhealth_interval = \"7s\"\n",
        )
        .unwrap();
        let mut a = args();
        a.on_leader = Some("flag-leader".into());
        a.step_down_cooldown = Some(Duration::from_secs(90));
        let h = a.resolve_with(file).unwrap().hooks;
        assert_eq!(h.on_leader.as_deref(), Some("flag-leader"));
        assert_eq!(h.on_follower.as_deref(), Some("file-follower"));
        assert_eq!(h.on_change, None);
        assert_eq!(h.hook_timeout, Duration::from_secs(3));
        assert_eq!(h.step_down_cooldown, Duration::from_secs(90));
        assert_eq!(h.health_check, None);
        assert_eq!(h.health_interval, Duration::from_secs(7));
        let d = args().resolve_with(FileConfig::default()).unwrap().hooks;
        assert_eq!(d, HookConfig::default());

        let mut a = args();
        a.on_change = Some("  ".into());
        let err = a
            .resolve_with(FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("on_change"), "{err}");
        let err = args()
            .resolve_with(FileConfig::parse("health_interval = \"0s\"").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("health_interval"), "{err}");
        let err = FileConfig::parse("on_leader = 1").unwrap_err();
        assert!(err.contains("on_leader"), "{err}");
    }

    #[test]
    fn the_help_shows_each_default_once_from_the_constants() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let cmd = <Cli as clap::CommandFactory>::command();
        let mut documented = 0;
        for arg in cmd.get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            match help_default(arg.get_id().as_str()) {
                Some(d) => {
                    assert!(help.ends_with(&format!(" [default: {d}]")), "{help}");
                    assert_eq!(help.matches("[default:").count(), 1, "{help}");
                    documented += 1;
                }
                None => assert!(!help.contains("[default:"), "typed by hand: {help}"),
            }
        }
        assert_eq!(documented, 12);
        assert_eq!(help_default("interval").as_deref(), Some("1s"));
    }

    #[test]
    fn the_example_file_parses_and_sets_every_key() {
        let text = include_str!("../les.toml.example");
        let file = FileConfig::parse(text).unwrap();
        let json = serde_json::to_value(&file).unwrap();
        let obj = json.as_object().unwrap();
        // `loop_rate` is the Python alias of `interval`; the example documents it in a
        // comment, since giving both is an error.
        let unset: Vec<&String> = obj
            .iter()
            .filter(|(k, v)| v.is_null() && *k != "loop_rate")
            .map(|(k, _)| k)
            .collect();
        assert!(unset.is_empty(), "les.toml.example does not set {unset:?}");
        assert!(
            text.contains("# loop_rate"),
            "les.toml.example must mention loop_rate"
        );
        args().resolve_with(file).unwrap();
    }
}

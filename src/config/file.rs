//! The TOML configuration file (`--config`): every key optional, unknown keys an error,
//! so a typo is reported instead of silently ignored. Merged over the defaults and
//! under the flags by [`super::RunArgs::resolve`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, LogFormat};

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
    pub quorum: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub lease: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub watch_interval: Option<Duration>,
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
    pub cluster: Option<String>,
    pub key_file: Option<PathBuf>,
    pub accept_unsigned: Option<bool>,
    pub max_connections: Option<usize>,
    /// `gossip` or a `postgres://` URL.
    pub backend: Option<String>,
    pub admin_addr: Option<SocketAddr>,
    #[serde(default, with = "humantime_serde")]
    pub relinquish_every: Option<Duration>,
    pub relinquish_cron: Option<String>,
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

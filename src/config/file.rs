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
    /// `bind_interface`: interface address the HTTP API binds to (with `bind_port`, [`super::Config::bind`]).
    pub bind_interface: Option<IpAddr>,
    /// `bind_port`: port the HTTP API listens on (with `bind_interface`, [`super::Config::bind`]).
    pub bind_port: Option<u16>,
    /// `advertise_addr`: `host:port` other nodes use to reach this node, its identity (see [`super::Config::advertise_addr`]).
    pub advertise_addr: Option<String>,
    /// `seeds`: nodes contacted at start (see [`super::Config::seeds`]).
    pub seeds: Option<Vec<String>>,
    /// `name`: human-friendly name (see [`super::Config::name`]).
    pub name: Option<String>,
    /// `interval`: gossip round period (see [`super::Config::interval`]).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Python-compatible alias of `interval`, in whole seconds.
    pub loop_rate: Option<u64>,
    /// `request_timeout`: deadline for one request to a peer (see [`super::Config::request_timeout`]).
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// `suspicion_timeout`: how long a suspect member has before removal (see [`super::Config::suspicion_timeout`]).
    #[serde(default, with = "humantime_serde")]
    pub suspicion_timeout: Option<Duration>,
    /// `rejoin_holdoff`: how long a removed member may not return with its old start time (see [`super::Config::rejoin_holdoff`]).
    #[serde(default, with = "humantime_serde")]
    pub rejoin_holdoff: Option<Duration>,
    /// `fanout`: members contacted per round, 0 for all (see [`super::Config::fanout`]).
    pub fanout: Option<usize>,
    /// `eligible`: whether this node may lead (see [`super::Config::eligible`]).
    pub eligible: Option<bool>,
    /// `quorum`: confirmations a leader needs before it acts, 0 for off (see [`super::Config::quorum`]).
    pub quorum: Option<usize>,
    /// `lease`: how long a quorum's (or the database's) confirmation lasts (see [`super::Config::lease`]).
    #[serde(default, with = "humantime_serde")]
    pub lease: Option<Duration>,
    /// `watch_interval`: leader watch period, `0s` for off (see [`super::Config::watch_interval`]).
    #[serde(default, with = "humantime_serde")]
    pub watch_interval: Option<Duration>,
    /// `log_format`: `text` or `json` (see [`super::Resolved::log_format`]).
    pub log_format: Option<LogFormat>,
    /// `on_leader`: command run on becoming leader (see [`super::HookConfig::on_leader`]).
    pub on_leader: Option<String>,
    /// `on_follower`: command run on stopping leading and at start-up (see [`super::HookConfig::on_follower`]).
    pub on_follower: Option<String>,
    /// `on_change`: command run on every leader change (see [`super::HookConfig::on_change`]).
    pub on_change: Option<String>,
    /// `hook_timeout`: longest the hooks of one change may run (see [`super::HookConfig::hook_timeout`]).
    #[serde(default, with = "humantime_serde")]
    pub hook_timeout: Option<Duration>,
    /// `step_down_cooldown`: ineligibility after a failed `on_leader` (see [`super::HookConfig::step_down_cooldown`]).
    #[serde(default, with = "humantime_serde")]
    pub step_down_cooldown: Option<Duration>,
    /// `health_check`: command whose non-zero exit makes the node ineligible (see [`super::HookConfig::health_check`]).
    pub health_check: Option<String>,
    /// `health_interval`: period of the health check (see [`super::HookConfig::health_interval`]).
    #[serde(default, with = "humantime_serde")]
    pub health_interval: Option<Duration>,
    /// `cluster`: cluster name, empty for none (see [`super::Config::cluster`]).
    pub cluster: Option<String>,
    /// `key_file`: keyring file for signed requests (see [`super::KeyConfig::key_file`]).
    pub key_file: Option<PathBuf>,
    /// `accept_unsigned`: with a key file, also accept unsigned requests (see [`super::KeyConfig::accept_unsigned`]).
    pub accept_unsigned: Option<bool>,
    /// `max_connections`: most connections the HTTP API keeps open (see [`super::Config::max_connections`]).
    pub max_connections: Option<usize>,
    /// `gossip` or a `postgres://` URL.
    pub backend: Option<String>,
    /// `admin_addr`: extra address for `/ping`, `/diag` and `/metrics` (see [`super::Config::admin_bind`]).
    pub admin_addr: Option<SocketAddr>,
    /// `relinquish_every`: a leader steps down after leading this long (see [`super::Config::relinquish_every`]).
    #[serde(default, with = "humantime_serde")]
    pub relinquish_every: Option<Duration>,
    /// `relinquish_cron`: cron times (UTC) at which the leader steps down (see [`super::Config::relinquish_cron`]).
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
        toml::from_str(text).map_err(|e: toml::de::Error| explain(text, &e))
    }
}

/// A TOML error in words: the line, the key on it, and what was expected in the
/// terms of the example file, not Rust's type names.
fn explain(text: &str, e: &toml::de::Error) -> String {
    let message = plain_words(e.message());
    let Some(span) = e.span() else {
        return message;
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    match line.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() && !key.contains('[') => {
            format!("line {line_no}, key `{}`: {message}", key.trim())
        }
        _ => format!("line {line_no} ({line}): {message}"),
    }
}

/// serde's phrases for the types the keys have, as an operator would say them.
fn plain_words(message: &str) -> String {
    const WORDS: [(&str, &str); 8] = [
        (
            "expected u16",
            "expected a port number (0 to 65535), without quotes",
        ),
        ("expected usize", "expected a whole number, without quotes"),
        ("expected u64", "expected a whole number, without quotes"),
        (
            "expected a sequence",
            "expected a list, e.g. [\"10.0.0.1:4000\", \"10.0.0.2:4000\"]",
        ),
        (
            "expected a boolean",
            "expected true or false, without quotes",
        ),
        ("expected a string", "expected a text in quotes"),
        (
            "expected IP address",
            "expected an IP address in quotes, e.g. \"10.0.0.1\"",
        ),
        (
            "expected socket address",
            "expected an IP:port in quotes, e.g. \"127.0.0.1:4100\"",
        ),
    ];
    let mut out = message.trim().replace('\n', "; ");
    if let Some(i) = out.find(", expected one of") {
        out.truncate(i);
        out.push_str(" (les.toml.example lists every key)");
    }
    for (from, to) in WORDS {
        out = out.replace(from, to);
    }
    out.replace(
        "expected a duration",
        "expected a duration in quotes, e.g. \"500ms\" or \"2s\"",
    )
    .replace("invalid type: ", "")
    .replace("invalid value: ", "")
    .replace("unknown field", "unknown key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_is_explained_with_its_line_key_and_what_was_expected() {
        let err = FileConfig::parse("name = \"a\"\nbind_port = \"x\"\n").unwrap_err();
        assert_eq!(
            err,
            "line 2, key `bind_port`: string \"x\", expected a port number (0 to 65535), without quotes"
        );
        let err = FileConfig::parse("seeds = \"a:1\"\n").unwrap_err();
        assert!(err.starts_with("line 1, key `seeds`: "), "{err}");
        assert!(err.contains("expected a list"), "{err}");
        let err = FileConfig::parse("eligible = \"yes\"\n").unwrap_err();
        assert!(err.contains("expected true or false"), "{err}");
        let err = FileConfig::parse("bind_prt = 4000\n").unwrap_err();
        assert_eq!(
            err,
            "line 1, key `bind_prt`: unknown key `bind_prt` (les.toml.example lists every key)"
        );
        let err = FileConfig::parse("interval = \"fast\"\n").unwrap_err();
        assert!(err.contains("expected a duration in quotes"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

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

//! The flags (and `LES_*` environment variables) of `les run`, and the `[default: …]`
//! each flag's help shows, generated from [`defaults`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum as _;

use super::{defaults, LogFormat};
use crate::wire::check_addr;

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
/// generated from [`defaults`] (`help_default`), never typed here.
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
    /// Quorum mode: act as leader only while at least N nodes (this one and witnesses
    /// included) confirm it; a node that cannot reach N follows nobody. Use a majority
    /// of the fleet: 2 of 3, 3 of 5. 0 = off
    #[arg(long, env = "LES_QUORUM", value_name = "N")]
    pub quorum: Option<usize>,
    /// Quorum mode: how long a quorum's confirmation lets the leader act; the new leader
    /// waits it out after a failure
    #[arg(long, env = "LES_LEASE", value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// How often a follower pings its leader, so a vanished leader host is replaced in
    /// about a second; 0 = off (leader failures are then found by the rounds alone)
    #[arg(long, env = "LES_WATCH_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub watch_interval: Option<Duration>,
    /// What decides leadership: "gossip", or a postgres://user@host/db URL (TLS with
    /// ?sslmode=require, verified against the system roots or ?sslrootcert=FILE).
    /// Gossip-only settings (seeds, quorum, fanout…) are then ignored
    #[arg(long, env = "LES_BACKEND", value_name = "gossip|URL")]
    pub backend: Option<String>,
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
    /// Cluster name: nodes only merge with nodes of the same name (and, with a key,
    /// it is part of every signature). Unset = none, as Python nodes.
    #[arg(long, env = "LES_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,
    /// Keyring file: one base64 32-byte key per line (`les keygen` makes one); the first
    /// signs, all verify. With it, every request and answer between nodes is
    /// authenticated. Re-read on SIGHUP (so are key_file and accept_unsigned in the
    /// config file), for key rotation without a restart.
    #[arg(long, env = "LES_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// With a key file: also accept unsigned requests and answers (a wrong signature is
    /// still refused). Only while rolling a key out to an unkeyed cluster; see README.
    #[arg(long, env = "LES_ACCEPT_UNSIGNED", value_name = "BOOL")]
    pub accept_unsigned: Option<bool>,
    /// Most connections the HTTP API keeps open; past it the oldest that has sent no
    /// request is closed.
    #[arg(long, env = "LES_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Serve /ping, /diag and /metrics on this address too, and /diag and /metrics
    /// only there (firewall it apart from the gossip port).
    #[arg(long, env = "LES_ADMIN_ADDR", value_name = "IP:PORT")]
    pub admin_addr: Option<SocketAddr>,
    /// Rotate leadership on purpose: a leader that has led this long steps down (the
    /// next most senior node takes over, this one rejoins as junior). At least three
    /// rounds (3 × --interval). Off unless set
    #[arg(long, env = "LES_RELINQUISH_EVERY", value_name = "DURATION", value_parser = parse_duration)]
    pub relinquish_every: Option<Duration>,
    /// Rotate leadership on a schedule: at each time this cron expression names (five
    /// fields, or six with seconds first, in UTC; e.g. "0 3 * * *" for 03:00 daily), the
    /// leader steps down. Off unless set
    #[arg(long, env = "LES_RELINQUISH_CRON", value_name = "EXPR")]
    pub relinquish_cron: Option<String>,
}

/// The default `--help` shows for the flag with clap id `id` (the field name), from
/// [`defaults`]; `None` for a flag without one.
pub(super) fn help_default(id: &str) -> Option<String> {
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
        "quorum" => defaults::QUORUM.to_string(),
        "lease" => d(defaults::LEASE),
        "watch_interval" => d(defaults::WATCH_INTERVAL),
        "log_format" => LogFormat::default()
            .to_possible_value()?
            .get_name()
            .to_string(),
        "hook_timeout" => d(defaults::HOOK_TIMEOUT),
        "step_down_cooldown" => d(defaults::STEP_DOWN_COOLDOWN),
        "health_interval" => d(defaults::HEALTH_INTERVAL),
        "max_connections" => defaults::MAX_CONNECTIONS.to_string(),
        "accept_unsigned" => "false".to_string(),
        "backend" => "gossip".to_string(),
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

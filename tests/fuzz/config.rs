//! Target `config`: the TOML file (`FileConfig::parse`), flags (`RunArgs` through clap)
//! and their merge and validation (`RunArgs::resolve_with`).
//!
//! A configuration mistake should stop the node before it starts with a message that
//! names the setting, never panic and never start a node with values the runtime
//! cannot use. So: arbitrary text, near-valid TOML built from the real keys (right
//! names, wrong types, zero and overflowing durations, out-of-range ports, odd
//! addresses, duplicate and unknown keys) and arbitrary argument vectors must never
//! panic; whatever parses either resolves to a configuration that passes
//! `Config::validate` or fails with a `ConfigError` whose message names a real key;
//! and an accepted file survives a serialize/parse round trip.
//!
//! Environment variables (`LES_*`) go through the same clap value parsers as the
//! flags. Setting them would mutate the environment of a process whose other tests
//! run concurrently, so env lookup is switched off (`Arg::env(None)`) and the same
//! values are fed as flags instead: that covers the parsers (including the comma
//! splitting of `LES_SEEDS`), not clap's env lookup itself.

use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use les::config::{ConfigError, FileConfig, RunArgs};
use proptest::prelude::*;

use crate::state::addr_like;

/// Every key of the TOML file and every `RunArgs` field, as error messages name them.
const KEYS: &[&str] = &[
    "bind_interface",
    "bind_port",
    "advertise_addr",
    "seeds",
    "name",
    "interval",
    "loop_rate",
    "request_timeout",
    "suspicion_timeout",
    "rejoin_holdoff",
    "fanout",
    "eligible",
    "quorum",
    "lease",
    "log_format",
    "on_leader",
    "on_follower",
    "on_change",
    "hook_timeout",
    "step_down_cooldown",
    "health_check",
    "health_interval",
    "cluster",
    "key_file",
    "accept_unsigned",
    "max_connections",
    "admin_addr",
];

/// The kind of value a key takes, to generate near-valid values for it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Ip,
    Port,
    Addr,
    Seeds,
    Text,
    Duration,
    Count,
    Bool,
    LogFormat,
    Command,
    /// Whole seconds (`loop_rate`).
    Seconds,
    SocketAddr,
    Cluster,
    Path,
}

fn kind(key: &str) -> Kind {
    match key {
        "bind_interface" => Kind::Ip,
        "bind_port" => Kind::Port,
        "advertise_addr" => Kind::Addr,
        "seeds" => Kind::Seeds,
        "name" => Kind::Text,
        "loop_rate" => Kind::Seconds,
        "fanout" | "quorum" | "max_connections" => Kind::Count,
        "eligible" | "accept_unsigned" => Kind::Bool,
        "admin_addr" => Kind::SocketAddr,
        "cluster" => Kind::Cluster,
        "key_file" => Kind::Path,
        "log_format" => Kind::LogFormat,
        "on_leader" | "on_follower" | "on_change" | "health_check" => Kind::Command,
        _ => Kind::Duration,
    }
}

/// Duration texts: ordinary, zero, tiny, overflowing and malformed.
fn duration_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (0u64..5000, prop::sample::select(vec!["ms", "s", "m", "ns", "us", "h"]))
            .prop_map(|(n, u)| format!("{n}{u}")),
        2 => prop::sample::select(vec![
            "0s", "1ns", "9ms", "10ms", "1s 1ns", "1m30s", "4611686018427387903s",
            "18446744073709551615s", "86400s", "86401s",
            "18446744073709551616s", "99999999999999999999h", "100000000y", "1y", "1M",
            "-1s", "1", "", " ", "abc", "1.5s", "NaN", "∞", "1 s", "s",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
    .boxed()
}

/// `loop_rate` texts: any integer text (huge ones once overflowed validation, see
/// `huge_durations_are_refused_not_overflowed`).
fn seconds_text() -> BoxedStrategy<String> {
    integer_text()
}

/// `IP:port` texts for `admin_addr`, valid and not.
fn socket_addr_text() -> BoxedStrategy<String> {
    prop::sample::select(vec![
        "127.0.0.1:9000",
        "[::1]:9000",
        "0.0.0.0:0",
        "127.0.0.1",
        "a:1",
        "127.0.0.1:65536",
        "[::1]",
        "",
    ])
    .prop_map(str::to_string)
    .boxed()
}

/// Cluster names: valid ones, too long, and odd characters.
fn cluster_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z0-9._-]{0,70}",
        1 => any::<String>(),
    ]
    .boxed()
}

/// Key file paths. `resolve_with` only records the path (the daemon reads it), so
/// these never touch the disk here.
fn path_text() -> BoxedStrategy<String> {
    prop::sample::select(vec!["/nonexistent/les.keys", "", "keys", "/", "\u{0}"])
        .prop_map(str::to_string)
        .boxed()
}

/// Integer texts around every boundary of u16, u64 and usize.
fn integer_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (0u64..10).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec![
            "0", "1", "2", "65535", "65536", "-1", "18446744073709551615",
            "18446744073709551616", "1e3", "0x10", "1_000", "+1",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

fn toml_string(s: &str) -> String {
    // A JSON string literal is a valid TOML basic string.
    serde_json::Value::String(s.to_string()).to_string()
}

/// A TOML value for `key`: usually of the right type, sometimes not.
fn toml_value(key: &'static str) -> BoxedStrategy<String> {
    let right: BoxedStrategy<String> = match kind(key) {
        Kind::Ip => prop::sample::select(vec![
            "127.0.0.1",
            "0.0.0.0",
            "::",
            "::1",
            "999.1.1.1",
            "localhost",
            "",
        ])
        .prop_map(toml_string)
        .boxed(),
        Kind::Port | Kind::Count => integer_text(),
        Kind::Seconds => seconds_text(),
        Kind::Addr => addr_like().prop_map(|a| toml_string(&a)).boxed(),
        Kind::Seeds => prop::collection::vec(addr_like(), 0..4)
            .prop_map(|v| {
                let items: Vec<String> = v.iter().map(|a| toml_string(a)).collect();
                format!("[{}]", items.join(", "))
            })
            .boxed(),
        Kind::Text => any::<String>().prop_map(|s| toml_string(&s)).boxed(),
        Kind::Duration => duration_text().prop_map(|s| toml_string(&s)).boxed(),
        Kind::Bool => prop::sample::select(vec!["true", "false"])
            .prop_map(str::to_string)
            .boxed(),
        Kind::LogFormat => prop::sample::select(vec!["text", "json", "JSON", ""])
            .prop_map(toml_string)
            .boxed(),
        Kind::Command => prop::sample::select(vec!["true", "", "  ", "echo \"$LES_ROLE\""])
            .prop_map(toml_string)
            .boxed(),
        Kind::SocketAddr => socket_addr_text().prop_map(|a| toml_string(&a)).boxed(),
        Kind::Cluster => cluster_text().prop_map(|c| toml_string(&c)).boxed(),
        Kind::Path => path_text().prop_map(|p| toml_string(&p)).boxed(),
    };
    let wrong = prop::sample::select(vec![
        "1",
        "-1",
        "1.5",
        "nan",
        "inf",
        "true",
        "\"x\"",
        "[]",
        "[1, \"a\"]",
        "{}",
        "1979-05-27T07:32:00Z",
        "'single'",
        "\"\"\"multi\nline\"\"\"",
    ])
    .prop_map(str::to_string);
    prop_oneof![6 => right, 1 => wrong].boxed()
}

/// One line of a near-valid config file.
fn toml_line() -> BoxedStrategy<String> {
    prop_oneof![
        12 => prop::sample::select(KEYS)
            .prop_flat_map(|k| toml_value(k).prop_map(move |v| format!("{k} = {v}"))),
        1 => ("[a-z_]{1,12}", toml_value("name")).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(vec![
            "[section]", "# comment", "", "seeds =", "= 1", "interval = \"1s\" # trailing",
            "\"interval\" = \"1s\"", "[[seeds]]",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

/// A near-valid config file, usually with the two required keys.
fn near_valid_toml() -> impl Strategy<Value = String> {
    (
        prop::option::weighted(0.9, toml_value("advertise_addr")),
        prop::option::weighted(0.9, toml_value("seeds")),
        prop::collection::vec(toml_line(), 0..8),
    )
        .prop_map(|(addr, seeds, lines)| {
            let mut out: Vec<String> = Vec::new();
            if let Some(a) = addr {
                out.push(format!("advertise_addr = {a}"));
            }
            if let Some(s) = seeds {
                out.push(format!("seeds = {s}"));
            }
            out.extend(lines);
            out.join("\n")
        })
}

/// `message` names one of the real keys, in backticks as `ConfigError` writes them.
fn names_a_key(message: &str) -> bool {
    KEYS.iter().any(|k| message.contains(&format!("`{k}`")))
}

/// Resolve `args` over `file` and check the outcome: a valid configuration, or an
/// error naming a key.
fn check_resolution(args: &RunArgs, file: FileConfig) {
    match args.resolve_with(file) {
        Ok(r) => {
            if let Err(e) = r.config.validate() {
                panic!("resolved configuration does not validate: {e}");
            }
            let hooks = &r.hooks;
            for d in [
                hooks.hook_timeout,
                hooks.step_down_cooldown,
                hooks.health_interval,
            ] {
                assert!(d >= Duration::from_millis(10), "{hooks:?}");
            }
            for c in [
                &hooks.on_leader,
                &hooks.on_follower,
                &hooks.on_change,
                &hooks.health_check,
            ]
            .into_iter()
            .flatten()
            {
                assert!(!c.trim().is_empty(), "{hooks:?}");
            }
            assert!(!r.config.seeds.is_empty());
            assert!(
                !r.keys.accept_unsigned || r.keys.key_file.is_some(),
                "{:?}",
                r.keys
            );
            if let Some(c) = &r.config.cluster {
                assert_eq!(les::auth::check_cluster_name(c), Ok(()), "cluster {c:?}");
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                matches!(
                    e,
                    ConfigError::Address { .. }
                        | ConfigError::Invalid { .. }
                        | ConfigError::Missing { .. }
                        | ConfigError::MissingSeveral(_)
                ),
                "unexpected kind of error: {e:?}"
            );
            assert!(names_a_key(&message), "error names no key: {message}");
        }
    }
}

/// The properties of any text given as a config file.
fn check_file(text: &str) {
    let file = match FileConfig::parse(text) {
        Ok(file) => file,
        Err(message) => {
            assert!(!message.is_empty());
            assert!(
                !message.contains('\n'),
                "parse errors are one line: {message:?}"
            );
            return;
        }
    };
    let again = toml::to_string(&file).expect("an accepted file serializes");
    let back = FileConfig::parse(&again)
        .unwrap_or_else(|e| panic!("re-serialized file does not parse: {e}\n{again}"));
    assert_eq!(back, file, "round trip changed the file:\n{again}");
    check_resolution(&RunArgs::default(), file);
}

/// `les run`'s flags, as the binary parses them.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

/// Parse `argv` with clap, env lookup switched off (see the module docs).
fn parse_args(argv: &[String]) -> Result<RunArgs, clap::Error> {
    let command = Cli::command().mut_args(|a| a.env(None));
    let matches = command.try_get_matches_from(argv)?;
    Cli::from_arg_matches(&matches).map(|c| c.run)
}

/// A flag of `RunArgs` and a value for it, `--flag=value` or `--flag value`.
fn flag_args() -> BoxedStrategy<Vec<String>> {
    let flag = prop::sample::select(KEYS).prop_flat_map(|k| {
        let value: BoxedStrategy<String> = match kind(k) {
            Kind::Duration => duration_text(),
            Kind::Seeds => prop::collection::vec(addr_like(), 0..4)
                .prop_map(|v| v.join(","))
                .boxed(),
            Kind::Addr => addr_like(),
            Kind::Port | Kind::Count => integer_text(),
            Kind::Seconds => seconds_text(),
            Kind::Bool => prop::sample::select(vec!["true", "false", "yes", "1", ""])
                .prop_map(str::to_string)
                .boxed(),
            Kind::SocketAddr => socket_addr_text(),
            Kind::Cluster => cluster_text(),
            Kind::Path => path_text(),
            _ => any::<String>().boxed(),
        };
        (value, any::<bool>()).prop_map(move |(v, joined)| {
            let long = format!("--{}", k.replace('_', "-"));
            if joined {
                vec![format!("{long}={v}")]
            } else {
                vec![long, v]
            }
        })
    });
    prop_oneof![
        10 => flag,
        1 => prop::sample::select(vec![
            "--", "-", "--help", "-h", "--version", "--config", "--nope", "-x", "--=",
            "--seeds=", "--interval=", "run",
        ])
        .prop_map(|s| vec![s.to_string()]),
        1 => any::<String>().prop_map(|s| vec![s]),
    ]
    .boxed()
}

fn argv() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(flag_args(), 0..8).prop_map(|groups| {
        let mut argv = vec!["les".to_string()];
        argv.extend(groups.into_iter().flatten());
        argv
    })
}

/// Found by the fuzzer (fixed): `Config::validate` computed `interval +
/// request_timeout` with `+`, which panicked ("overflow when adding durations") for
/// durations humantime accepts: `--interval 18446744073709551615s`, or `--loop-rate
/// 18446744073709551615` (`flags_over_a_file` and `arbitrary_flags`, shrunk to this).
/// Durations above a day are now refused by name.
#[test]
fn huge_durations_are_refused_not_overflowed() {
    let argv: Vec<String> = [
        "les",
        "--advertise-addr",
        "a:1",
        "--seeds",
        "a:1",
        "--interval",
        "18446744073709551615s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args = parse_args(&argv).expect("the flags parse");
    let outcome = std::panic::catch_unwind(|| args.resolve_with(FileConfig::default()).map(|_| ()));
    match outcome {
        Ok(result) => {
            if let Err(e) = result {
                assert!(names_a_key(&e.to_string()), "{e}");
            }
        }
        Err(_) => panic!("resolving --interval 18446744073709551615s panicked"),
    }
}

/// Found next to the fuzzer's finding above (fixed): `Config::validate` bounded
/// `lease` only from below, and the core stretches it with `Duration::mul_f64` (the
/// promise length), which panics on overflow: `--quorum 2 --lease
/// 18446744073709551615s` validated, then panicked the core.
#[test]
fn a_huge_lease_is_refused_before_it_reaches_the_core() {
    let argv: Vec<String> = [
        "les",
        "--advertise-addr",
        "a:1",
        "--seeds",
        "a:1",
        "--quorum",
        "2",
        "--lease",
        "18446744073709551615s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args = parse_args(&argv).expect("the flags parse");
    let Ok(resolved) = args.resolve_with(FileConfig::default()) else {
        return; // refused with a message: fixed
    };
    let cfg = resolved.config.core_config();
    let built = std::panic::catch_unwind(|| {
        les::core::Core::new(cfg, "a:1", 1.0, &["a:1".to_string()], 1).term()
    });
    assert!(
        built.is_ok(),
        "a configuration that validated panicked the core"
    );
}

proptest! {
    #![proptest_config(crate::config("tests/fuzz/regressions/config.txt"))]

    #[test]
    fn arbitrary_text(text in any::<String>()) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "config::arbitrary_text");
        check_file(&text);
    }

    #[test]
    fn near_valid_files(text in near_valid_toml()) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "config::near_valid_files");
        check_file(&text);
    }

    /// A single `key = wrong value` line: the one-line parse error names the key.
    #[test]
    fn a_bad_value_is_reported_with_its_key(
        key in prop::sample::select(KEYS),
        value in prop::sample::select(vec!["-1", "1.5", "[]", "{}", "\"x y z\"", "nan"]),
    ) {
        let line = format!("{key} = {value}");
        if let Err(message) = FileConfig::parse(&line) {
            prop_assert!(message.contains(key), "{line:?} -> {message}");
        }
    }

    #[test]
    fn arbitrary_flags(argv in argv()) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "config::arbitrary_flags");
        if let Ok(args) = parse_args(&argv) {
            check_resolution(&args, FileConfig::default());
        }
    }

    /// Flags over a file: the merge of two parsed sources.
    #[test]
    fn flags_over_a_file(argv in argv(), text in near_valid_toml()) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "config::flags_over_a_file");
        if let (Ok(args), Ok(file)) = (parse_args(&argv), FileConfig::parse(&text)) {
            check_resolution(&args, file);
        }
    }
}

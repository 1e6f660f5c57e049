//! Tests of the configuration: merging, precedence, validation and the example file.

use super::args::help_default;
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
    assert_eq!(documented, 18);
    assert_eq!(help_default("interval").as_deref(), Some("1s"));
}

#[test]
fn the_example_file_parses_and_sets_every_key() {
    let text = include_str!("../../les.toml.example");
    let file = FileConfig::parse(text).unwrap();
    let json = serde_json::to_value(&file).unwrap();
    let obj = json.as_object().unwrap();
    // `loop_rate` is the Python alias of `interval`, and giving both is an error;
    // `key_file` and `admin_addr` have no default value and switch features on. The
    // example documents them in comments.
    let commented = [
        "loop_rate",
        "key_file",
        "admin_addr",
        "relinquish_every",
        "relinquish_cron",
    ];
    let unset: Vec<&String> = obj
        .iter()
        .filter(|(k, v)| v.is_null() && !commented.contains(&k.as_str()))
        .map(|(k, _)| k)
        .collect();
    assert!(unset.is_empty(), "les.toml.example does not set {unset:?}");
    for key in commented {
        assert!(
            text.contains(&format!("# {key} =")),
            "les.toml.example must mention {key}"
        );
    }
    args().resolve_with(file).unwrap();
}

#[test]
fn the_example_file_shows_the_defaults() {
    let f = FileConfig::parse(include_str!("../../les.toml.example")).unwrap();
    assert_eq!(f.bind_interface, Some(defaults::BIND_INTERFACE));
    assert_eq!(f.bind_port, Some(defaults::BIND_PORT));
    assert_eq!(f.interval, Some(defaults::INTERVAL));
    assert_eq!(f.request_timeout, Some(defaults::REQUEST_TIMEOUT));
    assert_eq!(f.suspicion_timeout, Some(defaults::SUSPICION_TIMEOUT));
    assert_eq!(f.rejoin_holdoff, Some(defaults::REJOIN_HOLDOFF));
    assert_eq!(f.fanout, Some(defaults::FANOUT));
    assert_eq!(f.eligible, Some(defaults::ELIGIBLE));
    assert_eq!(f.quorum, Some(defaults::QUORUM));
    assert_eq!(f.lease, Some(defaults::LEASE));
    assert_eq!(f.log_format, Some(LogFormat::default()));
    assert_eq!(f.hook_timeout, Some(defaults::HOOK_TIMEOUT));
    assert_eq!(f.step_down_cooldown, Some(defaults::STEP_DOWN_COOLDOWN));
    assert_eq!(f.health_interval, Some(defaults::HEALTH_INTERVAL));
    assert_eq!(f.max_connections, Some(defaults::MAX_CONNECTIONS));
    assert_eq!(f.accept_unsigned, Some(false));
}

#[test]
fn trust_settings_are_checked_and_name_the_key() {
    let err = |a: RunArgs| {
        a.resolve_with(FileConfig::default())
            .unwrap_err()
            .to_string()
    };
    let mut a = args();
    a.cluster = Some("prod eu".into());
    assert!(err(a).contains("`cluster`"));
    let mut a = args();
    a.accept_unsigned = Some(true);
    assert!(err(a).contains("`accept_unsigned` needs key_file"));
    let mut a = args();
    a.max_connections = Some(3);
    assert!(err(a).contains("`max_connections`"));
    let file =
        FileConfig::parse("cluster = \"prod\"\nkey_file = \"/k\"\nadmin_addr = \"127.0.0.1:9\"\n")
            .unwrap();
    let r = args().resolve_with(file).unwrap();
    assert_eq!(r.config.cluster.as_deref(), Some("prod"));
    assert_eq!(r.keys.key_file.as_deref(), Some(std::path::Path::new("/k")));
    assert_eq!(r.config.admin_bind, Some("127.0.0.1:9".parse().unwrap()));
    // An empty name is no name, as Python nodes have.
    let r = args()
        .resolve_with(FileConfig::parse("cluster = \"\"\n").unwrap())
        .unwrap();
    assert_eq!(r.config.cluster, None);
}

#[test]
fn quorum_and_lease_merge_like_the_others() {
    let d = args().resolve_with(FileConfig::default()).unwrap().config;
    assert_eq!((d.quorum, d.lease), (defaults::QUORUM, defaults::LEASE));
    let file = FileConfig::parse("quorum = 3\nlease = \"4s\"\n").unwrap();
    let mut a = args();
    a.lease = Some(Duration::from_secs(5));
    let c = a.resolve_with(file).unwrap().config;
    assert_eq!((c.quorum, c.lease), (3, Duration::from_secs(5)));
    let c = c.core_config();
    assert_eq!((c.quorum, c.lease), (3, Duration::from_secs(5)));
}

#[test]
fn a_lease_shorter_than_a_round_and_a_request_is_an_error_in_quorum_mode() {
    let mut a = args();
    a.quorum = Some(2);
    a.lease = Some(Duration::from_millis(1500));
    let err = a
        .resolve_with(FileConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`lease`") && err.contains("2s"), "{err}");
    // Without quorum mode the lease is not used, so it is not checked.
    a.quorum = Some(0);
    a.resolve_with(FileConfig::default()).unwrap();
    a.quorum = Some(2);
    a.lease = Some(Duration::from_secs(2));
    a.resolve_with(FileConfig::default()).unwrap();
}

#[test]
fn durations_beyond_a_day_are_refused_by_name_not_overflowed() {
    // Found by the fuzz target: these used to panic in validation or in the core.
    for (set, key) in [
        (
            (|a: &mut RunArgs| a.interval = Some(Duration::MAX)) as fn(&mut RunArgs),
            "`interval`",
        ),
        (|a| a.loop_rate = Some(u64::MAX), "`interval`"),
        (
            |a| a.request_timeout = Some(Duration::MAX),
            "`request_timeout`",
        ),
        (
            |a| {
                a.quorum = Some(2);
                a.lease = Some(Duration::from_secs(u64::MAX));
            },
            "`lease`",
        ),
        (|a| a.hook_timeout = Some(Duration::MAX), "`hook_timeout`"),
    ] {
        let mut a = args();
        set(&mut a);
        let err = a
            .resolve_with(FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains("at most 1day"), "{err}");
    }
}

#[test]
fn a_database_backend_needs_no_seeds_checks_its_timings_and_names_the_key() {
    let url = "postgres://les@db.example/les";
    let mut a = RunArgs {
        advertise_addr: Some("10.0.0.1:4000".into()),
        backend: Some(url.into()),
        ..RunArgs::default()
    };
    let r = a.clone().resolve_with(FileConfig::default()).unwrap();
    assert!(matches!(r.config.backend, Backend::Postgres(_)));
    assert!(r.config.seeds.is_empty());
    assert!(r.config.gossip_only_settings().is_empty());
    let file = FileConfig::parse(&format!("backend = \"{url}\"\nquorum = 2\n")).unwrap();
    let mut from_file = RunArgs {
        advertise_addr: a.advertise_addr.clone(),
        ..RunArgs::default()
    };
    let r = from_file.clone().resolve_with(file).unwrap();
    assert_eq!(r.config.gossip_only_settings(), ["quorum"]);
    from_file.backend = Some("gossip".into());
    let err = from_file.resolve_with(FileConfig::default()).unwrap_err();
    assert!(err.to_string().contains("seeds"), "{err}");

    a.lease = Some(Duration::from_millis(1500));
    let err = a.clone().resolve_with(FileConfig::default()).unwrap_err();
    assert!(err.to_string().contains("`lease`"), "{err}");
    a.lease = None;
    a.request_timeout = Some(Duration::from_secs(3));
    let err = a.clone().resolve_with(FileConfig::default()).unwrap_err();
    assert!(err.to_string().contains("`request_timeout`"), "{err}");
    a.request_timeout = None;
    a.backend = Some("postgres://les@db/x?sslmode=always".into());
    let err = a.resolve_with(FileConfig::default()).unwrap_err();
    assert!(err.to_string().contains("`backend`"), "{err}");
    assert!(err.to_string().contains("sslmode=always"), "{err}");
}

#[test]
fn relinquish_schedules_are_read_from_every_layer_and_checked_naming_the_key() {
    let file =
        FileConfig::parse("relinquish_every = \"1h\"\nrelinquish_cron = \"0 3 * * *\"\n").unwrap();
    let r = args().resolve_with(file).unwrap();
    assert_eq!(r.config.relinquish_every, Some(Duration::from_secs(3600)));
    assert_eq!(r.config.relinquish_cron.as_deref(), Some("0 3 * * *"));
    assert_eq!(
        args()
            .resolve_with(FileConfig::default())
            .unwrap()
            .config
            .relinquish_every,
        None
    );

    let err = |a: RunArgs| {
        a.resolve_with(FileConfig::default())
            .unwrap_err()
            .to_string()
    };
    let mut a = args();
    a.relinquish_every = Some(Duration::ZERO);
    assert!(err(a).contains("`relinquish_every` must leave at least 3 rounds"));
    let mut a = args();
    a.interval = Some(Duration::from_secs(2));
    a.relinquish_every = Some(Duration::from_secs(5));
    assert!(err(a).contains("`relinquish_every`"), "5s < 3 rounds of 2s");
    let mut a = args();
    a.relinquish_every = Some(Duration::from_secs(3));
    a.resolve_with(FileConfig::default())
        .expect("3 rounds of 1s");

    let mut a = args();
    a.relinquish_cron = Some("61 * * * *".into());
    let e = err(a);
    assert!(e.starts_with("`relinquish_cron` \"61 * * * *\": "), "{e}");
    let mut a = args();
    a.relinquish_cron = Some("* * * * * *".into());
    assert!(
        err(a).contains("`relinquish_cron` must leave at least 3 rounds"),
        "every second"
    );
    let mut a = args();
    a.relinquish_cron = Some(" ".into());
    assert!(err(a).contains("`relinquish_cron`"));
    let mut a = args();
    a.relinquish_cron = Some("*/10 * * * * *".into());
    a.resolve_with(FileConfig::default())
        .expect("every 10 s, with seconds");
}

#[test]
fn a_cron_expression_names_its_next_time_in_utc() {
    let cron = schedule::parse_cron("0 3 * * *").unwrap();
    // 2026-01-01T00:00:00Z is 1767225600.
    assert_eq!(
        schedule::next_after(&cron, 1_767_225_600.0),
        Some(1_767_236_400.0)
    );
    assert_eq!(
        schedule::next_after(&cron, 1_767_236_400.0),
        Some(1_767_322_800.0),
        "strictly after"
    );
    assert_eq!(schedule::next_after(&cron, f64::NAN), None);
}

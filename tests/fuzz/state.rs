//! Target `state`: decoding and validation of the state documents peers send
//! (`PeerState::from_json`, `validate`, `check_addr`).
//!
//! Every byte of a peer's answer is untrusted, and the protocol core assumes what passes
//! here is sane. So: arbitrary bytes and near-valid documents (the real field names with
//! wrong types, boundary and out-of-range numbers, NaN-ish strings, odd and overlong
//! addresses, member lists at and over `MAX_MEMBERS`, duplicate and unknown keys) must
//! never panic; whatever is accepted must pass `validate()` and survive the wire
//! unchanged (a start time that moves by one ULP breaks seniority); and every address
//! accepted must be a `host:port` the client can put in a URL and the server routes
//! back to the same string.

use les::wire::{check_addr, PeerState, MAX_ADDR_LEN, MAX_MEMBERS};
use proptest::prelude::*;

/// Address-like strings: valid ones, near misses and garbage.
pub fn addr_like() -> BoxedStrategy<String> {
    prop_oneof![
        4 => Just("a:1".to_string()),
        4 => "[a-z][a-z0-9.-]{0,12}:[0-9]{1,5}",
        2 => "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}:[0-9]{1,6}",
        2 => "\\[[0-9a-f:.]{0,12}\\]:[0-9]{1,5}",
        1 => "[a-z]{1,4}:(0|65535|65536|-1|\\+80|080| 80|80 |)",
        1 => "[a-z:/%?#. \\[\\]_@\u{e9}\u{1F600}-]{0,16}",
        1 => (250usize..280).prop_map(|n| format!("{}:80", "h".repeat(n))),
        1 => any::<String>(),
    ]
    .boxed()
}

/// A JSON string literal holding `s`.
fn lit(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// JSON text for `members`: a list of addresses, a huge list, or a wrong type.
fn members_json() -> BoxedStrategy<String> {
    prop_oneof![
        8 => prop::collection::vec(addr_like(), 0..6)
            .prop_map(|v| format!("[{}]", v.iter().map(|a| lit(a)).collect::<Vec<_>>().join(","))),
        1 => prop_oneof![Just(MAX_MEMBERS), Just(MAX_MEMBERS + 1)].prop_map(|n| {
            let one = lit("a:1");
            format!("[{}]", vec![one; n].join(","))
        }),
        1 => prop_oneof![
            Just("\"a:1\"".to_string()),
            Just("null".to_string()),
            Just("{}".to_string()),
            Just("[1, 2]".to_string()),
            Just("[[\"a:1\"]]".to_string()),
            Just("[null]".to_string()),
        ],
    ]
    .boxed()
}

/// JSON text for numbers at and beyond every boundary, and things that look like them.
fn number_json() -> BoxedStrategy<String> {
    prop_oneof![
        4 => any::<f64>().prop_filter_map("JSON has no NaN or infinity", |f| {
            serde_json::Number::from_f64(f).map(|n| n.to_string())
        }),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        2 => prop_oneof![
            Just("0".to_string()),
            Just("-0".to_string()),
            Just("-0.0".to_string()),
            Just("18446744073709551615".to_string()),
            Just("18446744073709551616".to_string()),
            Just("1e308".to_string()),
            Just("1e309".to_string()),
            Just("-1e309".to_string()),
            Just("5e-324".to_string()),
            Just("1e-400".to_string()),
            Just("1.7976931348623157e308".to_string()),
            Just("\"NaN\"".to_string()),
            Just("\"inf\"".to_string()),
            Just("\"-Infinity\"".to_string()),
            Just("\"1.5\"".to_string()),
            Just("NaN".to_string()),
            Just("Infinity".to_string()),
            Just("1.".to_string()),
            Just(".5".to_string()),
            Just("0x10".to_string()),
            Just("1_000".to_string()),
            Just(format!("1{}", "0".repeat(400))),
            Just(format!("0.{}1", "0".repeat(400))),
        ],
    ]
    .boxed()
}

/// Any JSON scalar or small container, as text.
fn wrong_type_json() -> BoxedStrategy<String> {
    prop_oneof![
        Just("true".to_string()),
        Just("false".to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        number_json(),
        addr_like().prop_map(|a| lit(&a)),
    ]
    .boxed()
}

/// One `"key": value` pair of a near-valid state document.
fn field() -> BoxedStrategy<String> {
    let kv =
        |k: &'static str, v: BoxedStrategy<String>| v.prop_map(move |v| format!("{}:{v}", lit(k)));
    prop_oneof![
        3 => kv("members", members_json()),
        1 => kv("members", wrong_type_json()),
        2 => kv("leader", prop_oneof![
            Just("false".to_string()),
            Just("null".to_string()),
            addr_like().prop_map(|a| lit(&a)),
        ].boxed()),
        1 => kv("leader", wrong_type_json()),
        3 => kv("start_time", number_json()),
        1 => kv("start_time", wrong_type_json()),
        2 => kv("term", number_json()),
        1 => kv("eligible", wrong_type_json()),
        1 => kv("leaving", wrong_type_json()),
        1 => kv("name", wrong_type_json()),
        1 => kv("version", wrong_type_json()),
        1 => kv("cluster", prop_oneof![
            Just("null".to_string()),
            "[a-z0-9._-]{0,70}".prop_map(|c| lit(&c)),
            wrong_type_json(),
        ].boxed()),
        1 => ("[a-z_]{1,10}", wrong_type_json()).prop_map(|(k, v)| format!("{}:{v}", lit(&k))),
    ]
    .boxed()
}

/// A near-valid document: usually the three required fields plus a few more, in any
/// order, sometimes with a field missing or repeated.
fn near_valid_document() -> impl Strategy<Value = String> {
    let required = (
        kv_required("members", members_json()),
        kv_required(
            "leader",
            prop_oneof![Just("false".to_string()), addr_like().prop_map(|a| lit(&a))].boxed(),
        ),
        kv_required("start_time", number_json()),
    );
    (
        required,
        prop::collection::vec(field(), 0..5),
        prop::bool::weighted(0.1),
        any::<prop::sample::Index>(),
    )
        .prop_map(|((m, l, s), extra, drop_one, which)| {
            let mut fields = vec![m, l, s];
            if drop_one {
                fields.remove(which.index(fields.len()));
            }
            fields.extend(extra);
            format!("{{{}}}", fields.join(","))
        })
}

fn kv_required(k: &'static str, v: BoxedStrategy<String>) -> BoxedStrategy<String> {
    v.prop_map(move |v| format!("{}:{v}", lit(k))).boxed()
}

/// The properties of anything `from_json` accepts.
fn check_accepted(body: &[u8]) {
    let Ok(state) = PeerState::from_json(body) else {
        return;
    };
    assert_eq!(state.validate(), Ok(()), "accepted but invalid: {state:?}");
    assert!(state.start_time.is_finite() && state.start_time >= 0.0);
    assert!(state.members.len() <= MAX_MEMBERS);
    for a in state.members.iter().chain(&state.leader) {
        assert_eq!(check_addr(a), Ok(()), "{a:?}");
    }
    let wire = serde_json::to_vec(&state).expect("an accepted state serializes");
    let back = PeerState::from_json(&wire).expect("our own serialization parses");
    assert_eq!(back, state);
    assert_eq!(
        back.start_time.to_bits(),
        state.start_time.to_bits(),
        "start_time moved on the wire"
    );
}

/// The properties of an address `check_addr` accepts.
fn check_address(addr: &str) {
    if check_addr(addr).is_err() {
        return;
    }
    assert!(addr.len() <= MAX_ADDR_LEN);
    let (host, port) = addr.rsplit_once(':').expect("accepted address has a port");
    assert!(!host.is_empty());
    let port: u16 = port.parse().expect("accepted port is a u16");
    assert!(port > 0);
    assert!(
        !addr.contains(['/', '?', '#', '%', ' ', '@']) && addr.is_ascii(),
        "{addr:?} cannot travel in a URL path unescaped"
    );
    // The client dials `http://{addr}{path}`, and the server routes `/state/{addr}`
    // back to exactly `addr`.
    let uri: hyper::Uri = format!("http://{addr}/state/{addr}")
        .parse()
        .unwrap_or_else(|e| panic!("accepted address {addr:?} makes no URI: {e}"));
    assert_eq!(uri.path(), format!("/state/{addr}"));
    let authority = uri.authority().expect("an authority").as_str();
    assert_eq!(authority, addr);
}

proptest! {
    #![proptest_config(crate::config("tests/fuzz/regressions/state.txt"))]

    #[test]
    fn state_arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "state::state_arbitrary_bytes_never_panic");
        check_accepted(&body);
    }

    #[test]
    fn state_near_valid_documents(doc in near_valid_document()) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "state::state_near_valid_documents");
        check_accepted(doc.as_bytes());
    }

    #[test]
    fn state_addresses_accepted_are_host_port(addr in addr_like()) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "state::state_addresses_accepted_are_host_port");
        check_address(&addr);
    }
}

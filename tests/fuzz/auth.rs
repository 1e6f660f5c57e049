//! Target `auth`: the `X-Les-Auth` header parser and the tagging rules around it
//! (`les::auth`).
//!
//! The header is read from every request before anything else is trusted, from
//! anyone who can reach the port, so the parser must never panic on any text, and what
//! it accepts must mean one thing: a parsed header re-encodes to text that parses back
//! to the same header. Around it: a request or answer the module signs verifies, once
//! (a second time is a replay), and only for the method, path, status and body it was
//! signed for; arbitrary headers sent to a keyed node never verify; key files and
//! cluster names of any text never panic their parsers.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use les::auth::{
    check_cluster_name, parse_header, Auth, AuthHeader, Key, Keyring, Rejection, Settings,
    Verified, MAX_CLUSTER_LEN, NONCE_LEN, TAG_LEN, WINDOW_SECS,
};
use proptest::prelude::*;

/// A base64url (no padding) field of `n` bytes, or a near miss.
fn b64_field() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop_oneof![Just(NONCE_LEN), Just(TAG_LEN), Just(0usize), Just(15), Just(17), Just(31), Just(33), Just(100)]
            .prop_flat_map(|n| prop::collection::vec(any::<u8>(), n))
            .prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        1 => prop::collection::vec(any::<u8>(), 16..33).prop_map(|b| STANDARD.encode(b)),
        1 => "[A-Za-z0-9_=+/-]{0,50}",
    ]
    .boxed()
}

/// One `key=value` part of a header, or a malformed one.
fn part() -> BoxedStrategy<String> {
    prop_oneof![
        3 => b64_field().prop_map(|v| format!("tag={v}")),
        2 => b64_field().prop_map(|v| format!("nonce={v}")),
        2 => prop_oneof![
            any::<u64>().prop_map(|t| t.to_string()),
            Just("18446744073709551616".to_string()),
            Just("-1".to_string()),
            Just("+1".to_string()),
            Just("".to_string()),
            Just("0x10".to_string()),
        ]
        .prop_map(|v| format!("ts={v}")),
        1 => prop::sample::select(vec!["", "=", "tag", "ts==1", "TAG=x", "v1", "x=y", "tag=\u{e9}"])
            .prop_map(str::to_string),
    ]
    .boxed()
}

/// A near-valid header: a version, then parts separated by one space (or not).
fn near_valid_header() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["v1", "v1", "v1", "v2", "V1", "", " v1"]),
        prop::collection::vec(part(), 0..5),
        prop::sample::select(vec![" ", " ", " ", "  ", "\t", ","]),
    )
        .prop_map(|(v, parts, sep)| {
            let mut s = v.to_string();
            for p in parts {
                s.push_str(sep);
                s.push_str(&p);
            }
            s
        })
}

/// The properties of any header text.
fn check_header(text: &str) {
    let Ok(h) = parse_header(text) else {
        return;
    };
    let again = h.encode();
    assert_eq!(
        parse_header(&again),
        Ok(h.clone()),
        "{text:?} parsed, re-encoded as {again:?}"
    );
}

fn keyring(keys: &[[u8; 32]]) -> Keyring {
    let keys: Vec<Key> = keys
        .iter()
        .map(|k| Key::from_base64(&STANDARD.encode(k)).expect("32 bytes are a key"))
        .collect();
    Keyring::new(keys).expect("at least one key")
}

fn keyed(cluster: &str, keys: &[[u8; 32]]) -> Auth {
    Auth::new(
        cluster,
        Settings {
            keyring: Some(keyring(keys)),
            accept_unsigned: false,
        },
    )
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        "[A-Z]{0,8}"
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/state/a:1".to_string()),
        Just("/leave/a:1".to_string()),
        any::<String>()
    ]
}

proptest! {
    #![proptest_config(crate::config("tests/fuzz/regressions/auth.txt"))]

    #[test]
    fn arbitrary_headers(text in any::<String>()) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "auth::arbitrary_headers");
        check_header(&text);
    }

    #[test]
    fn near_valid_headers(text in near_valid_header()) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "auth::near_valid_headers");
        check_header(&text);
    }

    /// Every header the module can produce parses back to itself.
    #[test]
    fn encoded_headers_round_trip(
        ts in prop::option::of(any::<u64>()),
        nonce in prop::option::of(any::<[u8; NONCE_LEN]>()),
        tag in any::<[u8; TAG_LEN]>(),
    ) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "auth::encoded_headers_round_trip");
        let h = AuthHeader { ts, nonce, tag };
        prop_assert_eq!(parse_header(&h.encode()), Ok(h));
    }

    /// A signed request verifies once, for what it was signed for only; its answer
    /// verifies for its status and body only.
    #[test]
    fn signed_messages_verify_once_and_only_as_signed(
        keys in prop::collection::vec(any::<[u8; 32]>(), 1..3),
        cluster in "[a-z0-9._-]{0,12}",
        method in method(),
        path in path(),
        now in 0u64..4_000_000_000,
        skew in 0u64..=WINDOW_SECS,
        status in any::<u16>(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "auth::signed_messages");
        let sender = keyed(&cluster, &keys);
        // The receiver holds the same keys, its own signing key possibly another.
        let mut theirs = keys.clone();
        theirs.rotate_left(1);
        let receiver = keyed(&cluster, &theirs);
        let req = sender.sign_request(&method, &path, now).expect("a keyed node signs");
        let at = now.saturating_add(skew);
        let other_path = format!("{path}x");
        prop_assert_eq!(
            receiver.verify_request(&method, &other_path, Some(&req.header), Some(&cluster), at),
            Err(Rejection::Forged)
        );
        let verified = receiver
            .verify_request(&method, &path, Some(&req.header), Some(&cluster), at)
            .expect("a signed request verifies");
        prop_assert!(matches!(verified, Verified::Signed { .. }), "{:?}", verified);
        prop_assert_eq!(
            receiver.verify_request(&method, &path, Some(&req.header), Some(&cluster), at),
            Err(Rejection::Replayed)
        );
        let answer = receiver.sign_answer(&verified, status, &body).expect("a signed answer");
        prop_assert_eq!(sender.verify_answer(Some(&req), status, Some(&answer), &body), Ok(()));
        let mut other_body = body.clone();
        other_body.push(0);
        prop_assert_eq!(
            sender.verify_answer(Some(&req), status, Some(&answer), &other_body),
            Err(Rejection::Forged)
        );
        prop_assert_eq!(
            sender.verify_answer(Some(&req), status.wrapping_add(1), Some(&answer), &body),
            Err(Rejection::Forged)
        );
        // Outside the window on the receiver's clock: refused, not remembered.
        let late = keyed(&cluster, &theirs);
        prop_assert_eq!(
            late.verify_request(&method, &path, Some(&req.header), Some(&cluster), now + WINDOW_SECS + 1),
            Err(Rejection::Expired)
        );
    }

    /// Headers from someone without the key never verify, and never panic.
    #[test]
    fn forged_requests_are_refused(
        key in any::<[u8; 32]>(),
        header in prop_oneof![near_valid_header(), any::<String>()],
        cluster in prop::option::of("[a-z]{0,4}"),
        now in any::<u64>(),
    ) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "auth::forged_requests");
        let auth = keyed("", &[key]);
        let result = auth.verify_request("GET", "/state/a:1", Some(&header), cluster.as_deref(), now);
        prop_assert!(result.is_err(), "{header:?} verified: {result:?}");
    }

    #[test]
    fn key_files_and_cluster_names(text in prop_oneof![
        any::<String>(),
        prop::collection::vec(prop_oneof![
            any::<[u8; 32]>().prop_map(|k| STANDARD.encode(k)),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|k| STANDARD.encode(k)),
            Just("# comment".to_string()),
            Just(String::new()),
        ], 0..20).prop_map(|lines| lines.join("\n")),
    ]) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        crate::progress(&N, "auth::key_files_and_cluster_names");
        if let Ok(ring) = Keyring::parse(&text, "fuzz.keys") {
            prop_assert!((1..=les::auth::MAX_KEYS).contains(&ring.len()));
            prop_assert_eq!(ring.fingerprint().len(), 8);
        }
        if check_cluster_name(&text).is_ok() {
            prop_assert!(text.len() <= MAX_CLUSTER_LEN && text.is_ascii());
            prop_assert!(!text.contains([' ', '\r', '\n', ':']));
        }
    }
}

use super::*;

const NOW: u64 = 1_800_000_000;

fn key(b: u8) -> Key {
    Key::from_bytes([b; KEY_LEN])
}

fn keyed(cluster: &str, keys: Vec<Key>) -> Auth {
    Auth::new(
        cluster,
        Settings {
            keyring: Keyring::new(keys),
            accept_unsigned: false,
        },
    )
}

#[test]
fn a_signed_request_verifies_once_and_its_answer_is_bound_to_it() {
    let (a, b) = (keyed("prod", vec![key(1)]), keyed("prod", vec![key(1)]));
    let req = a.sign_request("GET", "/state/x:1", NOW).unwrap();
    let v = b
        .verify_request("GET", "/state/x:1", Some(&req.header), Some("prod"), NOW)
        .unwrap();
    assert!(matches!(v, Verified::Signed { .. }));
    // The same request again is a replay.
    assert_eq!(
        b.verify_request(
            "GET",
            "/state/x:1",
            Some(&req.header),
            Some("prod"),
            NOW + 1
        ),
        Err(Rejection::Replayed)
    );
    let answer = b.sign_answer(&v, 200, b"{}").unwrap();
    assert_eq!(
        a.verify_answer(Some(&req), 200, Some(&answer), b"{}"),
        Ok(())
    );
    // The answer does not fit another body, status or request.
    assert_eq!(
        a.verify_answer(Some(&req), 200, Some(&answer), b"{\"x\":1}"),
        Err(Rejection::Forged)
    );
    assert_eq!(
        a.verify_answer(Some(&req), 503, Some(&answer), b"{}"),
        Err(Rejection::Forged)
    );
    let other = a.sign_request("GET", "/state/x:1", NOW).unwrap();
    assert_eq!(
        a.verify_answer(Some(&other), 200, Some(&answer), b"{}"),
        Err(Rejection::Forged)
    );
}

#[test]
fn a_tag_covers_method_path_cluster_and_time() {
    let a = keyed("prod", vec![key(1)]);
    let req = a.sign_request("POST", "/leave/x:1", NOW).unwrap();
    let check = |method, path, cluster, now| {
        keyed("prod", vec![key(1)]).verify_request(method, path, Some(&req.header), cluster, now)
    };
    assert_eq!(
        check("GET", "/leave/x:1", Some("prod"), NOW),
        Err(Rejection::Forged)
    );
    assert_eq!(
        check("POST", "/leave/y:1", Some("prod"), NOW),
        Err(Rejection::Forged)
    );
    assert_eq!(
        check("POST", "/leave/x:1", Some("dev"), NOW),
        Err(Rejection::Cluster)
    );
    assert_eq!(
        check("POST", "/leave/x:1", Some("prod"), NOW + WINDOW_SECS + 1),
        Err(Rejection::Expired)
    );
    assert!(check("POST", "/leave/x:1", Some("prod"), NOW + WINDOW_SECS).is_ok());
    // Same name, other key.
    assert_eq!(
        keyed("prod", vec![key(2)]).verify_request(
            "POST",
            "/leave/x:1",
            Some(&req.header),
            Some("prod"),
            NOW
        ),
        Err(Rejection::Forged)
    );
}

#[test]
fn unsigned_is_refused_unless_accepting_unsigned_and_a_bad_tag_always() {
    let strict = keyed("", vec![key(1)]);
    assert_eq!(
        strict.verify_request("GET", "/state/x:1", None, None, NOW),
        Err(Rejection::Unsigned)
    );
    let lax = Auth::new(
        "",
        Settings {
            keyring: Keyring::new(vec![key(1)]),
            accept_unsigned: true,
        },
    );
    assert_eq!(
        lax.verify_request("GET", "/state/x:1", None, None, NOW),
        Ok(Verified::Unsigned)
    );
    let forged = keyed("", vec![key(9)])
        .sign_request("GET", "/state/x:1", NOW)
        .unwrap();
    assert_eq!(
        lax.verify_request("GET", "/state/x:1", Some(&forged.header), None, NOW),
        Err(Rejection::Forged)
    );
    // Unkeyed nodes check only the cluster name.
    let open = Auth::new("", Settings::default());
    assert_eq!(
        open.verify_request("GET", "/state/x:1", Some("garbage"), None, NOW),
        Ok(Verified::Unsigned)
    );
    assert_eq!(
        open.verify_request("GET", "/state/x:1", None, Some("prod"), NOW),
        Err(Rejection::Cluster)
    );
}

#[test]
fn rotation_every_key_verifies_the_first_signs() {
    let old = keyed("", vec![key(1)]);
    let both = keyed("", vec![key(1), key(2)]);
    let new_first = keyed("", vec![key(2), key(1)]);
    let new = keyed("", vec![key(2)]);
    // Nodes one step apart during a rotation understand each other both ways; nodes
    // two steps apart do not, which is why each step must finish everywhere first.
    for (signer, verifier, ok) in [
        (&old, &both, true),
        (&both, &old, true),
        (&both, &new_first, true),
        (&new_first, &both, true),
        (&new_first, &new, true),
        (&new, &new_first, true),
        (&new_first, &old, false),
        (&old, &new, false),
    ] {
        let req = signer.sign_request("GET", "/ping", NOW).unwrap();
        let got = verifier.verify_request("GET", "/ping", Some(&req.header), None, NOW);
        assert_eq!(got.is_ok(), ok);
    }
}

#[test]
fn headers_parse_strictly_and_round_trip() {
    let h = AuthHeader {
        ts: Some(7),
        nonce: Some([3; NONCE_LEN]),
        tag: [4; TAG_LEN],
    };
    assert_eq!(parse_header(&h.encode()), Ok(h.clone()));
    let enc = h.encode();
    for bad in [
        String::new(),
        "v2 tag=AAAA".into(),
        enc.replace("v1", "v1 v1"),
        format!("{enc} ts=8"),
        format!("{enc} extra=1"),
        enc.replace("ts=7", "ts=-7"),
        enc.replace("ts=7", "ts=99999999999999999999999"),
        "v1 tag=".into(),
        "v1".into(),
        "x".repeat(300),
    ] {
        assert_eq!(parse_header(&bad), Err(Rejection::Malformed), "{bad:?}");
    }
}

#[test]
fn nonces_expire_after_the_window_and_the_cache_is_bounded() {
    let mut n = Nonces::default();
    n.insert([1; NONCE_LEN], NOW, NOW).unwrap();
    assert_eq!(n.insert([1; NONCE_LEN], NOW, NOW), Err(Rejection::Replayed));
    n.insert([2; NONCE_LEN], NOW + 40, NOW + 40).unwrap();
    assert!(!n.expiry.contains_key(&[1; NONCE_LEN]));
    let mut full = Nonces::default();
    for i in 0..MAX_NONCES as u32 {
        let mut nonce = [0; NONCE_LEN];
        nonce[..4].copy_from_slice(&i.to_be_bytes());
        full.insert(nonce, NOW, NOW).unwrap();
    }
    assert_eq!(
        full.insert([0xff; NONCE_LEN], NOW, NOW),
        Err(Rejection::Busy)
    );
}

#[test]
fn key_files_parse_with_clear_errors() {
    let k = Key::generate().unwrap().to_base64();
    let ring = Keyring::parse(&format!("# comment\n\n{k}\n{k}\n"), "ring").unwrap();
    assert_eq!(ring.len(), 2);
    let e = Keyring::parse("# nothing\n", "ring")
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no key"), "{e}");
    let e = Keyring::parse(&format!("{k}\nc2hvcnQ=\n"), "ring")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("32 bytes"), "{e}");
    let e = Keyring::parse("not base64!\n", "ring")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1") && e.contains("base64"), "{e}");
    assert!(!format!("{ring:?}").contains(&k));
}

#[test]
fn cluster_names_are_header_safe() {
    assert!(check_cluster_name("prod-eu_1.a").is_ok());
    assert!(check_cluster_name("").is_ok());
    assert!(check_cluster_name("a b").is_err());
    assert!(check_cluster_name("a\nb").is_err());
    assert!(check_cluster_name(&"a".repeat(65)).is_err());
}

//! Shared-key authentication of the messages nodes exchange, and the cluster name.
//!
//! Without a key anyone who reaches a node's port is a peer: it can announce a fake
//! senior node, forge leave notices, make the node connect where it likes. With a
//! keyring (`--key-file`), every request between nodes and every answer carries an
//! HMAC-SHA256 tag, and a node acts only on requests whose tag verifies:
//!
//! - a **request** tag covers the cluster name, the method, the path, a hash of the
//!   body, a timestamp (wall-clock seconds) and a random 16-byte nonce. A request
//!   outside [`WINDOW_SECS`] of the receiver's clock, or whose nonce was seen before,
//!   is rejected, so a captured request cannot be replayed;
//! - an **answer** tag covers the cluster name, the status, a hash of the body and the
//!   request's own tag, so an answer is bound to the one request it answers: a
//!   captured answer cannot be passed off as the answer to another request.
//!
//! The keyring's first key signs, every key verifies: rotation is install a key
//! everywhere, make it first everywhere, remove the old one everywhere, with SIGHUP
//! reloads and no restart (see the README). [`Settings::accept_unsigned`] is the
//! rollout switch (memberlist's "verify incoming" turned off): a node that has it signs
//! everything but still accepts unsigned requests and answers, so an unkeyed cluster
//! can become a keyed one node by node without downtime.
//!
//! The cryptography is the `hmac` and `sha2` crates'; tags are compared in constant
//! time by `hmac`'s `verify_slice`. Nothing here reads a clock or does I/O: callers
//! pass the wall-clock time in, which keeps the rules testable and the module fuzzable.
//!
//! The cluster name (`--cluster`) is checked with or without a key: a request's
//! `X-Les-Cluster` header must equal the receiver's name (both empty when unset, which
//! is what Python nodes send), so nodes of different clusters never merge.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::TryRngCore as _;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Length of a key, in bytes (base64-encoded in the key file).
pub const KEY_LEN: usize = 32;
/// Length of a request nonce, in bytes.
pub const NONCE_LEN: usize = 16;
/// Length of a tag (HMAC-SHA256), in bytes.
pub const TAG_LEN: usize = 32;
/// Most keys a keyring holds: rotation needs two, a few more cover mistakes.
pub const MAX_KEYS: usize = 16;
/// A request is accepted only if its timestamp is within this many seconds of the
/// receiver's wall clock. Nodes' clocks must agree this well (seniority already needs
/// them to agree far better); nonces are remembered for as long.
pub const WINDOW_SECS: u64 = 30;
/// Most nonces remembered. Only requests whose tag verifies are remembered, so only a
/// keyholder can fill it; a full cache rejects new requests (fail closed) rather than
/// forget a nonce that is still inside the window. 200,000 nonces is about 7 MB, and
/// about 50 times what a 1,000-node cluster sends one node in a window.
pub const MAX_NONCES: usize = 200_000;
/// Request and answer header carrying the tag.
pub const AUTH_HEADER: &str = "x-les-auth";
/// Request header carrying the sender's cluster name (absent means none).
pub const CLUSTER_HEADER: &str = "x-les-cluster";
/// Longest cluster name accepted.
pub const MAX_CLUSTER_LEN: usize = 64;

/// The scheme's version, first in every header and in every tagged message.
const VERSION: &str = "v1";

/// One 32-byte key, with its HMAC state prepared (the key schedule is done once, not
/// per message). Its `Debug` form does not show it.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; KEY_LEN],
    prepared: HmacSha256,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Key, rand::rand_core::OsError> {
        let mut k = [0u8; KEY_LEN];
        rand::rngs::OsRng.try_fill_bytes(&mut k)?;
        Ok(Key::from_bytes(k))
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        // HMAC takes keys of any length; 32 bytes cannot be refused.
        let prepared =
            <HmacSha256 as Mac>::new_from_slice(&bytes).unwrap_or_else(|_| unreachable!());
        Key { bytes, prepared }
    }

    /// The key as written in a key file (standard base64).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// A key from its base64 form.
    pub fn from_base64(text: &str) -> Result<Key, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let k: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("a key is {KEY_LEN} bytes, this one is {}", b.len()))?;
        Ok(Key::from_bytes(k))
    }

    fn mac(&self) -> HmacSha256 {
        self.prepared.clone()
    }
}

/// Keys in order: the first signs, all verify.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file, as given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a key.
    #[error("key file {path}, line {line}: {why}")]
    Line {
        /// The file, as given.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// No key at all (only blank lines and comments).
    #[error("key file {path} holds no key (one base64 {KEY_LEN}-byte key per line; `les keygen` makes one)")]
    Empty {
        /// The file, as given.
        path: String,
    },
    /// More than [`MAX_KEYS`] keys.
    #[error("key file {path} holds more than {MAX_KEYS} keys")]
    TooMany {
        /// The file, as given.
        path: String,
    },
}

impl Keyring {
    /// A keyring of `keys`, the first signing. `None` if `keys` is empty.
    pub fn new(keys: Vec<Key>) -> Option<Keyring> {
        (!keys.is_empty()).then_some(Keyring { keys })
    }

    /// Parse a key file's text: one base64 key per line; blank lines and lines
    /// starting with `#` are ignored. `path` only names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<Keyring, KeyringError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = Key::from_base64(line).map_err(|why| KeyringError::Line {
                path: path.to_string(),
                line: i + 1,
                why,
            })?;
            if keys.len() == MAX_KEYS {
                return Err(KeyringError::TooMany {
                    path: path.to_string(),
                });
            }
            keys.push(key);
        }
        Keyring::new(keys).ok_or_else(|| KeyringError::Empty {
            path: path.to_string(),
        })
    }

    /// Read and parse a key file.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::Read {
            path: shown.clone(),
            source,
        })?;
        Keyring::parse(&text, &shown)
    }

    /// How many keys the ring holds (at least one).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring holds at least one key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A short fingerprint of the signing key (first 8 hex digits of its SHA-256),
    /// for logs: enough to tell two keys apart, useless to an attacker.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.keys[0].bytes);
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What the tagging rules need to know; replaced as a whole on reload.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Keys, or `None` to run unkeyed (no tags sent or checked).
    pub keyring: Option<Keyring>,
    /// With a keyring: still accept requests and answers that carry no tag (a wrong
    /// tag is rejected all the same). The switch for rolling out a key.
    pub accept_unsigned: bool,
}

/// Why a request (or an answer) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No tag, and one is required.
    #[error("no signature, and this node requires one")]
    Unsigned,
    /// The `X-Les-Auth` header does not parse.
    #[error("malformed authentication header")]
    Malformed,
    /// The tag verifies under no key of the keyring.
    #[error("signature does not verify with any key in the keyring (wrong key?)")]
    Forged,
    /// The timestamp is more than [`WINDOW_SECS`] from the receiver's clock.
    #[error("timestamp outside the {WINDOW_SECS} s window (replayed, or clocks disagree)")]
    Expired,
    /// The nonce was seen within the window.
    #[error("nonce seen before (replayed)")]
    Replayed,
    /// The nonce cache is full ([`MAX_NONCES`]).
    #[error("too many recent requests to remember their nonces")]
    Busy,
    /// The sender's cluster name is not the receiver's.
    #[error("cluster name differs")]
    Cluster,
}

impl Rejection {
    /// Every reason, for metrics.
    pub const ALL: [Rejection; 7] = [
        Rejection::Unsigned,
        Rejection::Malformed,
        Rejection::Forged,
        Rejection::Expired,
        Rejection::Replayed,
        Rejection::Busy,
        Rejection::Cluster,
    ];

    /// A short label (`reason` in `/metrics`).
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::Malformed => "malformed",
            Rejection::Forged => "forged",
            Rejection::Expired => "expired",
            Rejection::Replayed => "replayed",
            Rejection::Busy => "busy",
            Rejection::Cluster => "cluster",
        }
    }
}

/// A parsed `X-Les-Auth` header: `v1 ts=<secs> nonce=<b64url> tag=<b64url>` on a
/// request, `v1 tag=<b64url>` on an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    /// Request timestamp, wall-clock seconds.
    pub ts: Option<u64>,
    /// Request nonce.
    pub nonce: Option<[u8; NONCE_LEN]>,
    /// The tag.
    pub tag: [u8; TAG_LEN],
}

impl AuthHeader {
    /// The header's text.
    pub fn encode(&self) -> String {
        let mut s = String::from(VERSION);
        if let Some(ts) = self.ts {
            s.push_str(&format!(" ts={ts}"));
        }
        if let Some(n) = self.nonce {
            s.push_str(&format!(" nonce={}", URL_SAFE_NO_PAD.encode(n)));
        }
        s.push_str(&format!(" tag={}", URL_SAFE_NO_PAD.encode(self.tag)));
        s
    }
}

/// Parse an `X-Les-Auth` header. Strict: the version first, each field at most once,
/// nothing unknown, exact lengths.
pub fn parse_header(value: &str) -> Result<AuthHeader, Rejection> {
    if value.len() > 256 {
        return Err(Rejection::Malformed);
    }
    let mut parts = value.split(' ');
    if parts.next() != Some(VERSION) {
        return Err(Rejection::Malformed);
    }
    let (mut ts, mut nonce, mut tag) = (None, None, None);
    for part in parts {
        let (k, v) = part.split_once('=').ok_or(Rejection::Malformed)?;
        let fresh = match k {
            "ts" => ts
                .replace(v.parse::<u64>().map_err(|_| Rejection::Malformed)?)
                .is_none(),
            "nonce" => nonce.replace(decode_fixed::<NONCE_LEN>(v)?).is_none(),
            "tag" => tag.replace(decode_fixed::<TAG_LEN>(v)?).is_none(),
            _ => false,
        };
        if !fresh {
            return Err(Rejection::Malformed);
        }
    }
    Ok(AuthHeader {
        ts,
        nonce,
        tag: tag.ok_or(Rejection::Malformed)?,
    })
}

fn decode_fixed<const N: usize>(v: &str) -> Result<[u8; N], Rejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(v)
        .map_err(|_| Rejection::Malformed)?;
    bytes.try_into().map_err(|_| Rejection::Malformed)
}

/// A signed request's tag, kept by the client to check the answer against.
#[derive(Debug, Clone)]
pub struct RequestTag {
    /// The `X-Les-Auth` value to send.
    pub header: String,
    tag: [u8; TAG_LEN],
}

/// How a request passed [`Auth::verify_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// It carried no tag, and none was required (unkeyed, or accepting unsigned).
    Unsigned,
    /// Its tag verified; the answer is tagged and bound to it.
    Signed {
        /// The request's tag, which the answer's tag covers.
        tag: [u8; TAG_LEN],
    },
}

/// The tagging rules and the nonces seen, shared by a node's client and server.
#[derive(Debug)]
pub struct Auth {
    cluster: String,
    settings: RwLock<Arc<Settings>>,
    seen: Mutex<Nonces>,
}

impl Auth {
    /// Rules for cluster `cluster` (empty for none) with `settings`.
    pub fn new(cluster: impl Into<String>, settings: Settings) -> Auth {
        Auth {
            cluster: cluster.into(),
            settings: RwLock::new(Arc::new(settings)),
            seen: Mutex::new(Nonces::default()),
        }
    }

    /// The cluster name (empty for none).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The current settings.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replace the settings (a reload); requests in flight finish under the old ones.
    pub fn install(&self, settings: Settings) {
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(settings);
    }

    /// Tag a request about to be sent at wall-clock second `now`. `None` when unkeyed.
    pub fn sign_request(&self, method: &str, path: &str, now: u64) -> Option<RequestTag> {
        let settings = self.settings();
        let ring = settings.keyring.as_ref()?;
        let mut nonce = [0u8; NONCE_LEN];
        // A nonce needs to be unique, not secret: the thread RNG (a CSPRNG) is enough.
        rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
        let tag = request_tag(&ring.keys[0], &self.cluster, method, path, now, &nonce);
        let header = AuthHeader {
            ts: Some(now),
            nonce: Some(nonce),
            tag,
        };
        Some(RequestTag {
            header: header.encode(),
            tag,
        })
    }

    /// Check a received request: its cluster header, then its tag, timestamp and nonce
    /// (wall-clock second `now`). A verified nonce is remembered. Requests have no body
    /// (the server refuses any), so the body hashed is always the empty one.
    pub fn verify_request(
        &self,
        method: &str,
        path: &str,
        header: Option<&str>,
        cluster: Option<&str>,
        now: u64,
    ) -> Result<Verified, Rejection> {
        if cluster.unwrap_or("") != self.cluster {
            return Err(Rejection::Cluster);
        }
        let settings = self.settings();
        let Some(ring) = settings.keyring.as_ref() else {
            return Ok(Verified::Unsigned);
        };
        let Some(header) = header else {
            return match settings.accept_unsigned {
                true => Ok(Verified::Unsigned),
                false => Err(Rejection::Unsigned),
            };
        };
        let h = parse_header(header)?;
        let (Some(ts), Some(nonce)) = (h.ts, h.nonce) else {
            return Err(Rejection::Malformed);
        };
        let verifies = ring.keys.iter().any(|k| {
            let mut mac = k.mac();
            feed_request(&mut mac, &self.cluster, method, path, ts, &nonce);
            mac.verify_slice(&h.tag).is_ok()
        });
        if !verifies {
            return Err(Rejection::Forged);
        }
        if ts.abs_diff(now) > WINDOW_SECS {
            return Err(Rejection::Expired);
        }
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(nonce, ts, now)?;
        Ok(Verified::Signed { tag: h.tag })
    }

    /// The `X-Les-Auth` value for the answer to a request that passed as `verified`
    /// (`None` for an unsigned one, or when unkeyed).
    pub fn sign_answer(&self, verified: &Verified, status: u16, body: &[u8]) -> Option<String> {
        let Verified::Signed { tag: request } = verified else {
            return None;
        };
        let settings = self.settings();
        let ring = settings.keyring.as_ref()?;
        let mut mac = ring.keys[0].mac();
        feed_answer(&mut mac, &self.cluster, status, request, body);
        let header = AuthHeader {
            ts: None,
            nonce: None,
            tag: mac.finalize().into_bytes().into(),
        };
        Some(header.encode())
    }

    /// Check the answer to a request we tagged with `request` (`None`: we sent it
    /// unsigned, so there is nothing to check).
    pub fn verify_answer(
        &self,
        request: Option<&RequestTag>,
        status: u16,
        header: Option<&str>,
        body: &[u8],
    ) -> Result<(), Rejection> {
        let Some(request) = request else {
            return Ok(());
        };
        let settings = self.settings();
        let Some(ring) = settings.keyring.as_ref() else {
            return Ok(());
        };
        let Some(header) = header else {
            return match settings.accept_unsigned {
                true => Ok(()),
                false => Err(Rejection::Unsigned),
            };
        };
        let h = parse_header(header)?;
        let verifies = ring.keys.iter().any(|k| {
            let mut mac = k.mac();
            feed_answer(&mut mac, &self.cluster, status, &request.tag, body);
            mac.verify_slice(&h.tag).is_ok()
        });
        verifies.then_some(()).ok_or(Rejection::Forged)
    }
}

/// Feed one length-prefixed field, so no two field lists feed the same bytes.
fn field(mac: &mut HmacSha256, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

fn feed_request(
    mac: &mut HmacSha256,
    cluster: &str,
    method: &str,
    path: &str,
    ts: u64,
    nonce: &[u8; NONCE_LEN],
) {
    field(mac, b"les-request-v1");
    field(mac, cluster.as_bytes());
    field(mac, method.as_bytes());
    field(mac, path.as_bytes());
    field(mac, &Sha256::digest(b""));
    field(mac, &ts.to_be_bytes());
    field(mac, nonce);
}

fn feed_answer(mac: &mut HmacSha256, cluster: &str, status: u16, request: &[u8], body: &[u8]) {
    field(mac, b"les-answer-v1");
    field(mac, cluster.as_bytes());
    field(mac, &status.to_be_bytes());
    field(mac, request);
    field(mac, &Sha256::digest(body));
}

fn request_tag(
    key: &Key,
    cluster: &str,
    method: &str,
    path: &str,
    ts: u64,
    nonce: &[u8; NONCE_LEN],
) -> [u8; TAG_LEN] {
    let mut mac = key.mac();
    feed_request(&mut mac, cluster, method, path, ts, nonce);
    mac.finalize().into_bytes().into()
}

/// Nonces of verified requests, each kept until its timestamp leaves the window.
#[derive(Debug, Default)]
struct Nonces {
    expiry: HashMap<[u8; NONCE_LEN], u64>,
    /// Insertion order, for expiry: timestamps are near the clock, so this is nearly
    /// their order too; a nonce out of order is merely kept a little longer.
    order: VecDeque<([u8; NONCE_LEN], u64)>,
}

impl Nonces {
    fn insert(&mut self, nonce: [u8; NONCE_LEN], ts: u64, now: u64) -> Result<(), Rejection> {
        while let Some(&(n, until)) = self.order.front() {
            if until >= now {
                break;
            }
            self.order.pop_front();
            if self.expiry.get(&n) == Some(&until) {
                self.expiry.remove(&n);
            }
        }
        if self.expiry.contains_key(&nonce) {
            return Err(Rejection::Replayed);
        }
        if self.expiry.len() >= MAX_NONCES {
            return Err(Rejection::Busy);
        }
        let until = ts.saturating_add(WINDOW_SECS);
        self.expiry.insert(nonce, until);
        self.order.push_back((nonce, until));
        Ok(())
    }
}

/// Check a cluster name: at most [`MAX_CLUSTER_LEN`] bytes of ASCII letters, digits,
/// `-`, `_` and `.` (it travels in an HTTP header).
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_CLUSTER_LEN {
        return Err(format!("longer than {MAX_CLUSTER_LEN} bytes"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "{c:?} is not allowed (letters, digits, '-', '_', '.')"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;

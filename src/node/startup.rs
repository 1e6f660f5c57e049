//! What a node says at start-up (and on a keyring reload) about settings that are
//! allowed but worth knowing: how requests are authenticated, a surprising quorum.
//! Log lines only; apart from [`super`] so the runtime's wiring stays readable.

use std::collections::HashSet;

use crate::auth::Settings;
use crate::config::Config;

/// Say at start-up how requests are authenticated.
pub(super) fn log_auth_setting(cfg: &Config, settings: &Settings) {
    let cluster = cfg.cluster.as_deref().unwrap_or("");
    match &settings.keyring {
        None => tracing::info!(
            cluster,
            "no key file: requests between nodes are not authenticated (see SECURITY.md)"
        ),
        Some(ring) => tracing::info!(cluster, keys = ring.len(), signing_key = %ring.fingerprint(),
            accept_unsigned = settings.accept_unsigned, "requests between nodes are authenticated"),
    }
    if settings.accept_unsigned && settings.keyring.is_some() {
        tracing::warn!("accept_unsigned is on: unsigned requests are still accepted; turn it off once every node has the key");
    }
}

/// Say how a reload changed the keyring.
pub(super) fn log_auth_setting_change(settings: &Settings) {
    match &settings.keyring {
        None => tracing::warn!("keyring reloaded: now unkeyed"),
        Some(ring) => tracing::info!(keys = ring.len(), signing_key = %ring.fingerprint(),
            accept_unsigned = settings.accept_unsigned, "keyring reloaded"),
    }
}

/// Say at start-up what a surprising quorum setting means. Both are allowed (a fleet
/// may be growing into its quorum), so they are log lines, not configuration errors.
pub(super) fn log_quorum_setting(cfg: &Config) {
    if cfg.quorum == 1 {
        tracing::warn!("quorum 1 is the same as off");
        return;
    }
    let named: HashSet<&str> = cfg
        .seeds
        .iter()
        .map(String::as_str)
        .chain([cfg.advertise_addr.as_str()])
        .collect();
    if cfg.quorum > named.len() {
        tracing::warn!(
            quorum = cfg.quorum,
            named = named.len(),
            "quorum {} is more than the {} distinct nodes the seeds and this node name: no leader can be elected until more nodes join",
            cfg.quorum,
            named.len()
        );
    }
}

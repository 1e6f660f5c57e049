//! The node's side of a store backend: a [`StoreLoop`] made from the configuration, in
//! place of the gossip protocol loop (see [`crate::backend`]). Kept apart from
//! [`super`] so that the node wires either loop with the same few lines.

use super::protocol::Timing;
use crate::backend::driver::{StoreLinks, StoreLoop, StoreTiming};
use crate::backend::postgres::{PostgresStore, PostgresUrl};
use crate::backend::Registration;
use crate::config::Config;

/// The store loop for the database at `url`, as `cfg` describes this node; `healthy`
/// is the first health check's result.
pub(super) fn store_loop(
    cfg: &Config,
    url: &PostgresUrl,
    healthy: bool,
    links: StoreLinks,
    timing: &Timing,
) -> StoreLoop<PostgresStore> {
    let cluster = cfg.cluster.clone().unwrap_or_default();
    let store = PostgresStore::new(url.clone(), cluster.clone(), cfg.request_timeout);
    let me = Registration {
        cluster,
        addr: cfg.advertise_addr.clone(),
        incarnation: rand::random(),
        name: cfg.name.clone(),
        lease: cfg.lease,
    };
    let timing = StoreTiming {
        interval: timing.interval,
        request_timeout: timing.request_timeout,
        hook_timeout: timing.hook_timeout,
        cooldown: timing.cooldown,
    };
    StoreLoop::new(store, me, cfg.eligible, healthy, links, timing)
}

/// Say at start-up which gossip settings the database backend ignores, in one line.
pub(super) fn log_setting(cfg: &Config, url: &PostgresUrl) {
    let ignored = cfg.gossip_only_settings();
    if !ignored.is_empty() {
        tracing::info!(backend = %url, ?ignored,
            "the database decides leadership: ignoring the gossip-only settings {}",
            ignored.join(", "));
    }
}

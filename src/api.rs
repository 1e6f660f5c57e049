//! The HTTP API a node serves, compatible with the Python LES.
//!
//! | request | answer |
//! |---|---|
//! | `GET /ping` | `200 OK` (`503` while leaving) |
//! | `GET /state` | this node's state JSON |
//! | `GET /state/{addr}` | the same; `{addr}` is fetched back and added once it answers |
//! | `GET /diag` | `{"state", "member_states", "member_info"}` (and `"lease"` in quorum mode), pretty-printed |
//! | `POST /leave/{addr}` | `{addr}` is leaving: drop it now (les extension) |
//! | `GET /probe/{addr}` | `200` if this node can ping `{addr}`, `503` if not (les extension, SWIM indirect probe) |
//! | `GET /metrics` | counters in Prometheus text format (les extension) |
//!
//! Trailing slashes are accepted everywhere. The server never blocks on the protocol
//! loop: `/state` is served from a pre-serialized snapshot the loop publishes in a
//! [`Published`] cell, and notices for the loop go through a bounded queue (dropped,
//! not waited on, when full). Slow clients are cut off by a header-read timeout;
//! request bodies are never read.
//!
//! Quorum mode needs one more thing from the server: a follower that serves its vote
//! to the leader it names (`GET /state/{leader}`) has promised that leader not to
//! confirm anyone else for a lease. So the server stamps the time of the latest such
//! answer in the cell, under the same lock the loop publishes with, and the loop feeds
//! the stamp to the core before every event: no answer naming an old leader can be
//! served once the state has changed without the core having seen its time.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::PeerClient;
use crate::metrics::Metrics;
use crate::net::{Network, PauseGate, Timebase};
use crate::wire::{check_addr, Diag};

/// Longest a connection may take to send a request's headers, counted from the end of
/// the previous answer: it bounds slow or idle clients. Peers' pooled connections are
/// retired sooner by the clients themselves ([`crate::client::IDLE_CONNECTION_TIMEOUT`]),
/// so the server never closes one under them (which would look like a crash).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Notices from the HTTP server to the protocol loop.
pub(crate) enum Inbound {
    /// A peer called `/state/{addr}`.
    Announced(String),
    /// A peer called `/leave/{addr}`.
    LeaveReceived(String),
    /// `/diag` wants the current document.
    Diag(oneshot::Sender<Diag>),
}

/// What the protocol loop publishes for the server, and what the server tells the
/// loop back about serving it. Never locked across an `await`.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// This node's `/state` body.
    pub body: Bytes,
    /// The leader that body names.
    pub leader: Option<String>,
    /// When (the node's monotonic time) the body was last served to `leader` itself;
    /// reset to `None` when the leader changes.
    pub leader_served_at: Option<Duration>,
}

/// The [`Published`] cell the loop and the server share.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishedCell(Arc<Mutex<Published>>);

impl PublishedCell {
    /// A cell holding `body`, which names `leader`.
    pub fn new(body: Bytes, leader: Option<String>) -> Self {
        PublishedCell(Arc::new(Mutex::new(Published {
            body,
            leader,
            leader_served_at: None,
        })))
    }

    /// Lock the cell. A panic elsewhere while it was held left plain data behind,
    /// still usable, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Published> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The body, for `GET /state`.
    fn body(&self) -> Bytes {
        self.lock().body.clone()
    }

    /// The body, to answer `GET /state/{caller}` with. If `caller` is the leader it
    /// names, `now()` (taken under the lock) is stamped as `leader_served_at`.
    fn serve_to(&self, caller: &str, now: impl FnOnce() -> Duration) -> Bytes {
        let mut p = self.lock();
        if p.leader.as_deref() == Some(caller) {
            p.leader_served_at = Some(now());
        }
        p.body.clone()
    }
}

/// What request handlers share.
pub(crate) struct Api<N: Network> {
    /// This node's `/state` body, republished by the loop on every change.
    pub published: PublishedCell,
    /// The node's monotonic time, for the stamps in `published`.
    pub timebase: Timebase,
    /// Requests wait here while the simulator pauses the node.
    pub gate: PauseGate,
    /// Set once the node starts leaving: `/ping` and `/state/{addr}` answer 503.
    pub leaving: Arc<AtomicBool>,
    pub inbound: mpsc::Sender<Inbound>,
    /// For `/probe/{addr}`.
    pub client: PeerClient<N>,
    pub metrics: Arc<Metrics>,
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn json(body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Route one request. Public within the crate for tests.
pub(crate) async fn route<N: Network>(api: &Api<N>, method: &Method, path: &str) -> Resp {
    let path = path.trim_end_matches('/');
    let (head, arg) = match path.strip_prefix('/').unwrap_or(path).split_once('/') {
        Some((h, a)) => (h, Some(a)),
        None => (path.trim_start_matches('/'), None),
    };
    let leaving = api.leaving.load(Ordering::Relaxed);
    if let Some(addr) = arg {
        if let Err(why) = check_addr(addr) {
            let mut r = text(StatusCode::BAD_REQUEST, "");
            *r.body_mut() = Full::new(Bytes::from(format!("invalid address {addr:?}: {why}\n")));
            return r;
        }
    }
    match (method, head, arg) {
        (&Method::GET, "ping", None) if leaving => text(StatusCode::SERVICE_UNAVAILABLE, "leaving"),
        (&Method::GET, "ping", None) => text(StatusCode::OK, "OK"),
        (&Method::GET, "state", None) => json(api.published.body()),
        (&Method::GET, "state", Some(_)) if leaving => {
            text(StatusCode::SERVICE_UNAVAILABLE, "leaving")
        }
        (&Method::GET, "state", Some(addr)) => {
            // Never wait on the loop: under a flood, drop the notice (the caller retries).
            let _ = api.inbound.try_send(Inbound::Announced(addr.to_string()));
            json(api.published.serve_to(addr, || api.timebase.now()))
        }
        (&Method::GET, "diag", None) => {
            let (tx, rx) = oneshot::channel();
            if api.inbound.try_send(Inbound::Diag(tx)).is_err() {
                return text(StatusCode::SERVICE_UNAVAILABLE, "busy");
            }
            match tokio::time::timeout(Duration::from_secs(5), rx).await {
                Ok(Ok(diag)) => match serde_json::to_vec_pretty(&diag) {
                    Ok(mut body) => {
                        body.push(b'\n');
                        json(Bytes::from(body))
                    }
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode diag"),
                },
                _ => text(StatusCode::SERVICE_UNAVAILABLE, "node is stopping"),
            }
        }
        (&Method::POST, "leave", Some(addr)) => {
            let _ = api
                .inbound
                .try_send(Inbound::LeaveReceived(addr.to_string()));
            text(StatusCode::OK, "OK")
        }
        (&Method::GET, "probe", Some(addr)) => match api.client.ping(addr).await {
            Ok(()) => text(StatusCode::OK, "OK"),
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "unreachable"),
        },
        (&Method::GET, "metrics", None) => {
            let mut r = text(StatusCode::OK, "");
            *r.body_mut() = Full::new(Bytes::from(api.metrics.render()));
            r
        }
        (_, "ping" | "state" | "diag" | "leave" | "probe" | "metrics", _) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Accept connections until `cancel` fires, serving each on its own task; on cancel,
/// open connections are shut down gracefully and the function returns once the
/// listener is closed (connection tasks end within a second after that).
pub(crate) async fn serve<N: Network>(
    net: N,
    listener: N::Listener,
    api: Arc<Api<N>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
           biased;
            _ = cancel.cancelled() => break,
            accepted = net.accept(&listener) => match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let api = api.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let api = api.clone();
                async move {
                    api.gate.passed().await;
                    let resp = route(&api, req.method(), req.uri().path()).await;
                    Metrics::add(&api.metrics.requests_served, 1);
                    Metrics::add(
                        &api.metrics.bytes_served,
                        resp.body().size_hint().exact().unwrap_or(0),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(64 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                biased;
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_answer_to_the_leader_named_is_stamped() {
        let cell = PublishedCell::new(Bytes::from_static(b"{}"), Some("a:1".into()));
        let at = Duration::from_millis(7);
        assert_eq!(cell.body(), Bytes::from_static(b"{}"));
        assert_eq!(cell.serve_to("b:1", || at), Bytes::from_static(b"{}"));
        assert_eq!(cell.lock().leader_served_at, None);
        cell.serve_to("a:1", || at);
        assert_eq!(cell.lock().leader_served_at, Some(at));
    }
}

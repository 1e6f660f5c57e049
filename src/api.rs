//! The HTTP API a node serves, compatible with the Python LES.
//!
//! | request | answer | with a key |
//! |---|---|---|
//! | `GET /ping` | `200 OK` (`503` while leaving) | open |
//! | `GET /state` | this node's state JSON | open |
//! | `GET /state/{addr}` | the same; `{addr}` is fetched back and added once it answers; `304` for a matching `If-None-Match`; `429` while the loop has not run since a pause | tag required |
//! | `GET /diag` | `{"state", "member_states", "member_info"}` (and `"lease"` in quorum mode), pretty-printed | open |
//! | `POST /leave/{addr}` | `{addr}` says it is leaving: checked with `{addr}`, then dropped (les extension) | tag required |
//! | `GET /probe/{addr}` | `200` if this node can ping member `{addr}`, `503` if not; `403` for a non-member, never contacted (les extension, SWIM indirect probe); [`crate::wire::PROBE_TIMEOUT_HEADER`] bounds the ping | tag required |
//! | `GET /metrics` | counters in Prometheus text format (les extension) | open |
//! | `POST /step-down` | give up leadership now: `200` and a [`StepDownReply`], `409` if not the leader (les extension); on the admin listener when there is one | tag required whenever keyed |
//!
//! "Open" requests change nothing and make the node contact no one, so they are served
//! to anyone (and on the admin listener, `--admin-addr`, which serves only those and
//! the operator's `POST /step-down`; `/diag`, `/metrics` and `/step-down` then move
//! there). A step-down needs a valid tag whenever the node is keyed, even while it
//! accepts unsigned gossip (`accept_unsigned`): no peer ever sends one. Every other request is checked by
//! [`crate::auth`]: the cluster name always, the tag when keyed. A refused request gets
//! 401 (403 for another cluster), is counted in `/metrics`, logged at a rate-limited
//! warning naming its source, and changes nothing.
//!
//! Trailing slashes are accepted everywhere. The server never blocks on the protocol
//! loop: `/state` is served from a pre-serialized snapshot the loop publishes in a
//! `Published` cell, and notices for the loop go through a bounded queue (dropped,
//! not waited on, when full). Request bodies are refused (413) unread. Connections are
//! capped and slow or silent clients cut off (`listen`).
//!
//! Quorum mode needs one more thing from the server: a follower that serves its vote
//! to the leader it names (`GET /state/{leader}`) has promised that leader not to
//! confirm anyone else for a lease. So the server stamps the time of the latest such
//! answer in the cell, under the same lock the loop publishes with, and the loop feeds
//! the stamp to the core before every event: no answer naming an old leader can be
//! served once the state has changed without the core having seen its time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, IF_NONE_MATCH};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::auth::{Auth, Rejection, Verified, AUTH_HEADER, CLUSTER_HEADER};
use crate::client::PeerClient;
use crate::metrics::Metrics;
use crate::net::{Network, PauseGate, Timebase, WallClock};
use crate::wire::{check_addr, state_etag, Diag, StepDownReply};

pub(crate) mod listen;

pub use listen::{FIRST_REQUEST_TIMEOUT, HEADER_READ_TIMEOUT};

/// Notices from the HTTP server to the protocol loop.
pub(crate) enum Inbound {
    /// A peer called `/state/{addr}`.
    Announced(String),
    /// A peer called `/leave/{addr}`.
    LeaveReceived(String),
    /// `/diag` wants the current document.
    Diag(oneshot::Sender<Diag>),
    /// `POST /step-down` (or a relinquish schedule): give up leadership now if this
    /// node leads, and say what happened. Every backend's loop answers it.
    StepDown(oneshot::Sender<StepDownReply>),
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
    /// The members the body lists (this node first): `/probe` targets only these.
    pub members: Vec<String>,
    /// [`state_etag`] of `body`.
    pub etag: String,
    /// When (monotonic time) the loop last handled an event, and how old that may be
    /// before the body counts as stale: a node resumed from a pause must not hand out
    /// the state it had before (its old start time) ahead of its loop noticing the
    /// pause and taking a new one. `None`: always fresh.
    pub alive: Option<(Duration, Duration)>,
}

/// The [`Published`] cell the loop and the server share.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishedCell(Arc<Mutex<Published>>);

impl PublishedCell {
    /// A cell holding `body`, which names `leader`.
    pub fn new(body: Bytes, leader: Option<String>) -> Self {
        PublishedCell(Arc::new(Mutex::new(Published {
            etag: state_etag(&body),
            body,
            leader,
            leader_served_at: None,
            members: Vec::new(),
            alive: None,
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

    /// The body, to answer `GET /state/{caller}` with, and its etag. If `caller` is
    /// the leader it names, `now()` (taken under the lock) is stamped as
    /// `leader_served_at`: a `304` answer serves the same vote as the body.
    /// `None` while the body is stale (see [`Published::alive`]); nothing is stamped then.
    fn serve_to(&self, caller: &str, now: impl FnOnce() -> Duration) -> Option<(Bytes, String)> {
        let mut p = self.lock();
        let now = now();
        if p.alive
            .is_some_and(|(at, stale_after)| now.saturating_sub(at) > stale_after)
        {
            return None;
        }
        if p.leader.as_deref() == Some(caller) {
            p.leader_served_at = Some(now);
        }
        Some((p.body.clone(), p.etag.clone()))
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
    /// Checks requests and tags answers.
    pub auth: Arc<Auth>,
    /// The wall clock request timestamps are checked against.
    pub clock: Arc<dyn WallClock>,
    /// Whether `/diag` and `/metrics` are served on a separate admin listener (and so
    /// not on the gossip one).
    pub admin_elsewhere: bool,
    /// Rate limit of the warnings about refused requests.
    pub refusals: RefusalLog,
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The gossip port: the whole API.
    Gossip,
    /// `--admin-addr`: only the open, read-only requests.
    Admin,
}

/// An answer before it is tagged and sent.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
}

impl Answer {
    fn text(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Answer {
            status,
            content_type: "text/plain",
            body: body.into(),
        }
    }

    fn json(body: Bytes) -> Self {
        Answer {
            status: StatusCode::OK,
            content_type: "application/json",
            body,
        }
    }

    /// `304 Not Modified`: the caller's copy, whose etag it sent, is current. `body`
    /// holds that etag until the answer is tagged (so the tag covers it: a request
    /// whose `If-None-Match` was altered on the way gets an answer its sender cannot
    /// verify), and is then dropped, as a 304 has no body.
    fn not_modified(etag: String) -> Self {
        Answer {
            status: StatusCode::NOT_MODIFIED,
            content_type: "application/json",
            body: Bytes::from(etag),
        }
    }
}

type Resp = Response<Full<Bytes>>;

/// A request split into what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target<'a> {
    Ping,
    State,
    StateFor(&'a str),
    Diag,
    Leave(&'a str),
    Probe(&'a str),
    Metrics,
    StepDown,
    /// A known resource with the wrong method.
    WrongMethod,
    NotFound,
    BadAddr(&'a str, String),
}

impl<'a> Target<'a> {
    fn parse(method: &Method, path: &'a str) -> Self {
        let path = path.trim_end_matches('/');
        let path = path.strip_prefix('/').unwrap_or(path);
        let (head, arg) = match path.split_once('/') {
            Some((h, a)) => (h, Some(a)),
            None => (path, None),
        };
        if let Some(addr) = arg {
            if let Err(why) = check_addr(addr) {
                return Target::BadAddr(addr, why.to_string());
            }
        }
        match (method, head, arg) {
            (&Method::GET, "ping", None) => Target::Ping,
            (&Method::GET, "state", None) => Target::State,
            (&Method::GET, "state", Some(a)) => Target::StateFor(a),
            (&Method::GET, "diag", None) => Target::Diag,
            (&Method::POST, "leave", Some(a)) => Target::Leave(a),
            (&Method::GET, "probe", Some(a)) => Target::Probe(a),
            (&Method::GET, "metrics", None) => Target::Metrics,
            (&Method::POST, "step-down", None) => Target::StepDown,
            (_, "ping" | "state" | "diag" | "leave" | "probe" | "metrics" | "step-down", _) => {
                Target::WrongMethod
            }
            _ => Target::NotFound,
        }
    }

    /// Changes nothing and contacts no one: served without a tag, on either listener.
    fn is_open(&self) -> bool {
        !matches!(
            self,
            Target::StateFor(_) | Target::Leave(_) | Target::Probe(_) | Target::StepDown
        )
    }

    /// Served on the admin listener: the open requests, and the operator's step-down.
    fn on_admin(&self) -> bool {
        self.is_open() || *self == Target::StepDown
    }

    /// Must carry a valid tag whenever the node has a keyring, even while it accepts
    /// unsigned gossip (`accept_unsigned`): an unsigned step-down is never a peer's.
    fn always_signed(&self) -> bool {
        *self == Target::StepDown
    }
}

/// Serve one request that came in on `listener` from `peer`: refuse a body, check the
/// request's cluster and tag unless it is open, route it, tag the answer. Also says
/// whether the request came from a peer (see [`from_peer`]).
pub(crate) async fn handle<N: Network>(
    api: &Api<N>,
    req: &Request<Incoming>,
    peer: SocketAddr,
    listener: Listener,
) -> (Resp, bool) {
    let method = req.method();
    let path = req.uri().path();
    let target = Target::parse(method, path);
    let answer = if req.body().size_hint().upper() != Some(0) {
        Answer::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted\n",
        )
    } else if listener == Listener::Admin && !target.on_admin() {
        Answer::text(StatusCode::NOT_FOUND, "not served on the admin address\n")
    } else {
        let header = |name| req.headers().get(name).map(|v| v.to_str().unwrap_or(""));
        let signed_path = req.uri().path_and_query().map_or(path, |p| p.as_str());
        let now = api.clock.now_epoch().max(0.0) as u64;
        let verdict = api.auth.verify_request(
            method.as_str(),
            signed_path,
            header(AUTH_HEADER),
            header(CLUSTER_HEADER),
            now,
        );
        let keyed = api.auth.settings().keyring.is_some();
        let verified = match verdict {
            Ok(Verified::Unsigned) if keyed && target.always_signed() => {
                return (api.refuse(Rejection::Unsigned, peer, method, path), false)
            }
            Ok(v) => v,
            Err(_) if target.is_open() => Verified::Unsigned,
            Err(why) => return (api.refuse(why, peer, method, path), false),
        };
        let trusted = from_peer(&api.auth, &verified);
        let asked = Asked {
            if_none_match: header(IF_NONE_MATCH.as_str()),
            probe_timeout: header(crate::wire::PROBE_TIMEOUT_HEADER),
        };
        let answer = route(api, target, listener, asked).await;
        return (api.finish(answer, &verified), trusted);
    };
    (api.finish(answer, &Verified::Unsigned), false)
}

/// Whether a request that passed as `verified` shows its connection is a peer's, which
/// the connection cap then keeps over silent ones: with a key only a signed request
/// does; without one any request does (anyone may be a peer then).
fn from_peer(auth: &Auth, verified: &Verified) -> bool {
    matches!(verified, Verified::Signed { .. }) || auth.settings().keyring.is_none()
}

impl<N: Network> Api<N> {
    /// Count and log a refused request, and answer it (untagged).
    fn refuse(&self, why: Rejection, peer: SocketAddr, method: &Method, path: &str) -> Resp {
        self.metrics.count_rejection(why);
        self.refusals.warn(peer, why, method, path);
        let status = match why {
            Rejection::Cluster => StatusCode::FORBIDDEN,
            // Not 503, which a peer reads as "leaving" (and only when tagged).
            Rejection::Busy => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::UNAUTHORIZED,
        };
        let body = match why {
            Rejection::Cluster => {
                format!("{why}: this node is in cluster {:?}\n", self.auth.cluster())
            }
            _ => format!("{why}\n"),
        };
        self.finish(Answer::text(status, body), &Verified::Unsigned)
    }

    /// Build the response, tagged when the request was.
    fn finish(&self, answer: Answer, verified: &Verified) -> Resp {
        let tag = self
            .auth
            .sign_answer(verified, answer.status.as_u16(), &answer.body);
        let body = match answer.status {
            StatusCode::NOT_MODIFIED => Bytes::new(),
            _ => answer.body,
        };
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = answer.status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
        if let Some(tag) = tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
            r.headers_mut().insert(AUTH_HEADER, tag);
        }
        r
    }
}

/// The request headers that shape an answer.
struct Asked<'a> {
    /// `If-None-Match`: the etag of the state document the caller holds.
    if_none_match: Option<&'a str>,
    /// [`crate::wire::PROBE_TIMEOUT_HEADER`], on `/probe/{addr}`.
    probe_timeout: Option<&'a str>,
}

/// Route one request that passed its checks.
async fn route<N: Network>(
    api: &Api<N>,
    target: Target<'_>,
    listener: Listener,
    asked: Asked<'_>,
) -> Answer {
    let leaving = api.leaving.load(Ordering::Relaxed);
    let admin_only = api.admin_elsewhere && listener == Listener::Gossip;
    match target {
        Target::BadAddr(addr, why) => Answer::text(
            StatusCode::BAD_REQUEST,
            format!("invalid address {addr:?}: {why}\n"),
        ),
        Target::Ping if leaving => Answer::text(StatusCode::SERVICE_UNAVAILABLE, "leaving"),
        Target::Ping => Answer::text(StatusCode::OK, "OK"),
        Target::State => Answer::json(api.published.body()),
        Target::StateFor(_) if leaving => Answer::text(StatusCode::SERVICE_UNAVAILABLE, "leaving"),
        Target::StateFor(addr) => {
            // Never wait on the loop: under a flood, drop the notice (the caller retries).
            let _ = api.inbound.try_send(Inbound::Announced(addr.to_string()));
            match api.published.serve_to(addr, || api.timebase.now()) {
                // Resumed from a pause, the loop not caught up: busy, ask again.
                None => Answer::text(StatusCode::TOO_MANY_REQUESTS, "catching up\n"),
                Some((_, etag)) if asked.if_none_match == Some(etag.as_str()) => {
                    Answer::not_modified(etag)
                }
                Some((body, _)) => Answer::json(body),
            }
        }
        Target::Diag | Target::Metrics | Target::StepDown if admin_only => Answer::text(
            StatusCode::NOT_FOUND,
            "served on the admin address (--admin-addr)\n",
        ),
        Target::Diag => diag(api).await,
        Target::StepDown => step_down(api).await,
        Target::Leave(addr) => {
            let _ = api
                .inbound
                .try_send(Inbound::LeaveReceived(addr.to_string()));
            Answer::text(StatusCode::OK, "OK")
        }
        Target::Probe(addr) if !api.published.lock().members.iter().any(|m| m == addr) => {
            Answer::text(StatusCode::FORBIDDEN, "only members are probed\n")
        }
        Target::Probe(addr) => {
            let within = asked
                .probe_timeout
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|ms| Duration::from_millis(ms).max(crate::core::PING_TIMEOUT_FLOOR));
            let pinged = match within {
                Some(t) => api.client.ping_within(addr, t).await,
                None => api.client.ping(addr).await,
            };
            match pinged {
                Ok(()) => Answer::text(StatusCode::OK, "OK"),
                Err(_) => Answer::text(StatusCode::SERVICE_UNAVAILABLE, "unreachable"),
            }
        }
        Target::Metrics => Answer {
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ..Answer::text(StatusCode::OK, api.metrics.render())
        },
        Target::WrongMethod => Answer::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        Target::NotFound => Answer::text(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn diag<N: Network>(api: &Api<N>) -> Answer {
    match ask_loop(api, Inbound::Diag).await {
        Ok(diag) => pretty_json(StatusCode::OK, &diag),
        Err(answer) => answer,
    }
}

/// `POST /step-down`: `200` with the loop's reply when this node stepped down, `409`
/// (with the same document) when it is not the leader.
async fn step_down<N: Network>(api: &Api<N>) -> Answer {
    match ask_loop(api, Inbound::StepDown).await {
        Ok(reply) if reply.was_leader => pretty_json(StatusCode::OK, &reply),
        Ok(reply) => pretty_json(StatusCode::CONFLICT, &reply),
        Err(answer) => answer,
    }
}

/// Ask the protocol loop a question (without waiting for room in its queue) and wait
/// for its answer; `Err` is what to answer when there is none.
async fn ask_loop<N: Network, T>(
    api: &Api<N>,
    question: impl FnOnce(oneshot::Sender<T>) -> Inbound,
) -> Result<T, Answer> {
    let (tx, rx) = oneshot::channel();
    if api.inbound.try_send(question(tx)).is_err() {
        return Err(Answer::text(StatusCode::SERVICE_UNAVAILABLE, "busy"));
    }
    match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(answer)) => Ok(answer),
        _ => Err(Answer::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "node is stopping",
        )),
    }
}

fn pretty_json(status: StatusCode, doc: &impl serde::Serialize) -> Answer {
    match serde_json::to_vec_pretty(doc) {
        Ok(mut body) => {
            body.push(b'\n');
            Answer {
                status,
                ..Answer::json(Bytes::from(body))
            }
        }
        Err(_) => Answer::text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode answer"),
    }
}

/// How often a source of refused requests is named in the log.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Warnings about refused requests, at most one per source address per
/// [`REFUSAL_LOG_EVERY`], each saying how many were not logged since.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog(Mutex<HashMap<IpAddr, (Instant, u64)>>);

impl RefusalLog {
    fn warn(&self, peer: SocketAddr, why: Rejection, method: &Method, path: &str) {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if seen.len() >= 1024 {
            seen.retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_LOG_EVERY);
        }
        if let Some((at, quiet)) = seen.get_mut(&peer.ip()) {
            if now.duration_since(*at) < REFUSAL_LOG_EVERY {
                *quiet += 1;
                return;
            }
            let suppressed = std::mem::take(quiet);
            *at = now;
            tracing::warn!(source = %peer, %method, path, reason = %why, suppressed,
                "refused a request (and {suppressed} more from this address not logged)");
        } else if seen.len() < 1024 {
            seen.insert(peer.ip(), (now, 0));
            tracing::warn!(source = %peer, %method, path, reason = %why, "refused a request");
        }
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
        let served = cell.serve_to("b:1", || at).expect("fresh");
        assert_eq!(served, (Bytes::from_static(b"{}"), state_etag(b"{}")));
        assert_eq!(cell.lock().leader_served_at, None);
        cell.serve_to("a:1", || at);
        assert_eq!(cell.lock().leader_served_at, Some(at));
    }

    #[test]
    fn a_state_older_than_the_pause_threshold_is_not_served_nor_stamped() {
        let cell = PublishedCell::new(Bytes::from_static(b"{}"), Some("a:1".into()));
        let ms = Duration::from_millis;
        cell.lock().alive = Some((ms(1000), ms(450)));
        assert!(
            cell.serve_to("a:1", || ms(1450)).is_some(),
            "at the threshold"
        );
        assert_eq!(cell.lock().leader_served_at, Some(ms(1450)));
        assert!(cell.serve_to("a:1", || ms(1451)).is_none(), "past it");
        assert_eq!(
            cell.lock().leader_served_at,
            Some(ms(1450)),
            "no vote served"
        );
    }
}

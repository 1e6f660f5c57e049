//! The HTTP client a node uses to talk to its peers.
//!
//! One pooled keep-alive client (hyper-util's) per node, over whatever [`Network`] the
//! node runs on. Every request has a deadline (connect included) and every answer body
//! is capped, so a peer that hangs or sends a flood costs a bounded amount of time and
//! memory. Failures are classified for the core ([`Failure`]): a connection that cannot
//! be made is a strong signal, a timeout a weak one.
//!
//! With a keyring every request is tagged and every answer checked against its
//! request's tag ([`crate::auth`]); the sender's cluster name rides along in a header,
//! and a state from another cluster is refused, keyed or not.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::auth::{Auth, Rejection, RequestTag, AUTH_HEADER, CLUSTER_HEADER};
use crate::core::Failure;
use crate::metrics::Metrics;
use crate::net::{Network, SystemClock, WallClock};
use crate::wire::{state_etag, PeerState, StateParseError, StepDownReply, PROBE_TIMEOUT_HEADER};

/// How long a pooled connection may sit idle before the client closes it; shorter
/// than [`crate::api::HEADER_READ_TIMEOUT`].
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer body accepted from a peer (a 10,000-member list is about 300 KB).
pub const MAX_BODY: usize = 1 << 20;

/// What went wrong with one request, with enough detail for a log line.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    /// No connection could be made (refused, unreachable, bad address).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No complete answer within the request deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke mid-request, twice.
    #[error("connection failed mid-request: {0}")]
    Broken(String),
    /// A status other than success.
    #[error("answered HTTP {0}")]
    Status(StatusCode),
    /// 401 or 403: the peer refused our tag or our cluster name.
    #[error("refused our request (HTTP {status}: {reason}); do both nodes have the same key and cluster name?")]
    Refused {
        /// 401 or 403.
        status: StatusCode,
        /// The peer's reason, from its answer body (at most 200 bytes).
        reason: String,
    },
    /// 409, with its (authenticated) body: the request conflicts with the node's
    /// state (`POST /step-down` to a node that is not the leader).
    #[error("answered HTTP 409 Conflict")]
    Conflict(Bytes),
    /// The answer's tag is missing or wrong.
    #[error("answer failed authentication: {0}")]
    Auth(Rejection),
    /// The peer's state names another cluster.
    #[error("belongs to cluster {theirs:?}, not {ours:?}")]
    Cluster {
        /// The peer's cluster name (empty for none).
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The body could not be read, or was over [`MAX_BODY`].
    #[error("answer body unreadable or over {MAX_BODY} bytes: {0}")]
    Body(String),
    /// The body is not a valid state.
    #[error("{0}")]
    State(#[from] StateParseError),
}

impl ContactError {
    /// How the core should weigh this failure.
    pub fn failure(&self) -> Failure {
        match self {
            ContactError::Connect(_) => Failure::Refused,
            // An overloaded peer (429: too many recent requests to check) is up but slow:
            // as weak a signal as a timeout.
            ContactError::Timeout(_)
            | ContactError::Broken(_)
            | ContactError::Status(hyper::StatusCode::TOO_MANY_REQUESTS) => Failure::Timeout,
            // What a node answers on /state/{addr} while it leaves (see `api`): its own
            // word that it has released leadership.
            ContactError::Status(hyper::StatusCode::SERVICE_UNAVAILABLE) => Failure::Leaving,
            ContactError::Status(_)
            | ContactError::Refused { .. }
            | ContactError::Conflict(_)
            | ContactError::Auth(_)
            | ContactError::Cluster { .. }
            | ContactError::Body(_)
            | ContactError::State(_) => Failure::BadResponse,
        }
    }
}

/// Pooled HTTP client for peer requests.
#[derive(Clone)]
pub struct PeerClient<N: Network> {
    http: Client<Connector<N>, Empty<Bytes>>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    auth: Arc<Auth>,
    clock: Arc<dyn WallClock>,
    /// Each peer's last state and its etag, for `If-None-Match`.
    states: Arc<Mutex<HashMap<String, (String, PeerState)>>>,
}

/// What a node's client shares with the rest of the node (see [`PeerClient::for_node`]).
pub struct ClientLinks {
    /// Where requests and bytes are counted.
    pub metrics: Arc<Metrics>,
    /// Where peers whose connection the other side closed are reported
    /// (see [`Event::ConnectionLost`]).
    ///
    /// [`Event::ConnectionLost`]: crate::core::Event::ConnectionLost
    pub lost: Option<mpsc::UnboundedSender<String>>,
    /// Tags requests and checks answers; also the cluster name.
    pub auth: Arc<Auth>,
    /// The wall clock requests are timestamped with.
    pub clock: Arc<dyn WallClock>,
}

impl<N: Network> PeerClient<N> {
    /// An unkeyed client with no cluster name whose every request must complete within
    /// `timeout` (what `les status` uses).
    pub fn new(net: N, timeout: Duration) -> Self {
        Self::for_node(
            net,
            timeout,
            ClientLinks {
                metrics: Arc::default(),
                lost: None,
                auth: Arc::new(Auth::new("", Default::default())),
                clock: Arc::new(SystemClock),
            },
        )
    }

    /// A node's client: counts in `links.metrics`, reports lost connections, tags
    /// requests and checks answers with `links.auth`.
    pub fn for_node(net: N, timeout: Duration, links: ClientLinks) -> Self {
        let ClientLinks {
            metrics,
            lost,
            auth,
            clock,
        } = links;
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            // Retire idle connections well before the server's header-read timeout
            // (which also bounds idle keep-alive gaps) closes them: a close by the peer
            // is reported as a possible crash, a close of our own is not.
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
            .pool_max_idle_per_host(2)
            .build(Connector { net, lost });
        PeerClient {
            http,
            timeout,
            metrics,
            auth,
            clock,
            states: Arc::default(),
        }
    }

    /// `GET /state/{me}` at `addr`: fetch its state and announce ourselves. When we
    /// hold a copy of its last state, the request carries that copy's etag and a peer
    /// whose state has not changed answers `304` with no body: the copy is returned.
    pub async fn fetch_state(&self, addr: &str, me: &str) -> Result<PeerState, ContactError> {
        let cached = self
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(addr)
            .cloned();
        let path = format!("/state/{me}");
        let etag = cached.as_ref().map(|(etag, _)| etag.as_str());
        let body = match self
            .request_with(Method::GET, addr, &path, etag, None)
            .await?
        {
            Reply::NotModified => {
                // Only sent when we had a copy, so there is one.
                return cached
                    .map(|(_, s)| s)
                    .ok_or(ContactError::Status(StatusCode::NOT_MODIFIED));
            }
            Reply::Body(body) => body,
        };
        let state = PeerState::from_json(&body)?;
        let theirs = state.cluster.as_deref().unwrap_or("");
        if theirs != self.auth.cluster() {
            return Err(ContactError::Cluster {
                theirs: theirs.to_string(),
                ours: self.auth.cluster().to_string(),
            });
        }
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if states.len() >= MAX_CACHED_STATES && !states.contains_key(addr) {
            states.clear();
        }
        states.insert(addr.to_string(), (state_etag(&body), state.clone()));
        Ok(state)
    }

    /// `GET /ping` at `addr`.
    pub async fn ping(&self, addr: &str) -> Result<(), ContactError> {
        self.request(Method::GET, addr, "/ping").await.map(|_| ())
    }

    /// `GET /ping` at `addr`, failing with [`ContactError::Timeout`] after `timeout` (or
    /// the request timeout, whichever is shorter).
    pub async fn ping_within(&self, addr: &str, timeout: Duration) -> Result<(), ContactError> {
        let timeout = timeout.min(self.timeout);
        match tokio::time::timeout(timeout, self.ping(addr)).await {
            Ok(r) => r,
            Err(_) => Err(ContactError::Timeout(timeout)),
        }
    }

    /// `GET /probe/{target}` at `via`: does `via` reach `target`? `within` asks the
    /// helper to give its ping that long at most (les helpers honour it, down to
    /// [`crate::core::PING_TIMEOUT_FLOOR`]; Python ones use their own timeout).
    pub async fn probe(
        &self,
        via: &str,
        target: &str,
        within: Option<Duration>,
    ) -> Result<bool, ContactError> {
        let path = format!("/probe/{target}");
        match self
            .request_with(Method::GET, via, &path, None, within)
            .await
            .and_then(Reply::into_body)
        {
            Ok(_) => Ok(true),
            Err(ContactError::Status(StatusCode::SERVICE_UNAVAILABLE)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /leave/{me}` at `addr`.
    pub async fn send_leave(&self, addr: &str, me: &str) -> Result<(), ContactError> {
        self.request(Method::POST, addr, &format!("/leave/{me}"))
            .await
            .map(|_| ())
    }

    /// `POST /step-down` at `addr` (`les step-down`): the node's reply, whether it
    /// stepped down (`200`) or was not the leader (`409`, `was_leader: false`).
    pub async fn step_down(&self, addr: &str) -> Result<StepDownReply, ContactError> {
        let body = match self.request(Method::POST, addr, "/step-down").await {
            Ok(body) | Err(ContactError::Conflict(body)) => body,
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&body)
            .map_err(|e| ContactError::Body(format!("not a step-down reply: {e}")))
    }

    /// `GET {path}` at `addr`, returning the raw body (used by `les status`).
    pub async fn get(&self, addr: &str, path: &str) -> Result<Bytes, ContactError> {
        self.request(Method::GET, addr, path).await
    }

    /// One request with its deadline. A connection that breaks mid-request (a pooled
    /// connection whose peer just died) is retried once on a fresh connection within the
    /// same deadline, so a dead peer shows as refused (strong) rather than as a broken
    /// exchange (weak).
    async fn request(&self, method: Method, addr: &str, path: &str) -> Result<Bytes, ContactError> {
        self.request_with(method, addr, path, None, None)
            .await
            .and_then(Reply::into_body)
    }

    /// [`PeerClient::request`], with an `If-None-Match` header if `etag` is set and a
    /// [`PROBE_TIMEOUT_HEADER`] if `probe` is.
    async fn request_with(
        &self,
        method: Method,
        addr: &str,
        path: &str,
        etag: Option<&str>,
        probe: Option<Duration>,
    ) -> Result<Reply, ContactError> {
        Metrics::add(&self.metrics.requests_sent, 1);
        let attempts = async {
            match self.exchange(method.clone(), addr, path, etag, probe).await {
                Err(ContactError::Broken(_)) => {
                    self.exchange(method, addr, path, etag, probe).await
                }
                other => other,
            }
        };
        let result = tokio::time::timeout(self.timeout, attempts)
            .await
            .map_err(|_| ContactError::Timeout(self.timeout))
            .and_then(|r| r);
        match &result {
            Ok(Reply::Body(body)) => Metrics::add(&self.metrics.bytes_received, body.len() as u64),
            Ok(Reply::NotModified) => {}
            Err(_) => Metrics::add(&self.metrics.requests_failed, 1),
        }
        result
    }

    async fn exchange(
        &self,
        method: Method,
        addr: &str,
        path: &str,
        etag: Option<&str>,
        probe: Option<Duration>,
    ) -> Result<Reply, ContactError> {
        let uri: Uri = format!("http://{addr}{path}")
            .parse()
            .map_err(|e| ContactError::Connect(format!("bad address {addr:?}: {e}")))?;
        // Tagged per attempt: a retry is a new request with a new nonce.
        let now = self.clock.now_epoch().max(0.0) as u64;
        let tag = self.auth.sign_request(method.as_str(), path, now);
        let mut req = Request::builder().method(method).uri(uri).header(
            hyper::header::USER_AGENT,
            concat!("les/", env!("CARGO_PKG_VERSION")),
        );
        if !self.auth.cluster().is_empty() {
            req = req.header(CLUSTER_HEADER, self.auth.cluster());
        }
        if let Some(t) = &tag {
            req = req.header(AUTH_HEADER, &t.header);
        }
        if let Some(e) = etag {
            req = req.header(hyper::header::IF_NONE_MATCH, e);
        }
        if let Some(t) = probe {
            req = req.header(PROBE_TIMEOUT_HEADER, t.as_millis().to_string());
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| ContactError::Connect(e.to_string()))?;
        let resp = self.http.request(req).await.map_err(|e| {
            if e.is_connect() {
                ContactError::Connect(error_chain(&e))
            } else {
                ContactError::Broken(error_chain(&e))
            }
        })?;
        let status = resp.status();
        let answer_tag = resp
            .headers()
            .get(AUTH_HEADER)
            .map(|v| v.to_str().unwrap_or("").to_string());
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ContactError::Body(e.to_string()))?
            .to_bytes();
        self.check_answer(tag.as_ref(), status, answer_tag.as_deref(), body, etag)
    }

    /// Accept an answer only if it is authentic: a success, a 304 (whose tag covers the
    /// etag we sent, `etag`), or a 503 (which says the peer is leaving and may end a
    /// promise), must carry a tag bound to our request when we are keyed. Other
    /// failures are failures whoever sent them.
    fn check_answer(
        &self,
        tag: Option<&RequestTag>,
        status: StatusCode,
        answer_tag: Option<&str>,
        body: Bytes,
        etag: Option<&str>,
    ) -> Result<Reply, ContactError> {
        if status == StatusCode::NOT_MODIFIED {
            let Some(etag) = etag else {
                return Err(ContactError::Status(status)); // we asked for no such thing
            };
            self.auth
                .verify_answer(tag, status.as_u16(), answer_tag, etag.as_bytes())
                .map_err(ContactError::Auth)?;
            return Ok(Reply::NotModified);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let reason = String::from_utf8_lossy(&body[..body.len().min(200)]);
            return Err(ContactError::Refused {
                status,
                reason: reason.trim().to_string(),
            });
        }
        let believed = [StatusCode::SERVICE_UNAVAILABLE, StatusCode::CONFLICT];
        if status.is_success() || believed.contains(&status) {
            self.auth
                .verify_answer(tag, status.as_u16(), answer_tag, &body)
                .map_err(ContactError::Auth)?;
        }
        match status {
            s if s.is_success() => Ok(Reply::Body(body)),
            StatusCode::CONFLICT => Err(ContactError::Conflict(body)),
            _ => Err(ContactError::Status(status)),
        }
    }
}

/// A successful answer.
enum Reply {
    /// `2xx`, with its body.
    Body(Bytes),
    /// `304`: the copy whose etag we sent is current.
    NotModified,
}

impl Reply {
    /// The body of an answer to a request that sent no etag, for which a `304` is an
    /// error.
    fn into_body(self) -> Result<Bytes, ContactError> {
        match self {
            Reply::Body(body) => Ok(body),
            Reply::NotModified => Err(ContactError::Status(StatusCode::NOT_MODIFIED)),
        }
    }
}

/// Most peer states kept for `If-None-Match` (one per address contacted); past it the
/// cache starts over, costing one full answer per peer.
const MAX_CACHED_STATES: usize = 16_384;

/// The innermost cause is the useful part of hyper's error chain ("Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// Adapts a [`Network`] to the connector interface hyper-util's pooled client wants.
#[derive(Clone)]
pub struct Connector<N> {
    net: N,
    lost: Option<mpsc::UnboundedSender<String>>,
}

impl<N: Network> tower_service::Service<Uri> for Connector<N> {
    type Response = TokioIo<Watched<N::Stream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let net = self.net.clone();
        let lost = self.lost.clone();
        Box::pin(async move {
            let authority = uri.authority().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "URI has no host:port")
            })?;
            let addr = authority.as_str().to_owned();
            let stream = net.connect(addr.clone()).await?;
            Ok(TokioIo::new(Watched {
                inner: stream,
                peer: addr,
                lost,
            }))
        })
    }
}

/// A stream that reports its peer once on `lost` when a read finds the connection
/// closed or broken. hyper keeps reading idle pooled connections to notice exactly
/// that, so a peer process that dies is reported within moments, not at the next round.
/// hyper uses it wrapped in [`TokioIo`].
pub struct Watched<S> {
    inner: S,
    peer: String,
    lost: Option<mpsc::UnboundedSender<String>>,
}

impl<S> Watched<S> {
    fn report_lost(&mut self) {
        if let Some(tx) = self.lost.take() {
            let _ = tx.send(std::mem::take(&mut self.peer));
        }
    }
}

/// What hyper-util's pool asks of a connection; `TokioIo<Watched<S>>` forwards to it.
impl<S> Connection for Watched<S> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let (before, room) = (buf.filled().len(), buf.remaining());
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) if room > 0 && buf.filled().len() == before => this.report_lost(),
            Poll::Ready(Err(_)) => this.report_lost(),
            _ => {}
        }
        res
    }
}

crate::net::forward_async_write!(Watched);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_weighed_by_what_they_say_about_the_peer() {
        let status = |s: StatusCode| ContactError::Status(s).failure();
        assert_eq!(status(StatusCode::SERVICE_UNAVAILABLE), Failure::Leaving);
        assert_eq!(status(StatusCode::TOO_MANY_REQUESTS), Failure::Timeout);
        assert_eq!(status(StatusCode::NOT_FOUND), Failure::BadResponse);
        let refused = ContactError::Refused {
            status: StatusCode::UNAUTHORIZED,
            reason: "forged".into(),
        };
        assert_eq!(refused.failure(), Failure::BadResponse);
        assert_eq!(
            ContactError::Auth(Rejection::Unsigned).failure(),
            Failure::BadResponse,
            "an untagged answer from a keyed peer is not believed"
        );
    }
}

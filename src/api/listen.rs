//! Accepting connections, with the limits that keep a flood from costing the node
//! its memory or its peers.
//!
//! - **A cap** on open connections (`max_connections`). When it is reached, the oldest
//!   connection that has not yet proven to be a peer's is closed to make room; only if
//!   every open connection has proven itself is the new one closed. A connection proves
//!   itself with a request that passed its checks, and with a key only a signed request
//!   counts, so an outsider's connections (idle, half-sent or asking `/ping`) are
//!   always the first to go. A peer's connection sends its request at once and is never
//!   the oldest unproven one for long.
//! - **Silent connections are cheap.** Until a connection's first byte arrives it is
//!   only a socket and a task waiting on it, with no HTTP buffers (hyper allocates
//!   those per connection); it must send a complete first request within
//!   [`FIRST_REQUEST_TIMEOUT`] or it is closed.
//! - **Keep-alive gaps** are bounded by [`HEADER_READ_TIMEOUT`]. With a key, a
//!   connection to the gossip port that has made only open requests (`/ping`,
//!   `/metrics`…) never proves itself, so it is closed [`FIRST_REQUEST_TIMEOUT`] after
//!   it opened; monitoring belongs on the admin listener, where any request proves a
//!   connection.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{handle, Api, Listener};
use crate::metrics::Metrics;
use crate::net::Network;

/// Longest a connection may take to send a request's headers, counted from the end of
/// the previous answer: it bounds idle keep-alive connections. Peers' pooled
/// connections are retired sooner by the clients themselves
/// ([`crate::client::IDLE_CONNECTION_TIMEOUT`]), so the server never closes one under
/// them (which would look like a crash).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a new connection may take to deliver its first complete request. A peer
/// sends its request as soon as it has connected, so this only cuts off clients that
/// connect and say nothing (or too little).
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Open connections, and those that have not sent a request yet (oldest first).
pub(crate) struct Slots {
    max: usize,
    open: AtomicUsize,
    unproven: Mutex<VecDeque<Weak<Slot>>>,
}

/// One connection's place under the cap.
struct Slot {
    proven: AtomicBool,
    evict: CancellationToken,
    /// Set once the place has been given back (at eviction, or when the guard drops),
    /// so it is given back once.
    released: AtomicBool,
}

impl Slot {
    fn release(&self, slots: &Slots) {
        if !self.released.swap(true, Ordering::Relaxed) {
            slots.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Frees its connection's place when dropped.
struct SlotGuard {
    slots: Arc<Slots>,
    slot: Arc<Slot>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slot.release(&self.slots);
    }
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            open: AtomicUsize::new(0),
            unproven: Mutex::new(VecDeque::new()),
        })
    }

    /// A place for a new connection, if there is one or an unproven connection could
    /// be closed for it. An evicted connection's place is given back at once; the
    /// caller should yield so that its task closes the socket before the next accept.
    fn admit(self: &Arc<Self>) -> Admission {
        let mut queue = self.unproven.lock().unwrap_or_else(PoisonError::into_inner);
        let evicted = self.open.load(Ordering::Relaxed) >= self.max;
        if evicted {
            match evict_oldest(&mut queue) {
                Some(slot) => slot.release(self),
                None => return Admission::Refused,
            }
        }
        if queue.len() > 2 * self.max {
            queue.retain(|w| {
                w.upgrade()
                    .is_some_and(|s| !s.proven.load(Ordering::Relaxed))
            });
        }
        let slot = Arc::new(Slot {
            proven: AtomicBool::new(false),
            evict: CancellationToken::new(),
            released: AtomicBool::new(false),
        });
        queue.push_back(Arc::downgrade(&slot));
        self.open.fetch_add(1, Ordering::Relaxed);
        let guard = SlotGuard {
            slots: self.clone(),
            slot,
        };
        match evicted {
            true => Admission::MadeRoom(guard),
            false => Admission::Admitted(guard),
        }
    }
}

/// What [`Slots::admit`] did with a new connection.
enum Admission {
    /// There was room.
    Admitted(SlotGuard),
    /// The cap was reached; the oldest unproven connection was closed for this one.
    MadeRoom(SlotGuard),
    /// The cap was reached and every open connection has proven itself.
    Refused,
}

/// Close the oldest open connection that has not proven itself, and return its slot;
/// `None` if there is none.
fn evict_oldest(queue: &mut VecDeque<Weak<Slot>>) -> Option<Arc<Slot>> {
    while let Some(weak) = queue.pop_front() {
        if let Some(slot) = weak.upgrade() {
            if !slot.proven.load(Ordering::Relaxed) && !slot.evict.is_cancelled() {
                slot.evict.cancel();
                return Some(slot);
            }
        }
    }
    None
}

/// Accept connections until `cancel` fires, serving each on its own task; on cancel,
/// open connections are shut down gracefully and the function returns once the
/// listener is closed (connection tasks end within a second after that).
pub(crate) async fn serve<N: Network>(
    net: N,
    listener: N::Listener,
    kind: Listener,
    api: Arc<Api<N>>,
    slots: Arc<Slots>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
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
        let (guard, made_room) = match slots.admit() {
            Admission::Admitted(g) => (g, false),
            Admission::MadeRoom(g) => (g, true),
            Admission::Refused => {
                Metrics::add(&api.metrics.connections_shed, 1);
                continue;
            }
        };
        if made_room {
            Metrics::add(&api.metrics.connections_shed, 1);
        }
        Metrics::set(
            &api.metrics.connections_open,
            slots.open.load(Ordering::Relaxed) as u64,
        );
        tracker.spawn(connection(
            stream,
            peer,
            kind,
            api.clone(),
            guard,
            cancel.clone(),
        ));
        if made_room {
            // Let the evicted connection's task close its socket before accepting
            // again, so open descriptors stay near the cap under a flood.
            tokio::task::yield_now().await;
        }
    }
}

/// Serve one connection: wait for its first byte without HTTP buffers, then hand it
/// to hyper, closing it if its first request is not complete in time, if it is
/// evicted before that, or (gracefully) when the server stops.
async fn connection<N: Network>(
    mut stream: N::Stream,
    peer: SocketAddr,
    kind: Listener,
    api: Arc<Api<N>>,
    guard: SlotGuard,
    cancel: CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + FIRST_REQUEST_TIMEOUT;
    let mut first = [0u8; 1];
    let got = tokio::select! {
        biased;
        _ = cancel.cancelled() => return,
        _ = guard.slot.evict.cancelled() => return,
        r = tokio::time::timeout_at(deadline, stream.read(&mut first)) => r,
    };
    if !matches!(got, Ok(Ok(1))) {
        return;
    }
    let slot = guard.slot.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let api = api.clone();
        let slot = slot.clone();
        async move {
            api.gate.passed().await;
            let (resp, from_peer) = handle(&api, &req, peer, kind).await;
            // The admin listener serves monitoring, whose requests are all open: any
            // answered request proves a connection there.
            if from_peer || kind == Listener::Admin {
                slot.proven.store(true, Ordering::Relaxed);
            }
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
    let io = TokioIo::new(Prefixed {
        first: Some(first[0]),
        inner: stream,
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // Past the first-request deadline only eviction ends a connection early; a
    // connection that has not proven itself by then is closed.
    let unproven = async {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = guard.slot.evict.cancelled() => return,
        }
        if guard.slot.proven.load(Ordering::Relaxed) {
            guard.slot.evict.cancelled().await;
        }
    };
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
        _ = unproven => {}
    }
    drop(guard);
}

/// A stream whose first byte was already read.
struct Prefixed<S> {
    first: Option<u8>,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() > 0 {
            if let Some(b) = this.first.take() {
                buf.put_slice(&[b]);
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

crate::net::forward_async_write!(Prefixed);

#[cfg(test)]
mod tests {
    use super::*;

    fn only_admitted(a: Admission) -> SlotGuard {
        match a {
            Admission::Admitted(g) => g,
            _ => panic!("there was room"),
        }
    }

    fn made_room(a: Admission) -> SlotGuard {
        match a {
            Admission::MadeRoom(g) => g,
            _ => panic!("the cap was reached: an unproven connection should have been closed"),
        }
    }

    #[test]
    fn at_the_cap_the_oldest_unproven_connection_makes_room() {
        let slots = Slots::new(2);
        let a = only_admitted(slots.admit());
        let b = only_admitted(slots.admit());
        a.slot.proven.store(true, Ordering::Relaxed);
        // Full: b (unproven, oldest such) is evicted for c.
        let c = made_room(slots.admit());
        assert!(b.slot.evict.is_cancelled());
        assert!(!a.slot.evict.is_cancelled());
        assert_eq!(slots.open.load(Ordering::Relaxed), 2, "b's place went to c");
        drop(b);
        assert_eq!(slots.open.load(Ordering::Relaxed), 2, "given back once");
        // Full again with a proven and c unproven: c goes for d.
        let _d = made_room(slots.admit());
        assert!(c.slot.evict.is_cancelled());
        drop(c);
        // Both remaining proven: nothing to evict, the newcomer is refused.
        let e_slots = Slots::new(1);
        let e = only_admitted(e_slots.admit());
        e.slot.proven.store(true, Ordering::Relaxed);
        assert!(matches!(e_slots.admit(), Admission::Refused));
        drop(e);
        assert!(matches!(e_slots.admit(), Admission::Admitted(_)));
    }
}

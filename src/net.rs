//! The network and the wall clock, as seams the runtime is generic over.
//!
//! Production uses [`TokioNetwork`] and [`SystemClock`]. The deterministic simulation
//! (`les::sim`, feature `sim`) plugs in turmoil's simulated TCP and a per-node skewed
//! clock, and everything above this module — the HTTP server and client, the protocol
//! loop, the hooks — runs unchanged. Monotonic time is always `tokio::time`, which both
//! the real runtime and turmoil drive; a node reads it through a `Timebase`, whose
//! rate the simulator may change, and its tasks pass a `PauseGate`, which the
//! simulator may close to freeze the node.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};

/// A stream-oriented network: bind a listener, accept, connect by `host:port`.
pub trait Network: Clone + Send + Sync + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A bound listener.
    type Listener: Send + Sync + 'static;

    /// Bind a listener; fails if the address is in use.
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// The address a listener is bound to (useful with port 0).
    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr>;
    /// Accept the next connection, with the address it comes from (for logs).
    fn accept(
        &self,
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    /// Connect to `host:port`, resolving the host name as this network does.
    fn connect(&self, addr: String) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The real network, through tokio.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioNetwork;

impl Network for TokioNetwork {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(&self, listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    async fn connect(&self, addr: String) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// The wall clock that gives a node its start time (its seniority).
pub trait WallClock: Send + Sync + 'static {
    /// Seconds since the Unix epoch, with sub-second precision.
    fn now_epoch(&self) -> f64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_epoch(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// A node's monotonic time as its core sees it: the time since `origin`, on a clock
/// that runs at `rate` (1.0 in production). The simulator sets another rate to model a
/// machine whose clock runs fast or slow; [`Timebase::real`] turns the node's durations
/// back into the runtime's for timers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timebase {
    origin: tokio::time::Instant,
    rate: f64,
}

impl Timebase {
    /// Time starts now, running at `rate`; a rate that is not a positive finite number
    /// counts as 1.0.
    pub(crate) fn new(rate: f64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        Timebase {
            origin: tokio::time::Instant::now(),
            rate,
        }
    }

    /// The node's monotonic time now (the `now` the core is given).
    pub(crate) fn now(&self) -> Duration {
        let elapsed = self.origin.elapsed();
        if self.rate == 1.0 {
            elapsed
        } else {
            elapsed.mul_f64(self.rate)
        }
    }

    /// How long a span `d` of the node's time lasts in the runtime's time.
    pub(crate) fn real(&self, d: Duration) -> Duration {
        if self.rate == 1.0 {
            d
        } else {
            // Rounded up: a timer set for `real(d)` must find `now() >= d` when it fires,
            // or a deadline would wake the loop again and again at the same instant.
            d.div_f64(self.rate) + Duration::from_micros(1)
        }
    }

    /// The runtime instant at which the node's clock reads `t`.
    pub(crate) fn instant(&self, t: Duration) -> tokio::time::Instant {
        self.origin + self.real(t)
    }
}

/// Holds a node's tasks while the simulator pauses it, as SIGSTOP would (feature `sim`).
/// Without the feature it holds nothing and [`PauseGate::passed`] returns at once.
#[derive(Debug, Clone, Default)]
pub(crate) struct PauseGate {
    #[cfg(feature = "sim")]
    paused: Option<tokio::sync::watch::Receiver<bool>>,
}

impl PauseGate {
    /// A gate closed while `paused` holds `true`.
    #[cfg(feature = "sim")]
    #[allow(
        dead_code,
        reason = "for les::sim, which does not model pauses this way yet"
    )]
    pub(crate) fn new(paused: tokio::sync::watch::Receiver<bool>) -> Self {
        PauseGate {
            paused: Some(paused),
        }
    }

    /// A sender whose messages reach `to` only while the node is not paused (the hook
    /// dispatcher's queue); `to` itself when there is no gate.
    #[cfg(feature = "sim")]
    pub(crate) fn forward<T: Send + 'static>(
        &self,
        to: tokio::sync::mpsc::UnboundedSender<T>,
        tracker: &tokio_util::task::TaskTracker,
    ) -> tokio::sync::mpsc::UnboundedSender<T> {
        if self.paused.is_none() {
            return to;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let gate = self.clone();
        tracker.spawn(async move {
            while let Some(msg) = rx.recv().await {
                gate.passed().await;
                if to.send(msg).is_err() {
                    return;
                }
            }
        });
        tx
    }

    /// Return once the node is not paused (at once if it is not).
    #[inline]
    pub(crate) async fn passed(&self) {
        #[cfg(feature = "sim")]
        if let Some(paused) = &self.paused {
            // A dropped sender can pause no more: carry on.
            let _ = paused.clone().wait_for(|p| !*p).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fast_clock_scales_the_node_time_and_shortens_its_timers() {
        let tb = Timebase::new(2.0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(tb.now(), Duration::from_secs(2));
        // Rounded up by a microsecond, so a timer never fires short of its deadline.
        let up = Duration::from_micros(1);
        assert_eq!(tb.real(Duration::from_secs(4)), Duration::from_secs(2) + up);
        assert_eq!(
            tb.instant(Duration::from_secs(2)),
            tb.origin + Duration::from_secs(1) + up
        );
        let odd = Timebase::new(0.97);
        for ms in [1u64, 333, 3_316, 86_400_123] {
            let d = Duration::from_millis(ms);
            assert!(odd.real(d).mul_f64(0.97) >= d, "{ms} ms");
        }
        assert_eq!(Timebase::new(f64::NAN).rate, 1.0);
    }
}

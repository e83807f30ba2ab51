//! Serving a router on a TCP listener: HTTP/1.1 and HTTP/2 (hyper), plain or over rustls, with
//! bounds on what a slow or idle client can hold: a connection cap, and per connection a
//! header-read deadline (TLS handshake included), an idle deadline, a body-read deadline and
//! HTTP/2 keep-alive pings and stream limit.
//!
//! hyper's own HTTP/1 header-read timeout also runs while a keep-alive connection waits for its
//! next request, so it cannot be short (against slowloris) and long (for a proxy's pooled
//! connections) at once, and hyper has no idle timeout. `Activity` below keeps the two apart,
//! and covers HTTP/2 and the TLS handshake with the same clock.

use std::future::Future;
use std::io;
use std::num::NonZeroU32;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Version};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prometheus_client::metrics::gauge::Gauge;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::Service;

use crate::duration_flag::parse_duration;

/// Connection limits of a listener. `ListenerArgs::parse_from(["x"])` gives the defaults.
#[derive(Debug, Clone, clap::Parser)]
pub struct ListenerArgs {
    /// Longest time for a request's headers to arrive: from a new connection's accept (TLS
    /// handshake included), or from the first byte of the next request on a kept-alive one.
    /// Slower clients are disconnected (slowloris).
    #[arg(long, env = "NLU_HEADER_READ_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,

    /// Longest time for a request body to arrive, counted from the end of its headers; a body
    /// still incomplete then is answered 408 `body_timeout`.
    #[arg(long, env = "NLU_BODY_READ_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub body_read_timeout: Duration,

    /// How long a connection with no request in flight is kept open for the next one. Longer
    /// than the 60 s for which ingress-nginx (upstream-keepalive-timeout) and cloud load
    /// balancers keep idle upstream connections, so the proxy always closes first and never
    /// sends a request down a connection the server is closing (a POST lost so is answered 502,
    /// and not retried).
    #[arg(long, env = "NLU_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "90s")]
    pub idle_timeout: Duration,

    /// HTTP/2: how often to ping the client, to find connections whose peer is gone.
    #[arg(long, env = "NLU_HTTP2_KEEP_ALIVE_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub http2_keep_alive_interval: Duration,

    /// HTTP/2: how long a ping may go unanswered before the connection is closed.
    #[arg(long, env = "NLU_HTTP2_KEEP_ALIVE_TIMEOUT", value_parser = parse_duration, default_value = "20s")]
    pub http2_keep_alive_timeout: Duration,

    /// HTTP/2: most requests (streams) open at once on one connection.
    #[arg(long, env = "NLU_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 128)]
    pub http2_max_concurrent_streams: u32,

    /// Most open connections. At the cap no more are accepted until one closes; new ones wait
    /// in the kernel's listen backlog meanwhile.
    #[arg(long, env = "NLU_MAX_CONNECTIONS", default_value_t = NonZeroU32::new(4096).unwrap())]
    pub max_connections: NonZeroU32,
}

/// When the body of the request carrying it must have arrived (`--body-read-timeout`), for the
/// extractor that reads it.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Instant);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then stops
/// accepting and waits for the requests in flight to be answered (and for connections still in
/// their TLS handshake or first head, at most the header-read timeout). `open_connections`
/// counts the connections open.
pub async fn serve(
    mut listener: TcpListener,
    app: Router,
    args: ListenerArgs,
    tls: Option<Arc<ServerConfig>>,
    open_connections: Gauge,
    shutdown: impl Future<Output = ()>,
) {
    let server = Arc::new(Server {
        app,
        http: http_builder(&args),
        tls: tls.map(TlsAcceptor::from),
        timeouts: Timeouts::from(&args),
        body_read_timeout: args.body_read_timeout,
    });
    let slots = Arc::new(Semaphore::new(args.max_connections.get() as usize));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let next = async {
            // Waits for a free slot before accepting, so that at the cap the kernel holds the
            // new connections instead of this loop taking and dropping them.
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            // axum's accept: on errors such as EMFILE it waits a second instead of spinning.
            let (tcp, _) = axum::serve::Listener::accept(&mut listener).await;
            (permit, tcp)
        };
        tokio::select! {
            () = &mut shutdown => break,
            (permit, tcp) = next => {
                let slot = Slot::open(permit, open_connections.clone());
                tokio::spawn(server.clone().connection(tcp, graceful.watcher(), slot));
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

fn http_builder(args: &ListenerArgs) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    // Off: [`Activity`] times the headers without also cutting kept-alive connections short.
    http.http1().header_read_timeout(None);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(args.http2_keep_alive_interval)
        .keep_alive_timeout(args.http2_keep_alive_timeout)
        .max_concurrent_streams(args.http2_max_concurrent_streams);
    http
}

/// What every connection of one listener shares.
struct Server {
    app: Router,
    http: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    timeouts: Timeouts,
    body_read_timeout: Duration,
}

impl Server {
    async fn connection(self: Arc<Self>, tcp: TcpStream, graceful: Watcher, _slot: Slot) {
        // Answers go out at once: Nagle's algorithm would hold a small last segment until the
        // client's delayed ACK (40 ms on Linux), as with a TLS record split across writes.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::new(self.timeouts));
        let io = Watched {
            tcp,
            activity: activity.clone(),
        };
        let served = async {
            match &self.tls {
                None => self.http(io, activity.clone(), graceful).await,
                Some(acceptor) => match acceptor.accept(io).await {
                    Ok(tls) => self.http(tls, activity.clone(), graceful).await,
                    Err(e) => Err(e.into()),
                },
            }
        };
        // Dropping the connection closes it, wherever it was: handshake, head, idle.
        tokio::select! {
            served = served => if let Err(e) = served {
                tracing::debug!(error = %e, "connection closed");
            },
            () = activity.expired() => tracing::debug!("connection timed out"),
        }
    }

    async fn http<IO>(
        &self,
        io: IO,
        activity: Arc<Activity>,
        graceful: Watcher,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (app, body_read_timeout) = (self.app.clone(), self.body_read_timeout);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let in_flight = activity.begin(request.version());
            let deadline = BodyDeadline(Instant::now() + body_read_timeout);
            request.extensions_mut().insert(deadline);
            let answer = app.clone().call(request.map(Body::new));
            async move {
                let response = answer.await;
                drop(in_flight);
                response
            }
        });
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        graceful.watch(connection).await
    }
}

/// A place under `--max-connections`, held while the connection is open.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Slot {
    fn open(permit: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        Slot {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
}

impl From<&ListenerArgs> for Timeouts {
    fn from(args: &ListenerArgs) -> Self {
        Timeouts {
            header_read: args.header_read_timeout,
            idle: args.idle_timeout,
        }
    }
}

/// What one connection is doing, for its deadline: told by its requests and by its reads.
struct Activity {
    timeouts: Timeouts,
    state: Mutex<State>,
    /// Wakes [`Activity::expired`] to take a new deadline.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// When the connection last had nothing to do: opened, or its last request answered.
    idle_since: Instant,
    /// When the next request began to arrive: the connection opened, or its first byte came
    /// after the last answer. None while requests are in flight and until that byte.
    request_since: Option<Instant>,
    /// HTTP/2: bytes between requests are pings and settings, not the start of a request.
    http2: bool,
}

impl State {
    fn opened(now: Instant) -> Self {
        State {
            in_flight: 0,
            idle_since: now,
            request_since: Some(now),
            http2: false,
        }
    }

    /// When the connection is to be closed, if nothing happens before: none while a request is
    /// in flight (its body has its own deadline, its answer takes what it takes).
    fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        if self.in_flight > 0 {
            return None;
        }
        match self.request_since {
            Some(since) if !self.http2 => Some(since + timeouts.header_read),
            _ => Some(self.idle_since + timeouts.idle),
        }
    }

    /// Bytes came; true when they start a request.
    fn read(&mut self, now: Instant) -> bool {
        let starts = self.in_flight == 0 && self.request_since.is_none();
        if starts {
            self.request_since = Some(now);
        }
        starts
    }

    fn begin(&mut self, version: Version) {
        self.in_flight += 1;
        self.request_since = None;
        self.http2 |= version == Version::HTTP_2;
    }

    fn end(&mut self, now: Instant) {
        self.in_flight -= 1;
        if self.in_flight == 0 {
            self.idle_since = now;
        }
    }
}

impl Activity {
    fn new(timeouts: Timeouts) -> Self {
        Activity {
            timeouts,
            state: Mutex::new(State::opened(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resolves once the deadline has passed. A timer of its own, as hyper reads the socket
    /// only when it has reason to, not while it waits.
    async fn expired(&self) {
        loop {
            let deadline = self.state().deadline(self.timeouts);
            match deadline {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }

    /// A request's head has arrived; it is in flight until the guard drops.
    fn begin(self: &Arc<Self>, version: Version) -> InFlight {
        self.state().begin(version);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn read(&self) {
        if self.state().read(Instant::now()) {
            self.changed.notify_one();
        }
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state().end(Instant::now());
        self.0.changed.notify_one();
    }
}

/// The connection's socket, telling [`Activity`] when bytes arrive.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(90),
    };

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_new_connection_has_the_header_read_timeout_for_its_first_request() {
        let start = Instant::now();
        let state = State::opened(start);
        assert_eq!(state.deadline(TIMEOUTS), Some(at(start, 10)));
    }

    #[test]
    fn http1_waits_idle_until_a_byte_comes_then_for_the_headers() {
        let start = Instant::now();
        let mut state = State::opened(start);
        state.begin(Version::HTTP_11);
        assert_eq!(state.deadline(TIMEOUTS), None, "in flight");
        state.read(at(start, 1)); // body bytes do not start a new request
        state.end(at(start, 2));
        assert_eq!(state.deadline(TIMEOUTS), Some(at(start, 92)));
        state.read(at(start, 50));
        state.read(at(start, 55));
        assert_eq!(state.deadline(TIMEOUTS), Some(at(start, 60)));
    }

    #[test]
    fn http2_between_requests_is_idle_whatever_it_reads() {
        let start = Instant::now();
        let mut state = State::opened(start);
        state.begin(Version::HTTP_2);
        state.begin(Version::HTTP_2);
        state.end(at(start, 1));
        assert_eq!(state.deadline(TIMEOUTS), None, "one stream still open");
        state.end(at(start, 2));
        state.read(at(start, 30)); // a ping
        assert_eq!(state.deadline(TIMEOUTS), Some(at(start, 92)));
    }
}

//! The TCP port's connections: the accept loop, the cap on open connections, the header and idle
//! timeouts, and accept errors said once and counted. It serves any axum [`Router`]; the routes
//! are in `http.rs`.
//!
//! Built on hyper's HTTP/1 connection rather than `axum::serve`, which gives hyper no timer (so
//! its header timeout never runs), caps nothing, and after a failed accept sleeps a second
//! without a word (axum 0.8 logs it only with its `tracing` feature). Not on hyper-util's `auto`
//! builder either: it reads the protocol version before hyper's timer starts, so a client that
//! sends nothing is never timed out (hyperium/hyper#3962), and this port has only ever spoken
//! HTTP/1.
//!
//! - **Header timeout**: hyper's `header_read_timeout`. Since hyper 1.6 (hyperium/hyper#3828) it
//!   runs from the moment the connection waits for a request: its opening, or the end of the
//!   previous response. A client that sends its headers slowly or not at all is cut off.
//! - **Idle timeout**: hyper has none of its own (its header timer doubles as one, see above).
//!   Here a connection on which no byte has moved for `idle_timeout`, while no handler of its
//!   own runs, is closed: a silent new connection, a keep-alive connection between requests, a
//!   client that stopped reading its answer.
//! - **Cap**: at `max_connections`, a new connection replaces the one that has been quiet
//!   longest among those no handler is answering, as nginx reuses idle keep-alive connections
//!   when it runs out (ngx_drain_connections, "worker_connections are not enough, reusing
//!   connections"). Idle connections then cannot lock Prometheus out, whoever opens them. When
//!   every connection is being answered, the new one is accepted and closed at once rather than
//!   left in the kernel's queue: its client learns at once (Prometheus records a failed scrape
//!   and tries again at the next interval), instead of waiting for its own timeout while the
//!   queue fills with connections nobody will answer.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{info, warn};

use gpucost_core::config::HttpConfig;

/// Why the agent closed a connection: the `reason` of `gpucost_http_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The request's headers did not arrive within `header_timeout`.
    HeaderTimeout,
    /// Nothing moved for `idle_timeout` while no handler ran.
    IdleTimeout,
    /// The quietest connection, closed to make room for a new one at `max_connections`.
    Evicted,
    /// A new connection at `max_connections` while every connection was being answered.
    Refused,
}

impl Closed {
    pub const ALL: [Closed; 4] = [
        Closed::HeaderTimeout,
        Closed::IdleTimeout,
        Closed::Evicted,
        Closed::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
        }
    }
}

/// The kinds of accept(2) failure counted apart: the `error` label of
/// `gpucost_http_accept_errors_total`.
pub const ACCEPT_ERRORS: [&str; 7] = [
    "EMFILE",
    "ENFILE",
    "ENOBUFS",
    "ENOMEM",
    "ECONNABORTED",
    "network",
    "other",
];

/// How long the accept loop waits after a failure other than a lost connection. Out of files or
/// memory, accept fails again at once until something is freed, and the listener stays readable:
/// without a pause the loop would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The label of an accept(2) error, and whether it concerns only the connection being accepted.
/// accept(2), "Error handling": Linux passes a new connection's pending network errors on as
/// accept's own, and these are to be treated like EAGAIN, by accepting again.
fn accept_error(e: &io::Error) -> (usize, bool) {
    let name = match e.raw_os_error() {
        Some(libc::EMFILE) => "EMFILE",
        Some(libc::ENFILE) => "ENFILE",
        Some(libc::ENOBUFS) => "ENOBUFS",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::ECONNABORTED) => "ECONNABORTED",
        Some(
            libc::ENETDOWN
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH,
        ) => "network",
        _ => "other",
    };
    let index = ACCEPT_ERRORS
        .iter()
        .position(|n| *n == name)
        .expect("every name is listed");
    (index, matches!(name, "ECONNABORTED" | "network"))
}

/// What the server counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicU64,
    closed: [AtomicU64; Closed::ALL.len()],
    accept_errors: [AtomicU64; ACCEPT_ERRORS.len()],
}

impl Stats {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed by the agent since it started, by reason.
    pub fn closed(&self) -> Vec<(&'static str, u64)> {
        Closed::ALL
            .iter()
            .zip(&self.closed)
            .map(|(c, n)| (c.label(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Failed accepts since the agent started, by kind.
    pub fn accept_errors(&self) -> Vec<(&'static str, u64)> {
        ACCEPT_ERRORS
            .iter()
            .zip(&self.accept_errors)
            .map(|(e, n)| (*e, n.load(Ordering::Relaxed)))
            .collect()
    }

    fn count(&self, why: Closed) {
        let i = Closed::ALL.iter().position(|c| *c == why).expect("listed");
        self.closed[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// One open connection, as the accept loop and its own task see it.
#[derive(Debug)]
struct Conn {
    /// When a byte last moved either way, or a handler started or ended: nanoseconds since
    /// [`Shared::epoch`].
    last: AtomicU64,
    /// Handlers of this connection's requests running now.
    busy: AtomicUsize,
    /// Cancelled to close the connection now, to make room for a new one.
    evict: CancellationToken,
    /// Cancelled once the connection's socket is closed.
    gone: CancellationToken,
}

impl Conn {
    fn touch(&self, epoch: Instant) {
        let since = Instant::now().saturating_duration_since(epoch);
        self.last.store(since.as_nanos() as u64, Ordering::Relaxed);
    }

    /// When the connection will have been idle for `idle`, if nothing moves before; while a
    /// handler runs, a time to look again.
    fn idle_deadline(&self, epoch: Instant, idle: Duration) -> Instant {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return Instant::now() + idle;
        }
        epoch + Duration::from_nanos(self.last.load(Ordering::Relaxed)) + idle
    }
}

/// The open connections, by an id of their own.
#[derive(Debug, Default)]
struct Table {
    next: u64,
    conns: HashMap<u64, Arc<Conn>>,
    /// Whether the log has said that the cap was reached.
    said_full: bool,
}

struct Shared {
    http: http1::Builder,
    limits: HttpConfig,
    epoch: Instant,
    table: Mutex<Table>,
    stats: Arc<Stats>,
}

/// How long the accept loop waits for an evicted connection's socket to close before it goes on.
/// Closing is a task switch away; the bound only guards against a task that cannot run.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// A connection let in by [`Shared::admit`].
struct Admitted {
    id: u64,
    conn: Arc<Conn>,
    /// The connection closed to make room, if one was.
    evicted: Option<Arc<Conn>>,
}

impl Shared {
    /// Registers a new connection. When the table is full, the quietest connection that no
    /// handler is answering leaves it to make room, and is returned to be waited for; `None`
    /// when every connection is being answered.
    fn admit(&self) -> Option<Admitted> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = None;
        if t.conns.len() >= self.limits.max_connections {
            if !t.said_full {
                t.said_full = true;
                warn!(
                    "{} HTTP connections open (http.max_connections): from now on a new one \
                     replaces the quietest idle one, or is closed at once when all are being \
                     answered (counted in gpucost_http_connections_closed_total)",
                    t.conns.len()
                );
            }
            let quietest = t
                .conns
                .iter()
                .filter(|(_, c)| c.busy.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, c)| c.last.load(Ordering::Relaxed))
                .map(|(id, _)| *id)?;
            let victim = t.conns.remove(&quietest).expect("found in the table");
            victim.evict.cancel();
            evicted = Some(victim);
        }
        t.next += 1;
        let id = t.next;
        let conn = Arc::new(Conn {
            last: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            evict: CancellationToken::new(),
            gone: CancellationToken::new(),
        });
        conn.touch(self.epoch);
        t.conns.insert(id, conn.clone());
        self.stats
            .open
            .store(t.conns.len() as u64, Ordering::Relaxed);
        Some(Admitted { id, conn, evicted })
    }

    fn leave(&self, id: u64) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.conns.remove(&id);
        self.stats
            .open
            .store(t.conns.len() as u64, Ordering::Relaxed);
    }
}

/// Takes a connection out of the table when its task ends, also by a panic in a handler.
struct Slot {
    shared: Arc<Shared>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.leave(self.id);
        self.conn.gone.cancel();
    }
}

/// Counts a running handler for the idle timeout and the cap: a connection being answered is
/// neither idle nor evicted.
struct Busy {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Busy {
    fn start(conn: Arc<Conn>, epoch: Instant) -> Busy {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        conn.touch(epoch);
        Busy { conn, epoch }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.touch(self.epoch);
        self.conn.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP stream that notes when bytes move, for the idle timeout.
struct Watched {
    io: TcpStream,
    conn: Arc<Conn>,
    epoch: Instant,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.touch(this.epoch);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.touch(this.epoch);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.touch(this.epoch);
        }
        r
    }

    /// hyper queues a large body's buffers instead of copying them when the stream writes
    /// vectors, as a TCP stream does.
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The port's listen(2) backlog: connections the kernel completes before the agent accepts
/// them. The 128 of the standard library and mio (`TcpListener::bind`) drops the SYNs of a
/// larger burst, and their clients try again only a second later; listen(2) caps the backlog at
/// net.core.somaxconn (4096 by default since Linux 5.4). Who is then served is the cap's choice.
const BACKLOG: u32 = 1024;

/// Binds the port's listener as `TcpListener::bind` does (SO_REUSEADDR), with [`BACKLOG`]. Call
/// it inside the runtime.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `app` on `listener` within `limits` until `shutdown` is cancelled; then stops
/// accepting, lets requests in progress finish (idle connections close at once) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let shared = Arc::new(Shared {
        http,
        limits,
        epoch: Instant::now(),
        table: Mutex::default(),
        stats,
    });
    let mut tasks = JoinSet::new();
    let mut said = [false; ACCEPT_ERRORS.len()];
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                let (i, connection_only) = accept_error(&e);
                shared.stats.accept_errors[i].fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut said[i], true) {
                    if connection_only {
                        info!("HTTP port: a connection failed before it was accepted: {e} (counted in gpucost_http_accept_errors_total, not logged again)");
                    } else {
                        warn!(
                            "HTTP port: cannot accept connections: {e}{} (counted in gpucost_http_accept_errors_total, not logged again)",
                            if ACCEPT_ERRORS[i] == "EMFILE" {
                                "; the agent has used up its limit of open files (LimitNOFILE= in the systemd unit, ulimit -n)"
                            } else {
                                ""
                            }
                        );
                    }
                }
                if !connection_only {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let Some(Admitted { id, conn, evicted }) = shared.admit() else {
            shared.stats.count(Closed::Refused);
            drop(stream);
            continue;
        };
        // The evicted connection's socket is closed before another is served, so the agent
        // never holds more than max_connections + 1 sockets, however fast clients connect.
        if let Some(victim) = evicted {
            let _ = tokio::time::timeout(EVICT_WAIT, victim.gone.cancelled()).await;
        }
        let slot = Slot {
            shared: shared.clone(),
            id,
            conn: conn.clone(),
        };
        tasks.spawn(connection(
            slot,
            conn,
            stream,
            app.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until the client closes it, a timeout or eviction closes it, or the
/// server shuts down and its last request is answered.
async fn connection(
    slot: Slot,
    conn: Arc<Conn>,
    stream: TcpStream,
    app: Router,
    shutdown: CancellationToken,
) {
    let shared = slot.shared.clone();
    let epoch = shared.epoch;
    let idle = shared.limits.idle_timeout;
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = Busy::start(conn.clone(), epoch);
            let app = app.clone();
            async move {
                let response = app.oneshot(req).await;
                drop(busy);
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        })
    };
    let io = TokioIo::new(Watched {
        io: stream,
        conn: conn.clone(),
        epoch,
    });
    let closed = {
        let served = shared.http.serve_connection(io, service);
        tokio::pin!(served);
        let mut draining = false;
        loop {
            let idle_at = conn.idle_deadline(epoch, idle);
            tokio::select! {
                r = served.as_mut() => break match r {
                    Err(e) if e.is_timeout() => Some(Closed::HeaderTimeout),
                    _ => None,
                },
                () = conn.evict.cancelled() => break Some(Closed::Evicted),
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    served.as_mut().graceful_shutdown();
                }
                () = tokio::time::sleep_until(idle_at) => {
                    if conn.idle_deadline(epoch, idle) <= Instant::now() {
                        break Some(Closed::IdleTimeout);
                    }
                }
            }
        }
        // The connection, and with it the socket, is dropped here, before the slot is freed.
    };
    if let Some(why) = closed {
        shared.stats.count(why);
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    fn limits(max_connections: usize) -> HttpConfig {
        HttpConfig {
            max_connections,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            hide_identities: false,
        }
    }

    /// A server on a free loopback port whose `/wait` answers once `go` is notified.
    async fn start(
        max_connections: usize,
        go: Arc<Notify>,
    ) -> (
        std::net::SocketAddr,
        Arc<Stats>,
        CancellationToken,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/wait",
            get(move || async move {
                go.notified().await;
                "done"
            }),
        );
        let stats = Arc::new(Stats::default());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            app,
            limits(max_connections),
            stats.clone(),
            shutdown.clone(),
        ));
        (addr, stats, shutdown, server)
    }

    async fn read_all(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// On shutdown the server stops accepting, closes idle connections at once, answers the
    /// request in progress, and returns.
    #[tokio::test]
    async fn shutdown_answers_the_request_in_progress_and_returns() {
        let go = Arc::new(Notify::new());
        let (addr, _, shutdown, server) = start(8, go.clone()).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.cancel();
        assert_eq!(
            read_all(&mut idle).await,
            "",
            "the idle connection is closed"
        );
        assert!(!server.is_finished(), "a request is still being answered");
        go.notify_one();
        let answer = read_all(&mut busy).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns")
            .unwrap()
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer listening"
        );
    }

    /// At the cap with every connection being answered, a new connection is closed at once;
    /// with one of them idle, the idle one makes room.
    #[tokio::test]
    async fn at_the_cap_the_quietest_idle_connection_makes_room() {
        let go = Arc::new(Notify::new());
        let (addr, stats, shutdown, server) = start(2, go.clone()).await;
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut newer = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_all(&mut idle).await, "", "the idle one made room");
        newer
            .write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 12];
        newer.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"HTTP/1.1 404");
        // Both open connections busy now: the next is turned away.
        newer
            .write_all(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut refused = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_all(&mut refused).await, "");
        let closed: std::collections::BTreeMap<_, _> = stats.closed().into_iter().collect();
        assert_eq!(closed["evicted"], 1);
        assert_eq!(closed["refused"], 1);
        assert_eq!(stats.open(), 2);
        go.notify_waiters();
        shutdown.cancel();
        assert!(read_all(&mut busy).await.ends_with("done"));
        server.await.unwrap().unwrap();
        assert_eq!(stats.open(), 0);
    }

    #[test]
    fn accept_errors_by_kind() {
        let kind = |errno| {
            let (i, connection_only) = accept_error(&io::Error::from_raw_os_error(errno));
            (ACCEPT_ERRORS[i], connection_only)
        };
        assert_eq!(kind(libc::EMFILE), ("EMFILE", false));
        assert_eq!(kind(libc::ENFILE), ("ENFILE", false));
        assert_eq!(kind(libc::ECONNABORTED), ("ECONNABORTED", true));
        assert_eq!(kind(libc::EPROTO), ("network", true));
        assert_eq!(kind(libc::EPERM), ("other", false));
    }
}

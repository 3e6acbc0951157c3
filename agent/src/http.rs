//! The HTTP/1.1 server for `/metrics` and `/healthz`: hyper on a tokio runtime of its own, on
//! its own thread, so the daemon's main loop stays synchronous.
//!
//! The agent often listens on `0.0.0.0` (the `DaemonSet` does), so any client on the network must
//! be unable to hold it up:
//! - connections are served concurrently, up to [`MAX_CONNECTIONS`]; beyond that a new
//!   connection is closed at once and counted;
//! - a request's headers must arrive within [`HEADER_DEADLINE`] (also the longest a kept-alive
//!   connection may sit idle) and fit in [`MAX_HEADER_BYTES`] (else 431);
//! - no connection lives longer than [`CONNECTION_LIFETIME`] (a client that never reads its
//!   response is dropped then);
//! - the handler is synchronous and renders the metrics: it runs on tokio's blocking pool, never
//!   on the thread that accepts and reads;
//! - [`Server::stop`] stops accepting at once, closes the connections with no request in
//!   progress, gives requests in progress up to [`SHUTDOWN_GRACE`] to finish, then drops what is
//!   left: it never waits on a client.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{
    Method, Request, StatusCode,
    body::{Body, Bytes, Frame, Incoming, SizeHint},
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use tokio::{net::TcpStream, sync::watch, task::JoinSet};

/// A response: status, content type, body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Answers a request for a path (query string already removed). Synchronous: it is run on a
/// blocking thread.
pub type Handler = Arc<dyn Fn(&str) -> Response + Send + Sync>;

/// Connections served at once; more are closed as soon as they are accepted. Well above what
/// Prometheus servers and health checkers need, well below the default fd limit (1024).
pub const MAX_CONNECTIONS: usize = 256;
/// Time for a request's headers to arrive, counted from the first read of a connection or from
/// the end of the previous response on a kept-alive one.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(5);
/// Request line plus headers. A scrape's are a few hundred bytes.
pub const MAX_HEADER_BYTES: usize = 8192;
/// The longest a connection may stay open, whatever it does; bounds keep-alive and a client that
/// never reads the response.
pub const CONNECTION_LIFETIME: Duration = Duration::from_mins(1);
/// How long [`Server::stop`] lets requests in progress finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long [`Server::stop`] gives a connection with no request in progress to flush what it
/// has written: a client half-way through its headers is not waited for.
const FLUSH_GRACE: Duration = Duration::from_millis(100);
/// Connections the kernel queues before they are accepted (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 1024;
/// Threads rendering responses at once; further requests queue for one.
const HANDLER_THREADS: usize = 4;

static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static TIMED_OUT: AtomicU64 = AtomicU64::new(0);

/// Connection counters of the process, cumulative across servers (a reload that changes the
/// listen address starts a new one), so they never go back behind Prometheus's back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections taken into service.
    pub accepted: u64,
    /// Connections closed on arrival because [`MAX_CONNECTIONS`] were open.
    pub refused: u64,
    /// Connections closed because headers did not arrive within [`HEADER_DEADLINE`] or the
    /// connection outlived [`CONNECTION_LIFETIME`].
    pub timed_out: u64,
}

#[must_use]
pub fn counters() -> Counters {
    Counters {
        accepted: ACCEPTED.load(Ordering::Relaxed),
        refused: REFUSED.load(Ordering::Relaxed),
        timed_out: TIMED_OUT.load(Ordering::Relaxed),
    }
}

pub struct Server {
    addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(addr: SocketAddr, handler: Handler) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(HANDLER_THREADS)
            .thread_name("http-handler")
            .build()
            .context("starting the HTTP runtime")?;
        let listener = {
            let _context = runtime.enter();
            listen(addr).map_err(|e| bind_error(addr, e))?
        };
        let addr = listener.local_addr()?;
        let (stop, stop_requested) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                runtime.block_on(serve(listener, handler, stop_requested));
                // Every connection is gone; a handler still rendering (it cannot be cancelled)
                // has no one to answer. Its thread is left to finish on its own.
                runtime.shutdown_background();
            })
            .context("starting the HTTP thread")?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting at once; closes the connections with no request in progress, lets
    /// requests in progress finish for up to [`SHUTDOWN_GRACE`], then closes every connection.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the HTTP server thread panicked");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What `std::net::TcpListener::bind` does, with a longer accept queue: std's 128 overflows when
/// a few hundred clients connect at once, and each connection dropped from it waits a second for
/// its SYN to be sent again.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The bind error with the likely cause, for the kinds that have one.
fn bind_error(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => " (in use by another process?)".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => {
            format!(" ({} is not an address of this machine)", addr.ip())
        }
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            " (ports below 1024 need CAP_NET_BIND_SERVICE)".to_owned()
        }
        _ => String::new(),
    };
    anyhow::Error::new(e).context(format!("listening on {addr}{hint}"))
}

async fn serve(
    listener: tokio::net::TcpListener,
    handler: Handler,
    mut stop_requested: watch::Receiver<bool>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let (finish, finish_requested) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Also taken when the sender is gone.
            _ = stop_requested.wait_for(|&stop| stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        if REFUSED.fetch_add(1, Ordering::Relaxed) == 0 {
                            warn!(
                                "HTTP: {MAX_CONNECTIONS} connections open, closing new ones \
                                 (counted in schedlat_http_connections_total)"
                            );
                        }
                        debug!("HTTP: refused {peer}: {MAX_CONNECTIONS} connections open");
                        drop(stream);
                        continue;
                    }
                    ACCEPTED.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(serve_connection(
                        http.clone(),
                        stream,
                        peer,
                        Arc::clone(&handler),
                        finish_requested.clone(),
                    ));
                }
                Err(e) => {
                    // Out of fds, mostly: back off rather than spin.
                    debug!("HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = finish.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            "HTTP: closing {} connections still open after {SHUTDOWN_GRACE:?}",
            connections.len()
        );
    }
    connections.abort_all();
}

async fn serve_connection(
    http: http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    handler: Handler,
    mut finish_requested: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let service_in_flight = Arc::clone(&in_flight);
    let service = service_fn(move |request| {
        let guard = InFlight::enter(&service_in_flight);
        respond(request, Arc::clone(&handler), guard)
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            note_end(peer, result);
            return;
        }
        _ = finish_requested.wait_for(|&finish| finish) => {}
        () = tokio::time::sleep(CONNECTION_LIFETIME) => {
            TIMED_OUT.fetch_add(1, Ordering::Relaxed);
            debug!("HTTP: {peer} reached the connection lifetime");
        }
    }
    // Closes an idle connection now, or after the response in progress. A client still sending
    // its headers (slowly, maybe on purpose) or not reading its response gets no grace beyond
    // what flushing a response takes.
    connection.as_mut().graceful_shutdown();
    let grace = if in_flight.load(Ordering::Relaxed) > 0 {
        SHUTDOWN_GRACE
    } else {
        FLUSH_GRACE
    };
    if let Ok(result) = tokio::time::timeout(grace, connection).await {
        note_end(peer, result);
    }
}

/// Counts a request of a connection as in progress from its complete headers until hyper drops
/// its response body (written, or the connection gone).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A complete response body that keeps its request counted as in progress.
struct ResponseBody {
    body: Full<Bytes>,
    _in_flight: InFlight,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    // Exact: hyper sets Content-Length from it.
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn note_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        if e.is_timeout() {
            TIMED_OUT.fetch_add(1, Ordering::Relaxed);
        }
        debug!("HTTP connection from {peer}: {e}");
    }
}

async fn respond(
    request: Request<Incoming>,
    handler: Handler,
    in_flight: InFlight,
) -> Result<hyper::Response<ResponseBody>, Infallible> {
    let method = request.method();
    let response = if method == Method::GET || method == Method::HEAD {
        let path = request.uri().path().to_owned();
        match tokio::task::spawn_blocking(move || handler(&path)).await {
            Ok(response) => response,
            Err(e) => {
                warn!("HTTP handler for {}: {e}", request.uri().path());
                Response {
                    status: 500,
                    content_type: "text/plain; charset=utf-8",
                    body: b"internal error\n".to_vec(),
                }
            }
        }
    } else {
        Response {
            status: 405,
            content_type: "text/plain; charset=utf-8",
            body: b"only GET and HEAD\n".to_vec(),
        }
    };
    // hyper sets Content-Length from the body and sends no body to HEAD.
    let mut out = hyper::Response::new(ResponseBody {
        body: Full::new(Bytes::from(response.body)),
        _in_flight: in_flight,
    });
    *out.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(content_type) = HeaderValue::from_str(response.content_type) {
        out.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    if response.status == 405 {
        out.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{ErrorKind, Read as _, Write as _},
        net::{TcpListener, TcpStream},
        time::Instant,
    };

    use super::*;

    fn test_handler() -> Handler {
        Arc::new(|path: &str| match path {
            "/slow" => {
                std::thread::sleep(Duration::from_millis(800));
                Response {
                    status: 200,
                    content_type: "text/plain",
                    body: b"slow\n".to_vec(),
                }
            }
            "/stuck" => {
                std::thread::sleep(Duration::from_secs(4));
                Response {
                    status: 200,
                    content_type: "text/plain",
                    body: b"late\n".to_vec(),
                }
            }
            "/metrics" => {
                // Rendering takes a while; must not hold up other connections.
                std::thread::sleep(Duration::from_millis(20));
                Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body: b"x 1\n".to_vec(),
                }
            }
            _ => Response {
                status: 404,
                content_type: "text/plain",
                body: b"no\n".to_vec(),
            },
        })
    }

    fn start() -> Server {
        Server::start("127.0.0.1:0".parse().unwrap(), test_handler()).unwrap()
    }

    /// Sends `request` and reads until the server closes (or 10 s pass).
    fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        exchange(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        )
    }

    #[test]
    fn serves_routes_and_rejects_other_methods() {
        let server = start();
        let addr = server.local_addr();
        let ok = get(addr, "/metrics?x=1");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("content-length: 4\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4\r\n"),
            "{ok}"
        );
        assert!(ok.ends_with("\r\n\r\nx 1\n"), "{ok}");
        let head = exchange(
            addr,
            "HEAD /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD must have no body: {head}");
        let missing = get(addr, "/nope");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = exchange(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(post.contains("allow: GET, HEAD\r\n"), "{post}");
        // Two requests on one kept-alive connection.
        let both = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nGET /metrics HTTP/1.1\r\nHost: a\r\n\
             Connection: close\r\n\r\n",
        );
        assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "{both}");
        server.stop();
        assert!(
            TcpStream::connect(addr).is_err(),
            "still listening after stop"
        );
    }

    #[test]
    fn oversized_headers_get_431() {
        let server = start();
        let big = "a".repeat(MAX_HEADER_BYTES + 100);
        let answer = exchange(
            server.local_addr(),
            &format!("GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n"),
        );
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "expected 431 for {} bytes of headers, got: {answer:.200}",
            big.len()
        );
        // Just under the limit is fine.
        let fits = "a".repeat(MAX_HEADER_BYTES - 200);
        let answer = exchange(
            server.local_addr(),
            &format!(
                "GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    }

    #[test]
    fn slow_header_client_is_cut_off_while_others_are_served() {
        let server = start();
        let addr = server.local_addr();
        let timed_out_before = counters().timed_out;
        let slow = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let started = Instant::now();
            s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            // A header line every second, for up to 20 s: the server must hang up first.
            for i in 0..20 {
                std::thread::sleep(Duration::from_secs(1));
                if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                    .is_err()
                {
                    break;
                }
                let mut buf = [0u8; 64];
                s.set_nonblocking(true).unwrap();
                // Anything but "nothing to read yet" means the server answered or hung up.
                if !matches!(s.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock) {
                    break;
                }
                s.set_nonblocking(false).unwrap();
            }
            started.elapsed()
        });
        // Meanwhile, normal requests are answered promptly.
        std::thread::sleep(Duration::from_millis(500));
        for _ in 0..5 {
            let started = Instant::now();
            let ok = get(addr, "/metrics");
            let took = started.elapsed();
            assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
            assert!(
                took < Duration::from_millis(500),
                "a GET next to a slow-header client took {took:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let held = slow.join().unwrap();
        eprintln!("slow-header client held {held:?}");
        assert!(
            held + Duration::from_millis(100) >= HEADER_DEADLINE
                && held < HEADER_DEADLINE + Duration::from_secs(3),
            "the slow-header client should be cut off at about {HEADER_DEADLINE:?}, was held \
             {held:?}"
        );
        assert!(
            counters().timed_out > timed_out_before,
            "the cut-off should be counted as timed out"
        );
    }

    #[test]
    fn many_idle_connections_do_not_delay_a_scrape() {
        let server = start();
        let addr = server.local_addr();
        let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let started = Instant::now();
        let ok = get(addr, "/metrics");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a scrape next to 50 idle connections took {:?}",
            started.elapsed()
        );
        drop(idle);
    }

    #[test]
    fn connections_beyond_the_cap_are_closed_at_once() {
        let server = start();
        let addr = server.local_addr();
        let refused_before = counters().refused;
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // Let the server accept them all.
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = TcpStream::connect(addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let closed = match extra.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        assert!(
            closed && started.elapsed() < Duration::from_secs(1),
            "connection number {} should be closed at once (closed {closed}, after {:?})",
            MAX_CONNECTIONS + 1,
            started.elapsed()
        );
        assert!(counters().refused > refused_before, "refusal not counted");
        drop(idle);
        // Once they are gone, new connections are served again.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let ok = get(addr, "/metrics");
            if ok.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not served after the idle ones closed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn stop_returns_promptly_with_idle_and_slow_connections_open() {
        let server = start();
        let addr = server.local_addr();
        let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut partial = TcpStream::connect(addr).unwrap();
        partial.write_all(b"GET /metrics HTTP/1.1\r\nHost").unwrap();
        // A kept-alive connection that has been served once.
        let mut kept = TcpStream::connect(addr).unwrap();
        kept.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 256];
        assert!(kept.read(&mut buf).unwrap() > 0);
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        server.stop();
        let took = started.elapsed();
        eprintln!("stop() with 22 open connections, none being answered, took {took:?}");
        assert!(
            took < Duration::from_millis(500),
            "stop() took {took:?} with idle and half-sent connections open and no request in \
             progress"
        );
        assert!(
            TcpStream::connect(addr).is_err(),
            "still listening after stop"
        );
        drop((idle, partial, kept));
    }

    #[test]
    fn stop_lets_a_request_in_progress_finish() {
        let server = start();
        let addr = server.local_addr();
        let slow = std::thread::spawn(move || get(addr, "/slow"));
        let mut half_sent = TcpStream::connect(addr).unwrap();
        half_sent.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        server.stop();
        let took = started.elapsed();
        let answer = slow.join().unwrap();
        eprintln!("stop() with an 800 ms request in progress took {took:?}");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("slow\n"),
            "a request in progress at stop() should be answered: {answer:?}"
        );
        assert!(
            took >= Duration::from_millis(400) && took < SHUTDOWN_GRACE,
            "stop() should wait for the request in progress (about 600 ms), took {took:?}"
        );
        drop(half_sent);
    }

    #[test]
    fn stop_does_not_wait_for_a_stuck_handler_beyond_the_grace() {
        let server = start();
        let addr = server.local_addr();
        let stuck = std::thread::spawn(move || get(addr, "/stuck"));
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        server.stop();
        let took = started.elapsed();
        eprintln!("stop() with a 4 s request in progress took {took:?}");
        assert!(
            took < SHUTDOWN_GRACE + Duration::from_millis(300),
            "stop() should give up on a stuck request after {SHUTDOWN_GRACE:?}, took {took:?}"
        );
        let answer = stuck.join().unwrap();
        assert!(
            !answer.contains("late"),
            "the stuck request was cut, yet answered: {answer:?}"
        );
    }

    #[test]
    fn bind_errors_say_why() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let Err(e) = Server::start(taken.local_addr().unwrap(), test_handler()) else {
            panic!("bound a port already in use");
        };
        let text = format!("{e:#}");
        assert!(text.contains("in use by another process?"), "{text}");
        // TEST-NET-1 (RFC 5737): never an address of this machine.
        let Err(e) = Server::start("192.0.2.1:9747".parse().unwrap(), test_handler()) else {
            panic!("bound an address that is not on this machine");
        };
        let text = format!("{e:#}");
        assert!(
            text.contains("not an address of this machine") && !text.contains("in use"),
            "{text}"
        );
    }
}

//! The metrics and health HTTP server on the config's `addr`.
//!
//! * `GET /metrics`: [`litestream_core::metrics::render_prometheus`] as
//!   `text/plain; version=0.0.4; charset=utf-8`.
//! * `GET /healthz`: `200 ok` when every registered replica synced within the lag threshold
//!   (default [`DEFAULT_MAX_LAG`]), else `503` naming each lagging replica and its lag.
//! * `HEAD` works on both; other methods get `405`, other paths `404`. (Litestream also
//!   serves Go's `/debug/pprof/`; we don't.)
//!
//! HTTP/1.1 by hyper, with the limits that keep idle or slow clients from using up the file
//! descriptors replication needs ([`Limits`]): at most 64 connections open at once (more are
//! closed as soon as they are accepted), request heads up to 16 KiB sent within 10 s, 10 s to
//! take a response once the socket is full, and a kept-alive connection closed after 1 s
//! without a new request (a scraper every 15 s reconnects, as it would through any proxy).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use litestream_core::metrics;
use litestream_core::url::split_host_port;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// `/healthz` fails for a replica that has not synced for longer than this.
pub(crate) const DEFAULT_MAX_LAG: Duration = Duration::from_secs(60);

/// The limits of the server (see the module docs); tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections served at once; further ones are closed on accept.
    max_connections: usize,
    /// Largest request head (hyper answers `431` beyond it).
    max_head: usize,
    /// Time to send a whole request head, from the connection or the previous response.
    header_read_timeout: Duration,
    /// Time a response may stay stuck in a full socket before the connection is dropped.
    write_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    keep_alive_idle: Duration,
}

const LIMITS: Limits = Limits {
    max_connections: 64,
    max_head: 16 * 1024,
    header_read_timeout: Duration::from_secs(10),
    write_timeout: Duration::from_secs(10),
    keep_alive_idle: Duration::from_secs(1),
};

/// Raise the soft limit on open files to the hard limit (Go's runtime does the same since
/// 1.19): the default soft limit of 1024 is easily reached by a busy process. Returns the new
/// soft limit; failures are logged and leave the limit as it was.
pub(crate) fn raise_nofile_limit() -> Option<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(),
                    "cannot raise the open files limit");
                return Some(lim.rlim_cur);
            }
            return Some(want.rlim_cur);
        }
    }
    Some(lim.rlim_cur)
}

/// Split `addr` as Go's `net.SplitHostPort` does and require a port, with Litestream's
/// error: `must specify port for bind address: "9999"`. Returns (host, port).
pub(crate) fn parse_addr(addr: &str) -> Result<(String, u16)> {
    let no_port = || anyhow::anyhow!("must specify port for bind address: {addr:?}");
    let (host, port) = match split_host_port(addr) {
        Some((host, Some(port))) if !port.is_empty() => (host, port),
        None if !addr.starts_with('[') => bail!("invalid bind address {addr:?}: too many colons"),
        _ => return Err(no_port()),
    };
    let port: u16 = port
        .parse()
        .with_context(|| format!("invalid port in bind address: {addr:?}"))?;
    Ok((host.to_string(), port))
}

/// The URL Litestream logs (`serving metrics on url=…`): an empty host prints `localhost`.
pub(crate) fn metrics_url(addr: &str) -> Result<String> {
    let (host, port) = parse_addr(addr)?;
    let host = match host.as_str() {
        "" => "localhost".to_string(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_string(),
    };
    Ok(format!("http://{host}:{port}/metrics"))
}

/// Add the `process_*` series Go's Prometheus client serves (CPU, memory, file descriptors,
/// start time, threads) to the registry `/metrics` renders, once.
fn register_process_metrics() {
    #[cfg(target_os = "linux")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let collector = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(e) = metrics::registry().register(Box::new(collector)) {
                tracing::warn!(error = %e, "cannot register the process metrics");
            }
        });
    }
}

/// A bound, not yet serving, listener (bind errors surface before anything runs).
#[derive(Debug)]
pub(crate) struct Server {
    listener: TcpListener,
    max_lag: Duration,
    limits: Limits,
}

impl Server {
    /// Bind `addr` (`host:port`; an empty host listens on all interfaces).
    pub(crate) async fn bind(addr: &str) -> Result<Server> {
        let (host, port) = parse_addr(addr)?;
        let listener = if host.is_empty() {
            // All interfaces: IPv6 (dual stack where available), else IPv4.
            match TcpListener::bind(("::", port)).await {
                Ok(l) => l,
                Err(_) => TcpListener::bind(("0.0.0.0", port)).await?,
            }
        } else {
            TcpListener::bind((host.as_str(), port)).await?
        };
        register_process_metrics();
        Ok(Server {
            listener,
            max_lag: DEFAULT_MAX_LAG,
            limits: LIMITS,
        })
    }

    /// The real bound address for logs, e.g. `[::]:9090 (all interfaces)`.
    pub(crate) fn describe(&self) -> String {
        match self.listener.local_addr() {
            Ok(a) if a.ip().is_unspecified() => format!("{a} (all interfaces)"),
            Ok(a) => a.to_string(),
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Serve until `shutdown` is cancelled; open connections then finish their current
    /// response and close.
    pub(crate) async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let permits = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            // At the cap: close at once rather than hold a descriptor.
                            tracing::debug!(%peer, "http connection limit reached; closed");
                            drop(stream);
                            continue;
                        };
                        let (max_lag, limits, stop) = (self.max_lag, self.limits, shutdown.clone());
                        tokio::spawn(async move {
                            serve_connection(stream, max_lag, limits, stop).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // e.g. EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

/// Serve the requests of one connection until the client closes it, a limit is hit, or
/// `shutdown` is cancelled.
async fn serve_connection(
    stream: TcpStream,
    max_lag: Duration,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let requests = Arc::new(Notify::new());
    let service = {
        let requests = requests.clone();
        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            requests.notify_one();
            let resp = route(req.method(), req.uri().path(), max_lag);
            async move { Ok::<_, Infallible>(resp) }
        })
    };
    let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head)
        .title_case_headers(true)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    // Until the first request, hyper's header timeout alone applies.
    let mut idle = limits.header_read_timeout;
    let mut closing = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "http connection failed");
                }
                return;
            }
            _ = requests.notified() => idle = limits.keep_alive_idle,
            _ = tokio::time::sleep(idle), if !closing => {
                // Closes an idle connection now, a busy one after its response.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// A response with a content type.
fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body.into())
}

/// Route one request (hyper leaves the body out of `HEAD` responses).
fn route(method: &Method, path: &str, max_lag: Duration) -> Response<Full<Bytes>> {
    match path {
        "/metrics" | "/healthz" if method != Method::GET && method != Method::HEAD => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::render_prometheus(),
        ),
        "/healthz" => healthz(max_lag),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

fn healthz(max_lag: Duration) -> Response<Full<Bytes>> {
    let health = metrics::replica_health(max_lag);
    let bad: Vec<_> = health.iter().filter(|h| !h.healthy).collect();
    if bad.is_empty() {
        return text(StatusCode::OK, "ok\n");
    }
    let mut body = format!(
        "{} of {} replicas lagging (threshold {}s):\n",
        bad.len(),
        health.len(),
        max_lag.as_secs()
    );
    for h in bad {
        let what = if h.synced {
            "last synced"
        } else {
            "never synced, started"
        };
        body.push_str(&format!(
            "db={} replica={} {what} {:.1}s ago\n",
            h.db,
            h.name,
            h.lag.as_secs_f64()
        ));
    }
    text(StatusCode::SERVICE_UNAVAILABLE, body)
}

/// A stream whose writes fail with `TimedOut` when the peer has not taken the pending data
/// within `timeout`: the clock starts when a write or flush first finds the socket full and
/// stops when a flush completes (hyper flushes after each response).
#[derive(Debug)]
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Pass a `Pending` through unless the clock ran out.
    fn check<T>(
        &mut self,
        cx: &mut TaskContext<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            return poll;
        }
        let timeout = self.timeout;
        let clock = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no data for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        if poll.is_ready() {
            self.stalled = None;
        }
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

/// Test-only settings (the binary uses the defaults).
#[cfg(test)]
impl Server {
    /// Set the connection cap.
    fn with_max_connections(mut self, n: usize) -> Server {
        self.limits.max_connections = n;
        self
    }

    /// Set the `/healthz` lag threshold.
    fn with_max_lag(mut self, max_lag: Duration) -> Server {
        self.max_lag = max_lag;
        self
    }

    /// Change the limits.
    fn with_limits(mut self, change: impl FnOnce(&mut Limits)) -> Server {
        change(&mut self.limits);
        self
    }

    /// The bound address (useful with port 0).
    fn local_addr(&self) -> Result<std::net::SocketAddr> {
        Ok(self.listener.local_addr()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn addr_requires_port() {
        let e = parse_addr("9999").unwrap_err().to_string();
        assert_eq!(e, "must specify port for bind address: \"9999\"");
        assert!(parse_addr("localhost:").is_err());
        assert_eq!(parse_addr(":9090").unwrap(), (String::new(), 9090));
        assert_eq!(parse_addr("[::1]:9090").unwrap(), ("::1".into(), 9090));
        for (addr, why) in [
            ("[::1]", "must specify port"),
            ("[::1]x", "must specify port"),
            ("::1:9090", "too many colons"),
            ("h:x", "invalid port"),
        ] {
            let e = parse_addr(addr).unwrap_err().to_string();
            assert!(e.contains(why), "{addr}: {e}");
        }
        assert_eq!(
            metrics_url(":9090").unwrap(),
            "http://localhost:9090/metrics"
        );
        assert_eq!(
            metrics_url("127.0.0.1:9090").unwrap(),
            "http://127.0.0.1:9090/metrics"
        );
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    #[tokio::test]
    async fn idle_connections_are_capped_and_requests_still_served_after() {
        let server = Server::bind("127.0.0.1:0")
            .await
            .unwrap()
            .with_max_connections(8);
        let addr = server.local_addr().unwrap();
        assert!(server.describe().starts_with("127.0.0.1:"));
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone()));
        let before = open_fds();
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Let the server accept them all (and close what is over the cap).
        let mut last = 0;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = open_fds();
            if now == last {
                break;
            }
            last = now;
        }
        let held = open_fds() - before;
        // 200 client sockets of this test, at most 8 server ones (plus slack for the runtime).
        assert!(
            held <= 200 + 8 + 4,
            "{held} descriptors for 200 idle connections"
        );
        drop(idle);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn nofile_soft_limit_is_raised_to_the_hard_limit() {
        let got = raise_nofile_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(got, lim.rlim_cur);
    }

    async fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_404() {
        let server = Server::bind("127.0.0.1:0")
            .await
            .unwrap()
            .with_max_lag(Duration::from_secs(30));
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone()));

        let db = "/tmp/http-test/app.db";
        metrics::db(db).sync_count.inc();
        let r = metrics::replica(db, "file");
        r.mark_synced();

        let m = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
        assert!(m.contains("Content-Type: text/plain; version=0.0.4"), "{m}");
        assert!(m.contains("litestream_sync_count{db=\"/tmp/http-test/app.db\"} 1"));

        let h = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(
            h.starts_with("HTTP/1.1 200 OK\r\n") && h.ends_with("\r\n\r\nok\n"),
            "{h}"
        );

        r.mark_synced_at(std::time::SystemTime::now() - Duration::from_secs(90));
        let h = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(h.starts_with("HTTP/1.1 503 "), "{h}");
        assert!(h.contains("replica=file"), "{h}");

        let n = get(addr, "GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(n.starts_with("HTTP/1.1 404 "), "{n}");
        let p = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(p.starts_with("HTTP/1.1 405 "), "{p}");

        metrics::unregister_db(db);
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn metrics_include_the_process_series() {
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone()));
        let m = get(addr, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        for name in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_start_time_seconds",
        ] {
            assert!(
                m.contains(&format!("\n# TYPE {name} ")),
                "{name} missing\n{m}"
            );
        }
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    /// Read one response (head and `Content-Length` body) without waiting for the close.
    async fn read_response(s: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if body.len() >= len {
                    return text;
                }
            }
        }
    }

    #[tokio::test]
    async fn keeps_connections_alive_then_closes_them_when_idle() {
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone()));
        let mut s = TcpStream::connect(addr).await.unwrap();
        for path in ["/healthz", "/metrics", "/healthz"] {
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let r = read_response(&mut s).await;
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        }
        let head = "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut rest = String::new();
        s.read_to_string(&mut rest).await.unwrap();
        let (head, body) = rest.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && body.is_empty(),
            "{rest}"
        );
        let idle = started.elapsed();
        assert!(
            idle >= LIMITS.keep_alive_idle / 2 && idle < LIMITS.keep_alive_idle * 5,
            "closed after {idle:?}"
        );
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn slow_and_oversized_heads_are_refused() {
        let server = Server::bind("127.0.0.1:0")
            .await
            .unwrap()
            .with_limits(|l| l.header_read_timeout = Duration::from_millis(300));
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone()));

        // A head that never ends: the connection is closed after the header timeout.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: 1")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "a slow head kept its connection");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );

        // A head over the limit: 431 (or a reset), never a served request.
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(LIMITS.max_head + 1024)
        );
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(big.as_bytes()).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 431 "), "{out}");
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_write_the_peer_never_takes_times_out() {
        let (ours, _peer) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(ours, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = w.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(190));

        // Data the peer takes in time flushes, and the clock starts again for the next write.
        let (ours, mut peer) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(ours, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got.len()
        });
        for _ in 0..3 {
            w.write_all(&[1u8; 1024]).await.unwrap();
            w.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), 3 * 1024);
    }
}

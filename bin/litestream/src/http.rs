//! The metrics and health HTTP server on the config's `addr`.
//!
//! * `GET /metrics`: [`litestream_core::metrics::render_prometheus`] as
//!   `text/plain; version=0.0.4; charset=utf-8`.
//! * `GET /healthz`: `200 ok` when every registered replica synced within the lag threshold
//!   (default [`DEFAULT_MAX_LAG`]), else `503` naming each lagging replica and its lag.
//! * `HEAD` works on both; other methods get `405`, other paths `404`. (Litestream also
//!   serves Go's `/debug/pprof/`; we don't.)
//!
//! A deliberately small HTTP/1.1 server over tokio's `TcpListener`: one request per
//! connection (`Connection: close`), request heads up to 16 KiB, 10 s to send them, 10 s to
//! take the response, and at most [`MAX_CONNECTIONS`] connections open at once (more are
//! closed as soon as they are accepted), so that idle or slow clients cannot use up the file
//! descriptors replication needs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use litestream_core::metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// `/healthz` fails for a replica that has not synced for longer than this.
pub(crate) const DEFAULT_MAX_LAG: Duration = Duration::from_secs(60);

const MAX_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; further ones are closed on accept.
pub(crate) const MAX_CONNECTIONS: usize = 64;

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
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or_else(no_port)?;
        (h, p.strip_prefix(':').ok_or_else(no_port)?)
    } else {
        let (h, p) = addr.rsplit_once(':').ok_or_else(no_port)?;
        if h.contains(':') {
            bail!("invalid bind address {addr:?}: too many colons");
        }
        (h, p)
    };
    if port.is_empty() {
        return Err(no_port());
    }
    let port: u16 = port
        .parse()
        .with_context(|| format!("invalid port in bind address: {addr:?}"))?;
    Ok((host.to_string(), port))
}

/// Check `addr` without binding (for config validation at start).
#[allow(dead_code)] // API kept for callers
pub(crate) fn validate_addr(addr: &str) -> Result<()> {
    parse_addr(addr).map(|_| ())
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
    permits: std::sync::Arc<tokio::sync::Semaphore>,
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
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        })
    }

    /// Set the connection cap (tests).
    #[cfg_attr(not(test), allow(dead_code))] // API kept for callers and tests
    pub(crate) fn with_max_connections(mut self, n: usize) -> Server {
        self.permits = std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    /// The real bound address for logs, e.g. `[::]:9090 (all interfaces)`.
    pub(crate) fn describe(&self) -> String {
        match self.listener.local_addr() {
            Ok(a) if a.ip().is_unspecified() => format!("{a} (all interfaces)"),
            Ok(a) => a.to_string(),
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Set the `/healthz` lag threshold.
    #[cfg_attr(not(test), allow(dead_code))] // API kept for callers and tests
    pub(crate) fn with_max_lag(mut self, max_lag: Duration) -> Server {
        self.max_lag = max_lag;
        self
    }

    /// The bound address (useful with port 0).
    #[cfg_attr(not(test), allow(dead_code))] // API kept for callers and tests
    pub(crate) fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve until `shutdown` turns true (or its sender is dropped).
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            tokio::select! {
                _ = shutdown.changed() => {
                    if shutdown.has_changed().is_err() || *shutdown.borrow() {
                        return Ok(());
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                            // At the cap: close at once rather than hold a descriptor.
                            tracing::debug!(%peer, "http connection limit reached; closed");
                            drop(stream);
                            continue;
                        };
                        let max_lag = self.max_lag;
                        tokio::spawn(async move {
                            if let Err(e) = handle(stream, max_lag).await {
                                tracing::debug!(error = %e, "http request failed");
                            }
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

/// Bind `addr` and serve `/metrics` and `/healthz` until `shutdown` turns true.
#[allow(dead_code)] // API kept for callers
pub(crate) async fn serve(addr: &str, shutdown: watch::Receiver<bool>) -> Result<()> {
    Server::bind(addr).await?.run(shutdown).await
}

/// A response: status line text, content type and body.
#[derive(Debug, PartialEq)]
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

fn text(status: &'static str, body: impl Into<String>) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

/// Route one request (method and target from the request line).
fn route(method: &str, target: &str, max_lag: Duration) -> Response {
    let path = target.split(['?', '#']).next().unwrap_or("");
    match path {
        "/metrics" | "/healthz" if method != "GET" && method != "HEAD" => {
            text("405 Method Not Allowed", "method not allowed\n")
        }
        "/metrics" => Response {
            status: "200 OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render_prometheus(),
        },
        "/healthz" => healthz(max_lag),
        _ => text("404 Not Found", "404 page not found\n"),
    }
}

fn healthz(max_lag: Duration) -> Response {
    let health = metrics::replica_health(max_lag);
    let bad: Vec<_> = health.iter().filter(|h| !h.healthy).collect();
    if bad.is_empty() {
        return text("200 OK", "ok\n");
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
    text("503 Service Unavailable", body)
}

async fn handle(mut stream: TcpStream, max_lag: Duration) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 2048];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed before the request head ended");
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
                return Ok(i);
            }
            if buf.len() > MAX_HEAD {
                bail!("request head too large");
            }
        }
    })
    .await
    .context("timed out reading the request")??;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let resp = match (method, target, version) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => route(m, t, max_lag),
        _ => text("400 Bad Request", "bad request\n"),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    )
    .into_bytes();
    if method != Some("HEAD") {
        out.extend_from_slice(resp.body.as_bytes());
    }
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await
    .context("timed out writing the response")??;
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addr_requires_port() {
        let e = parse_addr("9999").unwrap_err().to_string();
        assert_eq!(e, "must specify port for bind address: \"9999\"");
        assert!(parse_addr("localhost:").is_err());
        assert_eq!(parse_addr(":9090").unwrap(), (String::new(), 9090));
        assert_eq!(parse_addr("[::1]:9090").unwrap(), ("::1".into(), 9090));
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
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(server.run(rx));
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
        tx.send(true).unwrap();
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
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(server.run(rx));

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
        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn metrics_include_the_process_series() {
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(server.run(rx));
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
        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }
}

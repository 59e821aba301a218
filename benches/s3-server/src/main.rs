//! `bench-s3-server`: the local S3 server of `benches/s3_restore.sh`.
//!
//! It serves a directory as S3 (`ROOT/<bucket>/<key>`) with the `s3s-fs` storage of the `s3s`
//! project, as the `s3s-fs` binary does, with two differences that matter for a benchmark:
//!
//! * accepted sockets get `TCP_NODELAY`, as production S3 servers (and Go's net/http) do. The
//!   `s3s-fs` 0.14.1 binary leaves Nagle on, so a GET whose headers and body go out in two writes
//!   waits for the client's delayed ACK (40 ms on Linux): that measures the kernel's timers, not
//!   the client.
//! * one access-log line per request (`METHOD URI STATUS`), so the benchmark counts requests
//!   without debug tracing.
//!
//! With `--latency-ms N` every response is held back N ms before it is sent, a stand-in for a
//! remote store's time to first byte (tens of ms for S3 from outside its region).
//!
//! Usage: `bench-s3-server --port PORT --access-key AK --secret-key SK --access-log FILE
//! [--latency-ms N] ROOT` (listens on 127.0.0.1).

use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Command-line options.
#[derive(Debug)]
struct Options {
    port: u16,
    access_key: String,
    secret_key: String,
    access_log: PathBuf,
    latency: std::time::Duration,
    root: PathBuf,
}

fn parse_options() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut ak, mut sk, mut log, mut root) = (None, None, None, None, None);
    let mut latency_ms = 0u64;
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--port" => port = Some(value("--port")?.parse::<u16>().context("--port")?),
            "--access-key" => ak = Some(value("--access-key")?),
            "--secret-key" => sk = Some(value("--secret-key")?),
            "--access-log" => log = Some(PathBuf::from(value("--access-log")?)),
            "--latency-ms" => {
                latency_ms = value("--latency-ms")?.parse().context("--latency-ms")?
            }
            _ if a.starts_with('-') => bail!("unknown option {a}"),
            _ => root = Some(PathBuf::from(a)),
        }
    }
    Ok(Options {
        port: port.context("--port is required")?,
        access_key: ak.context("--access-key is required")?,
        secret_key: sk.context("--secret-key is required")?,
        access_log: log.context("--access-log is required")?,
        latency: std::time::Duration::from_millis(latency_ms),
        root: root.context("ROOT directory is required")?,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let opts = parse_options()?;
    let fs = s3s_fs::FileSystem::new(&opts.root)
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", opts.root.display()))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(opts.access_key, opts.secret_key));
    let service = builder.build();
    let log = File::create(&opts.access_log)
        .with_context(|| format!("creating {}", opts.access_log.display()))?;
    let log = Arc::new(Mutex::new(LineWriter::new(log)));
    let latency = opts.latency;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", opts.port))?;
    eprintln!("bench-s3-server listening on 127.0.0.1:{}", opts.port);
    loop {
        let (socket, _) = listener.accept().await.context("accept")?;
        socket.set_nodelay(true).context("TCP_NODELAY")?;
        let service = service.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let handler = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let service = service.clone();
                let log = log.clone();
                let line = format!("{} {}", req.method(), req.uri());
                async move {
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    let result = hyper::service::Service::call(&service, req).await;
                    let status = match &result {
                        Ok(resp) => resp.status().as_u16().to_string(),
                        Err(_) => "ERR".to_string(),
                    };
                    if let Ok(mut w) = log.lock() {
                        let _ = writeln!(w, "{line} {status}");
                    }
                    result
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), handler)
                .await;
        });
    }
}

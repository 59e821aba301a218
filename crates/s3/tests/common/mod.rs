//! Shared helpers for the S3 tests: the test server from the environment, random prefixes,
//! and a private moto server for fault tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Byte streams, whole reads and deterministic incompressible payloads (`bytes(len, seed)`).
pub use litestream_conformance::{payload as bytes, read_all, stream};
use litestream_core::ByteStream;
use litestream_s3::{S3Builder, S3Client};

/// One of the `TEST_S3_*` variables; panics (never skips) when it is unset.
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the S3 tests need the local S3 test server; run scripts/test.sh \
             (or eval \"$(bash scripts/test-servers/start.sh)\")"
        ),
    }
}

/// A fresh random key prefix, so tests never see each other's objects.
pub fn random_prefix(test: &str) -> String {
    format!("s3-tests/{test}-{:016x}", rand::random::<u64>())
}

/// A builder for the shared test server with a fresh prefix.
pub fn builder(test: &str) -> S3Builder {
    S3Builder::new(env("TEST_S3_BUCKET"))
        .with_endpoint(env("TEST_S3_ENDPOINT"))
        .with_region(env("TEST_S3_REGION"))
        .with_credentials(
            env("TEST_S3_ACCESS_KEY_ID"),
            env("TEST_S3_SECRET_ACCESS_KEY"),
        )
        .with_path(random_prefix(test))
}

/// A client for the shared test server with a fresh prefix.
pub async fn client(test: &str) -> S3Client {
    builder(test).build().await.expect("build s3 client")
}

/// Read a whole stream, returning read errors as the core error (retryable when transient).
pub async fn try_read_all(mut s: ByteStream) -> litestream_core::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .map_err(|e| litestream_core::Error::io("stream", e))?;
    Ok(out)
}

/// A free TCP port on 127.0.0.1 (nobody listens on it once this returns).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A moto server of our own, on its own port, for tests that stop the server.
#[derive(Debug)]
pub struct OwnMoto {
    pub port: u16,
    tls: bool,
    child: Option<Child>,
}

fn moto_bin() -> PathBuf {
    let dir = env("TEST_SERVERS_DIR");
    let p = PathBuf::from(dir).join("venv/bin/moto_server");
    assert!(
        p.exists(),
        "{} missing: run scripts/test.sh (it installs moto)",
        p.display()
    );
    p
}

impl OwnMoto {
    /// Start moto on a free port and wait until it answers.
    pub fn start() -> OwnMoto {
        Self::start_with_tls(false)
    }

    /// Start moto; with `tls`, over HTTPS with a self-signed certificate (`moto_server -s`).
    pub fn start_with_tls(tls: bool) -> OwnMoto {
        let mut m = OwnMoto {
            port: free_port(),
            tls,
            child: None,
        };
        m.restart();
        m
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// (Re)start the server on the same port and create `bucket` in it.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new(moto_bin());
        cmd.args(["-H", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.tls {
            cmd.arg("-s");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "own moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the server (its in-memory data is lost).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Create `bucket` through `client` (ignoring "already exists").
pub async fn create_bucket(client: &S3Client, bucket: &str) {
    if let Err(e) = client
        .sdk_client()
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
    {
        let text = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e));
        assert!(text.contains("BucketAlready"), "create bucket: {text}");
    }
}

//! S3 helpers shared by `s3_cli` and `s3_faults_cli`: a private moto server (never the shared
//! test server) and `restore` in URL mode with the credentials only in the environment.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, test_env};

/// A moto server of our own on a free port, from the test servers' venv (killed on drop, by its
/// pid).
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    /// Start it with stdout/stderr going to `log` and wait (60 s at most) for its port.
    pub fn start(log: &Path) -> Moto {
        let dir = test_env(
            "TEST_SERVERS_DIR",
            "the private moto servers need the test servers' venv",
        );
        let bin = PathBuf::from(dir).join("venv/bin/moto_server");
        assert!(
            bin.exists(),
            "{} missing: run scripts/test.sh (it installs moto)",
            bin.display()
        );
        let port = free_port();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn moto_server");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { port, child }
    }

    /// One raw HTTP/1.1 request (`headers` are complete `Name: value\r\n` lines); returns the
    /// whole response.
    pub fn http(&self, method: &str, path: &str, headers: &str, body: &str) -> String {
        let port = self.port;
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    }

    /// `PUT /bucket` (moto accepts unsigned requests unless auth is switched on).
    pub fn create_bucket(&self, bucket: &str) {
        let resp = self.http("PUT", &format!("/{bucket}"), "", "");
        assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bin restore EXTRA -o out url` in URL mode with the credentials only in
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (as the compose healthcheck runs), every other
/// credential source (`LITESTREAM_*` keys, `AWS_PROFILE`) and `AWS_CA_BUNDLE` removed
/// (aws-sdk-go-v2 in v0.5.17 breaks with it set).
pub fn restore_url(
    bin: &Path,
    url: &str,
    out: &Path,
    extra: &[&str],
    key: &str,
    secret: &str,
) -> Output {
    super::restore_url(
        bin,
        url,
        out,
        extra,
        &[
            ("LITESTREAM_ACCESS_KEY_ID", None),
            ("LITESTREAM_SECRET_ACCESS_KEY", None),
            ("AWS_CA_BUNDLE", None),
            ("AWS_PROFILE", None),
            ("AWS_ACCESS_KEY_ID", Some(key)),
            ("AWS_SECRET_ACCESS_KEY", Some(secret)),
        ],
    )
}

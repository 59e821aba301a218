//! Private test servers that one test owns (never the shared ones `scripts/test-servers/start.sh`
//! runs): an OpenSSH sshd, Azurite (blob) and moto (S3), each on a free port of its own, that the
//! test can stop or kill and restart on the same port with the same data, and that are killed
//! when dropped.
//!
//! They reuse what the start script installed and exported (`TEST_SERVERS_DIR`,
//! `TEST_SFTP_KNOWN_HOSTS`, `TEST_ABS_*`; see `.test-servers/env.sh`). A missing variable or
//! binary panics naming it and `bash scripts/test-servers/start.sh`: a failure, never a skip.

// Test support only: a failed setup step should panic with its message, like a test would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod prometheus_text;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to get the test servers' environment and binaries.
const START: &str = "run `bash scripts/test-servers/start.sh` (scripts/test.sh does)";

/// The value of a variable exported by `scripts/test-servers/start.sh`; panics (never skips)
/// naming it when it is unset or empty.
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: the private test servers need it; {START}"),
    }
}

/// `$TEST_SERVERS_DIR/<rel>`, which must exist (panics naming `what` and the start script).
fn installed(rel: &str, what: &str) -> PathBuf {
    let p = PathBuf::from(env("TEST_SERVERS_DIR")).join(rel);
    assert!(p.exists(), "{what} ({}) is missing: {START}", p.display());
    p
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Wait until something accepts connections on 127.0.0.1:`port`; panics naming `what` after
/// `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Send `SIG<signal>` (e.g. `"INT"`, `"TERM"`) to `child` and wait up to `timeout` for it to
/// exit. Returns its exit status, or `None` if it is still running (the caller decides whether
/// to kill it).
pub fn signal_and_wait(child: &mut Child, signal: &str, timeout: Duration) -> Option<ExitStatus> {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("wait for child") {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An append-mode log file (created if needed).
fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

/// Pids whose parent chain leads to `root` (from `/proc`).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may contain spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == p && !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

/// Where the start script's `install_sshd` puts sshd (it must be started by absolute path).
const SSHD: &str = "/usr/sbin/sshd";

/// A private sshd: the shared test server's config and keys (the `sshd_config` next to
/// `TEST_SFTP_KNOWN_HOSTS`) with its own free port. Its VERBOSE log is kept so tests can count
/// logins. Killed (with its sessions) on drop.
#[derive(Debug)]
pub struct PrivateSshd {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    config: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl PrivateSshd {
    /// Write the config copy and start sshd; returns once the port accepts connections.
    pub fn start() -> PrivateSshd {
        assert!(
            Path::new(SSHD).exists(),
            "sshd ({SSHD}, Debian openssh-server) is missing: {START}"
        );
        let shared = PathBuf::from(env("TEST_SFTP_KNOWN_HOSTS"))
            .parent()
            .expect("sshd dir")
            .join("sshd_config");
        let text = std::fs::read_to_string(&shared)
            .unwrap_or_else(|e| panic!("read {}: {e}; {START}", shared.display()));
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("sshd_config");
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("Port ") && !l.starts_with("PidFile "))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&config, format!("Port {port}\nPidFile none\n{body}"))
            .expect("write sshd_config");
        let mut s = PrivateSshd {
            port,
            config,
            child: None,
            _dir: dir,
        };
        s.restart();
        s
    }

    /// Start sshd again (same port, config and keys) after [`kill`](Self::kill); waits (10 s at
    /// most) for the port. Panics if it is still running.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "private sshd is already running");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(append(&self.log()))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {SSHD}: {e}"));
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10), "private sshd");
    }

    /// Kill the listener and every per-connection child it forked (by pid, SIGKILL), dropping
    /// all sessions as a crash would. Does nothing if it is not running.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        for p in descendants(child.id()) {
            let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The host key sshd presents now (`ALGORITHM BASE64`, the `.pub` of its `HostKey`).
    pub fn host_key(&self) -> String {
        let text = std::fs::read_to_string(&self.config).expect("read private sshd_config");
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("HostKey "))
            .expect("HostKey line in sshd_config");
        let public = std::fs::read_to_string(format!("{}.pub", key.trim()))
            .unwrap_or_else(|e| panic!("read {key}.pub: {e}"));
        let mut fields = public.split_whitespace();
        format!(
            "{} {}",
            fields.next().expect("algorithm"),
            fields.next().expect("key")
        )
    }

    /// Give the server a new ed25519 host key (as a reinstalled or impersonated server would
    /// present) and restart it if it was running. Returns the new public key (`ALGO BASE64`).
    pub fn change_host_key(&mut self) -> String {
        let n = std::fs::read_dir(self.config.parent().expect("dir"))
            .expect("read sshd dir")
            .count();
        let key = self.config.with_file_name(format!("host_key_{n}"));
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap_or_else(|e| panic!("ssh-keygen: {e}"));
        assert!(st.success(), "ssh-keygen failed");
        let text = std::fs::read_to_string(&self.config).expect("read private sshd_config");
        let body: String = text
            .lines()
            .map(|l| {
                if l.starts_with("HostKey ") {
                    format!("HostKey {}\n", key.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&self.config, body).expect("write sshd_config");
        if self.child.is_some() {
            self.kill();
            self.restart();
        }
        self.host_key()
    }

    /// sshd's log (stderr, kept across restarts).
    pub fn log(&self) -> PathBuf {
        self.config.with_file_name("sshd.log")
    }

    /// How many logins the server accepted so far (from its VERBOSE log).
    pub fn accepted_logins(&self) -> usize {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Accepted publickey for") || l.contains("Accepted password for"))
            .count()
    }
}

impl Drop for PrivateSshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private Azurite (blob service) from `$TEST_SERVERS_DIR/node`, on its own port and data
/// directory, that keeps its data across [`stop`](Self::stop) / [`restart`](Self::restart).
/// Its output goes to `<data>.log`. Stopped on drop.
#[derive(Debug)]
pub struct Azurite {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    data: PathBuf,
    child: Option<Child>,
}

impl Azurite {
    /// Start Azurite on a free port with its data in `data` (created if needed); returns once
    /// the port accepts connections.
    pub fn start(data: &Path) -> Azurite {
        let mut az = Azurite {
            port: free_port(),
            data: data.to_path_buf(),
            child: None,
        };
        az.restart();
        az
    }

    /// Start it again on the same port with the same data, stopping it first if it runs;
    /// waits (60 s at most) for the port.
    pub fn restart(&mut self) {
        self.stop();
        let bin = installed("node/node_modules/.bin/azurite-blob", "azurite-blob");
        std::fs::create_dir_all(&self.data).expect("azurite data dir");
        let log = append(&self.data.with_extension("log"));
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .arg("--location")
            .arg(&self.data)
            .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(60), "private azurite");
    }

    /// Graceful stop (SIGTERM, as an orchestrator would; SIGKILL after 15 s), waiting for the
    /// process to exit. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if signal_and_wait(&mut child, "TERM", Duration::from_secs(15)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// `http://127.0.0.1:PORT/ACCOUNT` with `TEST_ABS_ACCOUNT_NAME`.
    pub fn endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            env("TEST_ABS_ACCOUNT_NAME")
        )
    }

    /// Create `container` (with `TEST_ABS_ACCOUNT_NAME` / `TEST_ABS_ACCOUNT_KEY`, through the
    /// start script's `bin/azcontainer.py`); panics with its output on failure.
    pub fn create_container(&self, container: &str) {
        let script = installed("bin/azcontainer.py", "azcontainer.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(self.endpoint())
            .arg(container)
            .env("AZURE_ACCOUNT", env("TEST_ABS_ACCOUNT_NAME"))
            .env("AZURE_KEY", env("TEST_ABS_ACCOUNT_KEY"))
            .stdin(Stdio::null())
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "create container {container} on private azurite failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private moto server from `$TEST_SERVERS_DIR/venv` on its own free port. Moto keeps its
/// data in memory: a restart comes back empty. Killed on drop.
#[derive(Debug)]
pub struct Moto {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    tls: bool,
    log: Option<PathBuf>,
    child: Option<Child>,
}

impl Moto {
    /// Start moto over plain HTTP, output discarded; returns once the port accepts connections.
    pub fn start() -> Moto {
        Self::launch(false, None)
    }

    /// Start moto; with `tls`, over HTTPS with a self-signed certificate (`moto_server -s`).
    pub fn start_with_tls(tls: bool) -> Moto {
        Self::launch(tls, None)
    }

    /// Start moto over plain HTTP with its stdout/stderr appended to `log`.
    pub fn start_logged(log: &Path) -> Moto {
        Self::launch(false, Some(log.to_path_buf()))
    }

    fn launch(tls: bool, log: Option<PathBuf>) -> Moto {
        let mut m = Moto {
            port: free_port(),
            tls,
            log,
            child: None,
        };
        m.restart();
        m
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Start the server again on the same port after [`stop`](Self::stop) (empty: moto keeps
    /// nothing); waits (60 s at most) for the port. Panics if it is still running.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "private moto is already running");
        let bin = installed("venv/bin/moto_server", "moto_server (the moto venv)");
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.tls {
            cmd.arg("-s");
        }
        let (out, err) = match &self.log {
            Some(p) => {
                let f = append(p);
                (
                    Stdio::from(f.try_clone().expect("clone log")),
                    Stdio::from(f),
                )
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(60), "private moto");
    }

    /// Kill the server (its in-memory data is lost). Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One raw HTTP/1.1 request (`headers` are complete `Name: value\r\n` lines); returns the
    /// whole response. Plain HTTP only.
    pub fn http(&self, method: &str, path: &str, headers: &str, body: &str) -> String {
        assert!(!self.tls, "Moto::http speaks plain HTTP only");
        let port = self.port;
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to moto");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send request");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read response");
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
        self.stop();
    }
}

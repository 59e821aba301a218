//! Faults while `litestream replicate` writes to S3, through the binary: a replica whose
//! `endpoint` is a fault-injecting TCP proxy in front of a PRIVATE moto server (its own free
//! port; the shared test server is never touched). While a write load runs, the proxy
//!
//! * answers a share of connections with `503` / `500`, drops others at once, and cuts
//!   passed-through connections off after a short while (so pooled keep-alive connections keep
//!   failing too), and
//! * goes down for several seconds (closes its port and kills every open connection; moto
//!   keeps its data, since only the proxy is down) and comes back on the same port.
//!
//! Replication must resume by itself (a restore straight from moto catches up with every
//! committed row while `replicate` still runs), and after the final sync on SIGTERM both our
//! restore and the real Litestream v0.3.13's restore, straight from moto, equal the source
//! row for row and pass `integrity_check`.
//!
//! Compiled only with the `s3` feature. Needs `TEST_SERVERS_DIR` (moto's venv) and
//! `LITESTREAM_V0313_BIN` from `scripts/test.sh`: missing variables fail, never skip.
#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{
    all_rows as rows, assert_exit, assert_integrity_ok, create_db, describe, litestream_v0313,
    our_bin, random_blob, signal_and_wait, spawn_replicate,
};
use litestream_test_servers::{free_port, Moto};

const BUCKET: &str = "fault-cli-bucket";
const KEY: &str = "test";
const SECRET: &str = "testtest";

// ------------------------------------------------------------------------------------------
// the fault proxy
// ------------------------------------------------------------------------------------------

const PASS: u8 = 0;
const FAULTY: u8 = 1;
const DOWN: u8 = 2;

/// A TCP proxy on a fixed port in front of `upstream`. In `FAULTY` mode, per accepted
/// connection: every 5th answers 503, the 2nd of each 5 answers 500, the 4th is dropped at
/// once, and the others pass through but are cut off after 300 ms-1.5 s (so requests on pooled
/// keep-alive connections fail as well). In `DOWN` mode the port is closed (connections are
/// refused) and every open connection is shut down.
struct FaultProxy {
    port: u16,
    mode: Arc<AtomicU8>,
    faults: Arc<AtomicU64>,
    passed: Arc<AtomicU64>,
    refused_while_down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    fn start(upstream: u16) -> FaultProxy {
        let port = free_port();
        let p = FaultProxy {
            port,
            mode: Arc::new(AtomicU8::new(PASS)),
            faults: Arc::new(AtomicU64::new(0)),
            passed: Arc::new(AtomicU64::new(0)),
            refused_while_down: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, faults, passed, open, stop) = (
            p.mode.clone(),
            p.faults.clone(),
            p.passed.clone(),
            p.open.clone(),
            p.stop.clone(),
        );
        let ready = Arc::new(AtomicBool::new(false));
        let ready2 = ready.clone();
        thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            let mut n: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                if mode.load(Ordering::SeqCst) == DOWN {
                    // Server down: close the port and kill every open connection.
                    listener = None;
                    for s in open.lock().unwrap().drain(..) {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                if listener.is_none() {
                    match TcpListener::bind(("127.0.0.1", port)) {
                        Ok(l) => {
                            l.set_nonblocking(true).unwrap();
                            listener = Some(l);
                            ready2.store(true, Ordering::SeqCst);
                        }
                        Err(_) => {
                            thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    }
                }
                let down = match listener.as_ref().unwrap().accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => continue,
                };
                down.set_nonblocking(false).unwrap();
                n += 1;
                let faulty = mode.load(Ordering::SeqCst) == FAULTY;
                handle(
                    down,
                    n,
                    faulty,
                    upstream,
                    faults.clone(),
                    passed.clone(),
                    open.clone(),
                );
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "proxy did not start");
            thread::sleep(Duration::from_millis(10));
        }
        p
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Wait until the port refuses connections (the proxy noticed DOWN).
    fn wait_refusing(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "proxy port still open while down"
            );
            thread::sleep(Duration::from_millis(20));
        }
        self.refused_while_down.store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn handle(
    mut down: TcpStream,
    n: u64,
    faulty: bool,
    upstream: u16,
    faults: Arc<AtomicU64>,
    passed: Arc<AtomicU64>,
    open: Arc<Mutex<Vec<TcpStream>>>,
) {
    if faulty && matches!(n % 5, 0 | 2 | 4) {
        faults.fetch_add(1, Ordering::SeqCst);
        if n % 5 == 4 {
            drop(down); // dropped connection
            return;
        }
        thread::spawn(move || {
            down.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 4096];
            let _ = down.read(&mut buf);
            let status = if n.is_multiple_of(5) {
                "503 Service Unavailable"
            } else {
                "500 Internal Server Error"
            };
            let _ = write!(
                down,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = down.shutdown(Shutdown::Both);
        });
        return;
    }
    let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    passed.fetch_add(1, Ordering::SeqCst);
    {
        let mut o = open.lock().unwrap();
        o.retain(|s| s.peer_addr().is_ok());
        o.push(down.try_clone().unwrap());
        o.push(up.try_clone().unwrap());
    }
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    };
    pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
    pipe(up.try_clone().unwrap(), down.try_clone().unwrap());
    if faulty {
        // Cut passed-through connections off after a while, mid-request or not.
        let life = Duration::from_millis(300 + (n * 397) % 1200);
        thread::spawn(move || {
            thread::sleep(life);
            let _ = down.shutdown(Shutdown::Both);
            let _ = up.shutdown(Shutdown::Both);
        });
    }
}

// ------------------------------------------------------------------------------------------
// database, load, replicate, restore
// ------------------------------------------------------------------------------------------

/// A writer thread committing a few rows every 50 ms (now and then a bigger commit) until
/// `stop` is set; returns the number of commits.
fn spawn_writer(db: PathBuf, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut commits = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let (n, size) = if commits % 40 == 39 {
                (20, 16 << 10)
            } else {
                (3, 700)
            };
            let tx = conn.unchecked_transaction().unwrap();
            for _ in 0..n {
                tx.execute(
                    "INSERT INTO t(v) VALUES (?1)",
                    [random_blob(&mut seed, size)],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            commits += 1;
            thread::sleep(Duration::from_millis(50));
        }
        commits
    })
}

fn write_config(path: &Path, db: &Path, endpoint: &str, prefix: &str) {
    let text = format!(
        "dbs:\n  - path: {db}\n    replicas:\n      - type: s3\n        bucket: {BUCKET}\n        \
         path: {prefix}\n        endpoint: {endpoint}\n        region: us-east-1\n        \
         force-path-style: true\n        access-key-id: {KEY}\n        \
         secret-access-key: {SECRET}\n        sync-interval: 250ms\n",
        db = db.display(),
    );
    std::fs::write(path, text).unwrap();
}

/// `restore` in URL mode straight from moto (not through the proxy).
fn restore_direct(bin: &Path, moto_port: u16, prefix: &str, out: &Path) -> Output {
    let url = format!("s3://{BUCKET}.localhost:{moto_port}/{prefix}");
    common::s3::restore_url(bin, &url, out, &[], KEY, SECRET)
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn assert_running(child: &mut Child, log: &Path, when: &str) {
    if let Some(st) = child.try_wait().unwrap() {
        panic!("replicate exited ({st}) {when}; log:\n{}", log_text(log));
    }
}

#[test]
fn s3_replicate_survives_5xx_dropped_connections_and_a_server_outage() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start_logged(&dir.path().join("moto.log"));
    moto.create_bucket(BUCKET);
    let proxy = FaultProxy::start(moto.port);

    let db = dir.path().join("src.db");
    create_db(&db);
    let prefix = format!("faults-cli/{:x}/app.sqlite", std::process::id());
    let cfg = dir.path().join("litestream.yml");
    write_config(&cfg, &db, &proxy.endpoint(), &prefix);
    let log = dir.path().join("replicate.log");
    let mut child = spawn_replicate(&our_bin(), &cfg, &log);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(db.clone(), stop.clone());

    // Healthy start, then 5xx / dropped / cut-off connections.
    thread::sleep(Duration::from_secs(3));
    proxy.set(FAULTY);
    thread::sleep(Duration::from_secs(8));
    assert_running(&mut child, &log, "while the proxy injected faults");

    // The server goes down for several seconds (moto keeps its data) and comes back.
    proxy.set(DOWN);
    proxy.wait_refusing();
    thread::sleep(Duration::from_secs(7));
    assert_running(&mut child, &log, "while the server was down");
    proxy.set(FAULTY);
    thread::sleep(Duration::from_secs(4));
    proxy.set(PASS);
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let commits = writer.join().unwrap();
    let expected = rows(&db);
    assert!(commits > 100, "only {commits} commits");

    // Replication resumed by itself: while replicate still runs, a restore straight from moto
    // catches up with every committed row.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let out_db = dir.path().join(format!("catchup-{attempt}.db"));
        let out = restore_direct(&our_bin(), moto.port, &prefix, &out_db);
        if out.status.success() && rows(&out_db) == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replication did not catch up within 60 s after the faults ended (restore: {}); \
             replicate log:\n{}",
            describe(&out),
            log_text(&log)
        );
        assert_running(&mut child, &log, "while catching up");
        thread::sleep(Duration::from_secs(1));
    }

    // Final sync on SIGTERM.
    signal_and_wait(child, "TERM", &log);

    let faults = proxy.faults.load(Ordering::SeqCst);
    let passed = proxy.passed.load(Ordering::SeqCst);
    assert!(
        faults >= 5,
        "the proxy injected only {faults} faults ({passed} connections passed)"
    );
    assert!(proxy.refused_while_down.load(Ordering::SeqCst));
    // The faults reached replication: replicate logged failed syncs and carried on.
    let text = log_text(&log);
    let failures = text
        .lines()
        .filter(|l| {
            let u = l.to_ascii_uppercase();
            u.contains("ERROR") || u.contains("WARN")
        })
        .count();
    assert!(failures > 0, "replicate logged no failure; log:\n{text}");
    drop(proxy);

    for (name, bin) in [("our", our_bin()), ("v0.3.13", litestream_v0313())] {
        let out_db = dir.path().join(format!("{name}.db"));
        let out = restore_direct(&bin, moto.port, &prefix, &out_db);
        assert_exit(&out, 0, &format!("{name} restore after the faults"));
        assert_integrity_ok(&out_db, &format!("{name} restore"));
        assert!(
            rows(&out_db) == expected,
            "{name} restore differs from the source"
        );
    }
    eprintln!(
        "{commits} commits, {} rows; proxy: {faults} faults injected, {passed} connections \
         passed through; replicate logged {failures} error/warning lines",
        expected.len()
    );
}

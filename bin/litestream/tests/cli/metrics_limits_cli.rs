//! The `/metrics` endpoint of `replicate` against hostile clients (issue 13, item 7), black
//! box: with the open-files limit at 256, hundreds of idle connections and clients that send
//! a request and never read the answer neither stall replication nor exhaust descriptors, and
//! a new client is still served within a bound. Whatever serves HTTP, this must hold.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use litestream_test_servers::free_port;

/// The child's open-files limit (soft and hard): well below the connections opened.
const NOFILE: u64 = 256;
/// Idle connections opened at once (never send a byte).
const IDLE: usize = 400;
/// Clients that send a request and never read (receive buffer shrunk to the minimum).
const NON_READERS: usize = 40;

/// Kills the child on drop (a failed assertion must not leave `replicate` running).
struct Replicate(Child);

impl Drop for Replicate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// GET /metrics with a 5 s read timeout: the status code, or `None` (refused, closed, slow).
fn get_metrics(port: u16) -> Option<u16> {
    let mut s = connect(port)?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let head = String::from_utf8_lossy(&resp);
    head.split(' ').nth(1)?.parse().ok()
}

/// A connection to the endpoint, or `None` if not established within 2 s (a server that
/// stops accepting leaves connections in its backlog, then SYNs unanswered).
fn connect(port: u16) -> Option<TcpStream> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()
}

/// Files under `dir`, recursively (0 before it exists).
fn count_files(dir: &Path) -> usize {
    if dir.exists() {
        list_files(dir).len()
    } else {
        0
    }
}

#[test]
fn idle_and_non_reading_clients_neither_stall_replication_nor_lock_out_new_clients() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let db = root.join("app.db");
    let replica = root.join("replica");
    let cfg = root.join("litestream.yml");
    let log = root.join("replicate.log");
    let port = free_port();
    std::fs::write(
        &cfg,
        format!(
            "addr: 127.0.0.1:{port}\ndbs:\n  - path: {}\n    monitor-interval: 100ms\n    \
             replicas:\n      - path: {}\n        sync-interval: 200ms\n",
            db.display(),
            replica.display()
        ),
    )
    .unwrap();
    create_db(&db);
    insert(&db, 10, 100);

    let mut cmd = Command::new(our_bin());
    cmd.args(["replicate", "-config"])
        .arg(&cfg)
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("LITESTREAM_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: NOFILE as libc::rlim_t,
                rlim_max: NOFILE as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = Replicate(cmd.spawn().unwrap());
    let pid = child.0.id();
    let dump = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(Duration::from_secs(30), "/metrics served", dump, || {
        get_metrics(port) == Some(200)
    });
    wait_for(Duration::from_secs(30), "first replication", dump, || {
        count_files(&replica) > 0
    });
    let fds_before = open_fds(pid);

    // Hostile clients: idle connections, then requests whose answers are never read.
    let mut held = Vec::new();
    for _ in 0..IDLE {
        if let Some(s) = connect(port) {
            held.push(s);
        }
    }
    for _ in 0..NON_READERS {
        if let Some(mut s) = connect(port) {
            let one: libc::c_int = 1;
            // SAFETY: a valid socket fd and a c_int option value of the right size.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
            held.push(s);
        }
    }
    assert!(
        held.len() > NOFILE as usize,
        "only {} connections opened",
        held.len()
    );
    std::thread::sleep(Duration::from_secs(1));
    let fds_held = open_fds(pid);

    // Replication continues while they are held.
    let files = count_files(&replica);
    insert(&db, 50, 1000);
    wait_for(
        Duration::from_secs(30),
        "replication while hostile clients are connected",
        dump,
        || count_files(&replica) > files,
    );

    // A new client is served within a bound (the idle ones time out on the server).
    let started = Instant::now();
    wait_for(Duration::from_secs(40), "a new client served", dump, || {
        get_metrics(port) == Some(200)
    });
    let waited = started.elapsed();
    eprintln!(
        "fds: {fds_before} before, {fds_held} with {} hostile connections; new client served \
         after {waited:?}",
        held.len()
    );
    assert!(
        fds_held < fds_before + 100,
        "descriptors grew from {fds_before} to {fds_held} with {} connections held",
        held.len()
    );
    let text = dump();
    assert!(!text.contains("Too many open files"), "{text}");
    drop(held);
    drop(child);
}

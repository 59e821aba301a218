//! Crash safety: kill -9 the replicating process (the `embedded` example) at random moments
//! during writes, restart it, repeat; every restore by real Litestream v0.3.13 passes
//! `integrity_check` and holds every transaction reported durable before the kill.

#[path = "engine_common.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{integrity, litestream_bin, restore_with};
use rand::Rng;

fn example_bin() -> PathBuf {
    // target/<profile>/deps/engine_crash-<hash> -> target/<profile>/examples/embedded
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples").join("embedded"))
        .expect("examples dir");
    assert!(
        p.is_file(),
        "{} not built: run `cargo test -p litestream-core` (it builds examples)",
        p.display()
    );
    p
}

#[test]
fn kill_9_during_writes_never_loses_durable_transactions() {
    let v3 = litestream_bin("LITESTREAM_V0313_BIN");
    let bin = example_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let mut rng = rand::rng();
    let started = Instant::now();
    let rounds = 30;
    let mut durable_max = 0i64;
    for round in 0..rounds {
        let mut child = Command::new(&bin)
            .arg(&db)
            .arg(&rep)
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn example");
        let stdout = child.stdout.take().expect("stdout");
        let durable = Arc::new(AtomicI64::new(0));
        let d2 = Arc::clone(&durable);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line
                    .strip_prefix("durable ")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse::<i64>().ok())
                {
                    d2.store(n, Ordering::SeqCst);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(100..600)));
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        reader.join().expect("reader");
        durable_max = durable_max.max(durable.load(Ordering::SeqCst));

        if round % 3 != 2 && round + 1 != rounds {
            continue;
        }
        let out = dir.path().join(format!("restore-{round}.db"));
        restore_with(&v3, &rep, &out);
        assert_eq!(integrity(&out), "ok", "round {round}");
        let c = rusqlite::Connection::open(&out).expect("open restore");
        let have: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM events WHERE id <= ?1",
                [durable_max],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(
            have, durable_max,
            "round {round}: restore lost durable transactions (durable up to {durable_max})"
        );
    }
    assert!(durable_max > 0, "nothing was ever reported durable");
    eprintln!(
        "{rounds} kill -9 rounds, {durable_max} durable rows, {:?}",
        started.elapsed()
    );
}

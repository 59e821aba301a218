//! Crash safety: kill -9 the replicating process (the `embedded` example, snapshotting every
//! 300 ms) at random moments during writes, restart it, repeat. Every round checks that the process came up (it
//! acknowledged a transaction) and was still alive when killed. Every few rounds the replica
//! is restored, by real Litestream v0.3.13 and by ours, latest and at random earlier
//! acknowledgement times and indexes: every restore passes `integrity_check`, holds the rows
//! of every transaction acknowledged before its timestamp with their exact contents, and holds
//! no row the source does not have.

#[path = "engine_common.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use common::{example_bin, integrity, litestream_bin, restore_with};
use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::ReplicaClient;
use litestream_file::FileClient;
use rand::Rng;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The body the `embedded` example writes for row `id`.
fn body(id: i64) -> String {
    format!("event {id} {}", "x".repeat(300))
}

/// One acknowledgement: the example printed `durable N` at `at` (read by us after the
/// transaction was durable on the replica, so every object it needed is older).
#[derive(Debug, Clone, Copy)]
struct Ack {
    at: SystemTime,
    id: i64,
}

/// Rows of `events` (id -> body) in a database.
fn rows(db: &Path) -> BTreeMap<i64, String> {
    let c = rusqlite::Connection::open(db).expect("open");
    let mut st = c
        .prepare("SELECT id, body FROM events ORDER BY id")
        .expect("prepare");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// A restore passes integrity_check, holds every row acknowledged up to `acked` (ids 1..=acked,
/// each with its exact body) and no row that differs from the source.
fn check_restore(out: &Path, acked: i64, source: &BTreeMap<i64, String>, what: &str) {
    assert_eq!(integrity(out), "ok", "{what}: integrity_check");
    let got = rows(out);
    for id in 1..=acked {
        let want = body(id);
        assert_eq!(
            got.get(&id).map(String::as_str),
            Some(want.as_str()),
            "{what}: acknowledged row {id} missing or different (acknowledged up to {acked})"
        );
    }
    for (id, b) in &got {
        assert_eq!(
            source.get(id),
            Some(b),
            "{what}: row {id} is not the source's"
        );
    }
}

/// One round: start the example, wait for its first acknowledgement (it came up), let it
/// run a random while, check it is alive, kill -9 it. Returns its acknowledgements.
fn crash_round(bin: &Path, db: &Path, rep: &Path, log: &Path, rng: &mut impl Rng) -> Vec<Ack> {
    let stderr = std::fs::File::create(log).expect("stderr log");
    let mut child = Command::new(bin)
        .arg(db)
        .arg(rep)
        .arg("0")
        // Snapshots every 300 ms: kills also land in the middle of snapshots.
        .arg("300")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn example");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let id = line
                .strip_prefix("durable ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse::<i64>().ok());
            if let Some(id) = id {
                let _ = tx.send(Ack {
                    at: SystemTime::now(),
                    id,
                });
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the replicator did not come up (no acknowledgement in 60 s): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    std::thread::sleep(Duration::from_millis(rng.random_range(0..500)));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the replicator exited before the kill: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    reader.join().expect("reader");
    let mut acks = vec![first];
    acks.extend(rx.try_iter());
    acks
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).expect("format")
}

/// Restore the replica at `ts` with real v0.3.13.
fn v0313_restore_at(bin: &Path, rep: &Path, out: &Path, ts: SystemTime) {
    let o = Command::new(bin)
        .args(["restore", "-timestamp", &rfc3339(ts), "-o"])
        .arg(out)
        .arg(format!("file://{}", rep.display()))
        .output()
        .expect("run v0.3.13");
    if !o.status.success() {
        let g = Command::new(bin)
            .arg("generations")
            .arg(format!("file://{}", rep.display()))
            .output()
            .expect("v0.3.13 generations");
        panic!(
            "v0.3.13 restore -timestamp {}: {}\n{}",
            rfc3339(ts),
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&g.stdout)
        );
    }
}

/// Restores latest, at random earlier acknowledgement times and at random indexes.
fn check_replica(
    rt: &tokio::runtime::Runtime,
    v3: &Path,
    work: &Path,
    rep: &Path,
    db: &Path,
    acks: &[Ack],
    tag: &str,
) {
    let source = rows(db);
    let acked = acks.iter().map(|a| a.id).max().unwrap_or(0);
    let out = work.join(format!("{tag}-latest.db"));
    restore_with(v3, rep, &out);
    check_restore(&out, acked, &source, &format!("{tag}: v0.3.13 latest"));

    let client: Arc<dyn ReplicaClient> = Arc::new(FileClient::new(rep));
    let listings = rt
        .block_on(litestream_core::restore::list_generations(
            client.as_ref(),
            None,
        ))
        .expect("list generations");
    let mut rng = rand::rng();
    for i in 0..3 {
        let mut ack = acks[rng.random_range(0..acks.len())];
        // A generation's time span ends at its last object: an acknowledgement read after it
        // (the process was killed before uploading more) restores as of that last object.
        let l = listings
            .iter()
            .filter(|l| {
                l.created_at()
                    .is_some_and(|c| c <= OffsetDateTime::from(ack.at))
            })
            .max_by_key(|l| l.created_at())
            .expect("a generation created before the acknowledgement");
        if let Some(u) = l.updated_at() {
            ack.at = ack.at.min(SystemTime::from(u));
        }
        // Everything acknowledged up to this one (ids only grow across rounds).
        let out = work.join(format!("{tag}-ts{i}-v0313.db"));
        v0313_restore_at(v3, rep, &out, ack.at);
        let what = format!("{tag}: v0.3.13 -timestamp {}", rfc3339(ack.at));
        check_restore(&out, ack.id, &source, &what);
        let out = work.join(format!("{tag}-ts{i}-ours.db"));
        let mut o = RestoreOptions::new(&out);
        o.timestamp = Some(OffsetDateTime::from(ack.at));
        let client: Arc<dyn ReplicaClient> = Arc::new(FileClient::new(rep));
        rt.block_on(restore(client, &o))
            .unwrap_or_else(|e| panic!("{tag}: our restore -timestamp {}: {e}", rfc3339(ack.at)));
        let what = format!("{tag}: ours -timestamp {}", rfc3339(ack.at));
        check_restore(&out, ack.id, &source, &what);
    }

    // Random indexes of the newest generation (no acknowledgement bound: any prefix).
    let client: Arc<dyn ReplicaClient> = Arc::new(FileClient::new(rep));
    let (g, snaps, segs) = rt.block_on(async {
        let l = litestream_core::restore::find_target(client.as_ref(), &RestoreOptions::new(rep))
            .await
            .expect("find target")
            .expect("a generation");
        (l.generation.clone(), l.snapshots.clone(), l.wal.clone())
    });
    let lo = snaps.iter().map(|s| s.index).min().expect("snapshot");
    let hi = segs.iter().map(|s| s.index).max().unwrap_or(lo).max(lo);
    for i in 0..2 {
        let index = rng.random_range(lo..=hi);
        let out = work.join(format!("{tag}-ix{i}.db"));
        let mut o = RestoreOptions::new(&out);
        o.generation = Some(g.clone());
        o.index = Some(index);
        rt.block_on(restore(Arc::clone(&client), &o))
            .unwrap_or_else(|e| panic!("{tag}: our restore -index {index}: {e}"));
        check_restore(&out, 0, &source, &format!("{tag}: ours -index {index}"));
    }
}

#[test]
fn kill_9_during_writes_never_loses_durable_transactions() {
    let v3 = litestream_bin("LITESTREAM_V0313_BIN");
    let bin = example_bin();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let log = dir.path().join("stderr.log");
    let mut rng = rand::rng();
    let started = Instant::now();
    let rounds = 24;
    let mut acks: Vec<Ack> = Vec::new();
    for round in 0..rounds {
        let got = crash_round(&bin, &db, &rep, &log, &mut rng);
        let before = acks.last().map_or(0, |a| a.id);
        assert!(
            got.iter().all(|a| a.id > before),
            "round {round}: a restart acknowledged an id at or below an earlier one ({before}): {got:?}"
        );
        acks.extend(got);
        if round % 4 == 3 || round + 1 == rounds {
            check_replica(
                &rt,
                &v3,
                dir.path(),
                &rep,
                &db,
                &acks,
                &format!("round{round}"),
            );
        }
    }
    eprintln!(
        "{rounds} kill -9 rounds, {} acknowledgements up to row {}, {:?}",
        acks.len(),
        acks.last().map_or(0, |a| a.id),
        started.elapsed()
    );
}

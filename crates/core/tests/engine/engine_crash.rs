//! Crash safety: kill -9 the replicating process (the `embedded` example, snapshotting every
//! 300 ms) at random moments during writes, restart it, repeat. Every round checks that the process came up (it
//! acknowledged a transaction) and was still alive when killed. Every few rounds the replica
//! is restored, by real Litestream v0.3.13 and by ours, latest and at random earlier
//! acknowledgement times and indexes: every restore passes `integrity_check`, holds the rows
//! of every transaction acknowledged before its timestamp with their exact contents, and holds
//! no row the source does not have.
//!
//! The same test runs with age encryption on (issue 16): with recipients and identities, and
//! with recipients only (every restart then cannot read the replica back and starts a new
//! generation from the local state); the restores decrypt with the identity.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use crate::common::{example_bin, integrity, litestream_bin, restore_with};
use litestream_core::config::AgeConfig;
use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::ReplicaClient;
use litestream_core::{AgeClient, AgeKeys};
use litestream_file::FileClient;
use rand::{Rng, RngExt};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Test age keys (generated for these tests only).
const AGE_SK: &str = "AGE-SECRET-KEY-19QCFTFFX5U7TYY56HA0VNDEH9T2AMV63V8YPQJUFXCVKK4A5NV0SAUPNFS";
const AGE_PK: &str = "age1pjpfvdx82rldgfu4ven3ga9vs2vfdvnz39v76jre4cv88flrysssky69ta";

/// How the replicator encrypts its replica.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Age {
    /// No encryption.
    Off,
    /// age recipients and identities: start-up reads the replica back.
    On,
    /// age recipients only: start-up cannot read the replica back.
    RecipientsOnly,
}

/// The replica of one crash run and how to read it (restores always have the identity).
struct Replica {
    dir: std::path::PathBuf,
    db: std::path::PathBuf,
    age: Age,
    /// A v0.3.13 config file with the age keys (age on only).
    config: std::path::PathBuf,
    identity_file: std::path::PathBuf,
}

impl Replica {
    fn new(work: &Path, age: Age) -> Replica {
        let r = Replica {
            dir: work.join("replica"),
            db: work.join("app.db"),
            age,
            config: work.join("litestream.yml"),
            identity_file: work.join("age-key.txt"),
        };
        if age != Age::Off {
            std::fs::write(&r.identity_file, format!("# test key\n{AGE_SK}\n")).expect("key");
            let yml = format!(
                "dbs:\n  - path: {}\n    replicas:\n      - type: file\n        path: {}\n        \
                 age:\n          identities: [{AGE_SK}]\n          recipients: [{AGE_PK}]\n",
                r.db.display(),
                r.dir.display()
            );
            std::fs::write(&r.config, yml).expect("config");
        }
        r
    }

    /// Our client for the replica, decrypting with the identity when age is on.
    fn client(&self) -> Arc<dyn ReplicaClient> {
        let file: Arc<dyn ReplicaClient> = Arc::new(FileClient::new(&self.dir));
        if self.age == Age::Off {
            return file;
        }
        let cfg = AgeConfig {
            identity_files: vec![self.identity_file.display().to_string()],
            ..AgeConfig::default()
        };
        let keys = AgeKeys::from_config(&cfg).expect("age keys").expect("keys");
        Arc::new(AgeClient::new(file, keys))
    }

    /// The environment of the `embedded` example for this replica.
    fn example_env(&self, cmd: &mut Command) {
        if self.age != Age::Off {
            cmd.env("EMBEDDED_AGE_RECIPIENT", AGE_PK);
        }
        if self.age == Age::On {
            cmd.env("EMBEDDED_AGE_IDENTITY_FILE", &self.identity_file);
        }
    }

    /// Restore with real v0.3.13: latest, or at `ts`.
    fn v0313_restore(&self, bin: &Path, out: &Path, ts: Option<SystemTime>) {
        if self.age == Age::Off && ts.is_none() {
            return restore_with(bin, &self.dir, out);
        }
        let mut cmd = Command::new(bin);
        cmd.arg("restore");
        if let Some(ts) = ts {
            cmd.args(["-timestamp", &rfc3339(ts)]);
        }
        cmd.arg("-o").arg(out);
        if self.age == Age::Off {
            cmd.arg(format!("file://{}", self.dir.display()));
        } else {
            cmd.arg("-config").arg(&self.config).arg(&self.db);
        }
        let o = cmd.output().expect("run v0.3.13");
        if !o.status.success() || !out.exists() {
            let g = Command::new(bin)
                .arg("generations")
                .arg(format!("file://{}", self.dir.display()))
                .output()
                .expect("v0.3.13 generations");
            panic!(
                "v0.3.13 restore ({ts:?}): {}\n{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&g.stdout)
            );
        }
    }
}

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
fn crash_round(bin: &Path, rep: &Replica, log: &Path, rng: &mut impl Rng) -> Vec<Ack> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("stderr log");
    let mut cmd = Command::new(bin);
    rep.example_env(&mut cmd);
    let mut child = cmd
        .arg(&rep.db)
        .arg(&rep.dir)
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

/// Restores latest, at random earlier acknowledgement times and at random indexes.
fn check_replica(
    rt: &tokio::runtime::Runtime,
    v3: &Path,
    work: &Path,
    rep: &Replica,
    acks: &[Ack],
    tag: &str,
) {
    let source = rows(&rep.db);
    let acked = acks.iter().map(|a| a.id).max().unwrap_or(0);
    let out = work.join(format!("{tag}-latest.db"));
    rep.v0313_restore(v3, &out, None);
    check_restore(&out, acked, &source, &format!("{tag}: v0.3.13 latest"));

    let client = rep.client();
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
        rep.v0313_restore(v3, &out, Some(ack.at));
        let what = format!("{tag}: v0.3.13 -timestamp {}", rfc3339(ack.at));
        check_restore(&out, ack.id, &source, &what);
        let out = work.join(format!("{tag}-ts{i}-ours.db"));
        let mut o = RestoreOptions::new(&out);
        o.timestamp = Some(OffsetDateTime::from(ack.at));
        rt.block_on(restore(rep.client(), &o))
            .unwrap_or_else(|e| panic!("{tag}: our restore -timestamp {}: {e}", rfc3339(ack.at)));
        let what = format!("{tag}: ours -timestamp {}", rfc3339(ack.at));
        check_restore(&out, ack.id, &source, &what);
    }

    // Random indexes of the newest generation (no acknowledgement bound: any prefix).
    let (g, snaps, segs) = rt.block_on(async {
        let l =
            litestream_core::restore::find_target(client.as_ref(), &RestoreOptions::new(&rep.dir))
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

/// `rounds` kill -9 rounds with the replica encrypted as `age` says, checking the replica
/// every 4 rounds and after the last.
fn crash_test(age: Age, rounds: usize) {
    let v3 = litestream_bin("LITESTREAM_V0313_BIN");
    let bin = example_bin();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = Replica::new(dir.path(), age);
    let log = dir.path().join("stderr.log");
    let mut rng = rand::rng();
    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    for round in 0..rounds {
        let got = crash_round(&bin, &rep, &log, &mut rng);
        let before = acks.last().map_or(0, |a| a.id);
        assert!(
            got.iter().all(|a| a.id > before),
            "round {round}: a restart acknowledged an id at or below an earlier one ({before}): {got:?}"
        );
        acks.extend(got);
        if round % 4 == 3 || round + 1 == rounds {
            check_replica(&rt, &v3, dir.path(), &rep, &acks, &format!("round{round}"));
        }
    }
    if age != Age::Off {
        assert_encrypted(&rep.dir);
    }
    let generations = std::fs::read_dir(rep.dir.join("generations"))
        .map(|d| d.count())
        .unwrap_or(0);
    if std::env::var_os("ENGINE_CRASH_SHOW_LOG").is_some() {
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    eprintln!(
        "age {age:?}: {rounds} kill -9 rounds, {} acknowledgements up to row {}, {generations} generations, {:?}",
        acks.len(),
        acks.last().map_or(0, |a| a.id),
        started.elapsed()
    );
}

/// Every object of the replica is binary age v1.
fn assert_encrypted(dir: &Path) {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".lz4") {
                let mut head = [0u8; 22];
                let f = std::fs::File::open(&p).expect("open object");
                std::io::Read::read_exact(&mut &f, &mut head).expect("object head");
                assert_eq!(
                    &head,
                    b"age-encryption.org/v1\n",
                    "{} is not age",
                    p.display()
                );
                n += 1;
            }
        }
    }
    assert!(n > 0, "no objects in {}", dir.display());
}

#[test]
fn kill_9_during_writes_never_loses_durable_transactions() {
    crash_test(Age::Off, 24);
}

#[test]
fn kill_9_with_age_never_loses_durable_transactions() {
    crash_test(Age::On, 12);
}

#[test]
fn kill_9_with_age_recipients_only_never_loses_durable_transactions() {
    crash_test(Age::RecipientsOnly, 12);
}

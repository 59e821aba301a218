//! Interop with the real Litestream v0.3.13 through Azurite, and Azurite outages.
//!
//! Needs `scripts/test.sh` (`TEST_ABS_*`, `TEST_SERVERS_DIR`, `LITESTREAM_V0313_BIN`); a
//! missing variable is a failure, never a skip.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use litestream_abs::{AbsBuilder, AbsClient};
use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::{ByteStream, Generation, Pos, ReplicaClient};
use litestream_test_servers::{signal_and_wait, Azurite};
use rand::Rng;
use tokio::io::AsyncReadExt;

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need Azurite and the real Litestream v0.3.13; \
             run scripts/test.sh"
        ),
    }
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn client_at(endpoint: &str, prefix: &str) -> AbsClient {
    AbsBuilder::new()
        .with_account(env("TEST_ABS_ACCOUNT_NAME"))
        .with_account_key(env("TEST_ABS_ACCOUNT_KEY"))
        .with_container(env("TEST_ABS_CONTAINER"))
        .with_endpoint(endpoint)
        .with_path(prefix)
        .build()
        .unwrap()
}

fn litestream_config(db: &Path, prefix: &str, endpoint: &str) -> String {
    format!(
        "dbs:\n  - path: {db}\n    replicas:\n      - type: abs\n        account-name: {acct}\n        account-key: {key}\n        bucket: {container}\n        path: {prefix}\n        endpoint: {endpoint}\n        sync-interval: 200ms\n",
        db = db.display(),
        acct = env("TEST_ABS_ACCOUNT_NAME"),
        key = env("TEST_ABS_ACCOUNT_KEY"),
        container = env("TEST_ABS_CONTAINER"),
    )
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn random_blob(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}

fn insert_blobs(db: &Path, rows: usize, size: usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    for _ in 0..rows {
        conn.execute("INSERT INTO t(v) VALUES (?1)", [random_blob(size)])
            .unwrap();
    }
}

fn count_and_check(db: &Path) -> (i64, String) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    (n, ok)
}

fn sigint_and_wait(mut child: Child) {
    match signal_and_wait(&mut child, "INT", Duration::from_secs(30)) {
        Some(st) => assert!(st.success(), "litestream replicate exited with {st}"),
        None => {
            let _ = child.kill();
            panic!("litestream replicate did not stop after SIGINT");
        }
    }
}

async fn read_all(mut s: ByteStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await.unwrap();
    v
}

/// Copy every object of `from` to `to` through our client's read and write paths.
async fn copy_replica(from: &AbsClient, to: &AbsClient) -> usize {
    let mut n = 0;
    for g in from.generations().await.unwrap() {
        for s in from.snapshots(&g).await.unwrap() {
            let data = read_all(from.open_snapshot(&g, s.index).await.unwrap()).await;
            to.write_snapshot(&g, s.index, Box::pin(Cursor::new(data)))
                .await
                .unwrap();
            n += 1;
        }
        for w in from.wal_segments(&g).await.unwrap() {
            let data = read_all(from.open_wal_segment(&w.pos()).await.unwrap()).await;
            to.write_wal_segment(&w.pos(), Box::pin(Cursor::new(data)))
                .await
                .unwrap();
            n += 1;
        }
    }
    n
}

async fn our_restore(client: &AbsClient, out: &Path) {
    let c: Arc<dyn ReplicaClient> = Arc::new(client.clone());
    restore(c, &RestoreOptions::new(out)).await.unwrap();
}

/// Real v0.3.13 replicates a database with a > 8 MiB snapshot and several WAL indexes into
/// Azurite (config file with `endpoint`); we restore it byte-identically to v0.3.13's own
/// restore. Then we copy that replica object by object through our write path (the snapshot
/// in blocks) and v0.3.13 restores our copy byte-identically too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_both_ways_with_litestream_v0313() {
    let ls = PathBuf::from(env("LITESTREAM_V0313_BIN"));
    let endpoint = env("TEST_ABS_ENDPOINT");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", [])
            .unwrap();
    }
    // ~10 MiB of incompressible data before replication starts: the first snapshot is > 8 MiB.
    insert_blobs(&db, 80, 128 << 10);

    let prefix = format!("test-abs/interop-{}", random_hex(6));
    let cfg = dir.path().join("litestream.yml");
    std::fs::write(&cfg, litestream_config(&db, &prefix, &endpoint)).unwrap();
    let child = Command::new(&ls)
        .args(["replicate", "-config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // Write workload: > 1000 pages per round so that Litestream checkpoints into new indexes.
    for _ in 0..3 {
        insert_blobs(&db, 40, 128 << 10);
        std::thread::sleep(Duration::from_millis(1500));
    }
    for _ in 0..20 {
        insert_blobs(&db, 5, 100);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    sigint_and_wait(child);
    let (source_rows, _) = count_and_check(&db);

    let theirs = client_at(&endpoint, &prefix);
    let gens = theirs.generations().await.unwrap();
    assert_eq!(gens.len(), 1, "{gens:?}");
    let snaps = theirs.snapshots(&gens[0]).await.unwrap();
    assert!(
        snaps.iter().any(|s| s.size > 8 << 20),
        "expected a snapshot over 8 MiB: {snaps:?}"
    );
    let wal = theirs.wal_segments(&gens[0]).await.unwrap();
    let mut indexes: Vec<u32> = wal.iter().map(|w| w.index).collect();
    indexes.dedup();
    assert!(
        indexes.len() >= 3,
        "expected several WAL indexes: {indexes:?}"
    );

    // Litestream's own restore is the reference.
    let reference = dir.path().join("reference.db");
    run_ok(
        Command::new(&ls)
            .args(["restore", "-config"])
            .arg(&cfg)
            .arg("-o")
            .arg(&reference)
            .arg(&db),
        "litestream v0.3.13 restore",
    );
    let (n, ok) = count_and_check(&reference);
    assert_eq!((n, ok.as_str()), (source_rows, "ok"));

    // We restore what Litestream wrote.
    let ours = dir.path().join("ours.db");
    our_restore(&theirs, &ours).await;
    assert!(
        std::fs::read(&ours).unwrap() == std::fs::read(&reference).unwrap(),
        "our restore differs from Litestream's"
    );

    // We write (copy through our write path) and Litestream restores.
    let prefix2 = format!("test-abs/interop-copy-{}", random_hex(6));
    let copy = client_at(&endpoint, &prefix2);
    let copied = copy_replica(&theirs, &copy).await;
    assert_eq!(copied, snaps.len() + wal.len());
    let cfg2 = dir.path().join("litestream-copy.yml");
    std::fs::write(&cfg2, litestream_config(&db, &prefix2, &endpoint)).unwrap();
    let from_ours = dir.path().join("from-ours.db");
    run_ok(
        Command::new(&ls)
            .args(["restore", "-config"])
            .arg(&cfg2)
            .arg("-o")
            .arg(&from_ours)
            .arg(&db),
        "litestream v0.3.13 restore of our objects",
    );
    assert!(
        std::fs::read(&from_ours).unwrap() == std::fs::read(&reference).unwrap(),
        "Litestream's restore of our objects differs"
    );

    for c in [&theirs, &copy] {
        for g in c.generations().await.unwrap() {
            c.delete_generation(&g).await.unwrap();
        }
    }
}

/// Azurite stopped and restarted under the same client: requests while it is down fail with
/// retryable errors naming account and container; afterwards the same client resumes and
/// every object written before the outage is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_restart_is_survived_and_nothing_written_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut az = Azurite::start(&dir.path().join("azurite"));
    az.create_container(&env("TEST_ABS_CONTAINER"));

    let retry = litestream_abs::RetryConfig {
        max_retries: 1,
        retry_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let c = AbsBuilder::new()
        .with_account(env("TEST_ABS_ACCOUNT_NAME"))
        .with_account_key(env("TEST_ABS_ACCOUNT_KEY"))
        .with_container(env("TEST_ABS_CONTAINER"))
        .with_endpoint(az.endpoint())
        .with_path("fault/db")
        .with_retry(retry)
        .build()
        .unwrap();
    let g = Generation::parse("00000000fa017000").unwrap();
    let mut written = Vec::new();
    c.write_snapshot(&g, 0, Box::pin(Cursor::new(random_blob(50_000))))
        .await
        .unwrap();
    let mut offset = 0u64;
    for _ in 0..5 {
        let data = random_blob(4152);
        let pos = Pos::new(g.clone(), 0, offset);
        c.write_wal_segment(&pos, Box::pin(Cursor::new(data.clone())))
            .await
            .unwrap();
        written.push((pos, data));
        offset += 4152;
    }

    az.stop();
    let data = random_blob(4152);
    let pos = Pos::new(g.clone(), 0, offset);
    let e = c
        .write_wal_segment(&pos, Box::pin(Cursor::new(data.clone())))
        .await
        .expect_err("write while azurite is down must fail");
    assert!(e.is_retryable(), "outage must be retryable: {e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&env("TEST_ABS_ACCOUNT_NAME")) && msg.contains(&env("TEST_ABS_CONTAINER")),
        "{msg}"
    );
    assert!(!format!("{e:?}").contains(&env("TEST_ABS_ACCOUNT_KEY")));
    let e = c.generations().await.expect_err("list while down");
    assert!(e.is_retryable(), "{e:?}");

    // The replication loop keeps retrying through core's retry policy while Azurite is down;
    // it must succeed once Azurite is back.
    let retry = litestream_core::RetryConfig {
        max_attempts: 60,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
    };
    let task = {
        let c = c.clone();
        let pos = pos.clone();
        let data = data.clone();
        tokio::spawn(async move {
            retry
                .run("write wal segment", || {
                    let c = c.clone();
                    let pos = pos.clone();
                    let data = data.clone();
                    async move { c.write_wal_segment(&pos, Box::pin(Cursor::new(data))).await }
                })
                .await
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !task.is_finished(),
        "write must keep retrying while azurite is down"
    );
    az.restart();
    task.await.unwrap().unwrap();
    written.push((pos, data));

    let segs = c.wal_segments(&g).await.unwrap();
    assert_eq!(segs.len(), written.len());
    for (pos, data) in &written {
        assert!(
            &read_all(c.open_wal_segment(pos).await.unwrap()).await == data,
            "segment {pos} changed across the restart"
        );
    }
    assert_eq!(c.snapshots(&g).await.unwrap().len(), 1);
}

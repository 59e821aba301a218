//! `litestream replicate` at the command line: URL and config-file modes, SIGTERM with a final
//! sync, `-exec`, validation errors, and the generation kept across a restart.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn app(db: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.pragma_update(None, "journal_mode", "wal").unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    c
}

fn spawn(args: &[String]) -> Child {
    Command::new(our_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn wait_exit(child: &mut Child, timeout: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("litestream did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until the replica has a snapshot (the replicator is up).
fn wait_snapshot(replica: &Path) {
    let start = Instant::now();
    loop {
        let gens = if replica.join("generations").is_dir() {
            generations(replica)
        } else {
            vec![]
        };
        if gens
            .iter()
            .any(|g| !snapshot_indexes(replica, g).is_empty())
        {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no snapshot");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Number of WAL segment objects on the replica.
fn wal_files(replica: &Path) -> usize {
    let Ok(gens) = std::fs::read_dir(replica.join("generations")) else {
        return 0;
    };
    gens.filter_map(|g| std::fs::read_dir(g.ok()?.path().join("wal")).ok())
        .map(|d| d.count())
        .sum()
}

fn restored_rows(replica: &Path, out: &Path) -> Vec<String> {
    let o = run_bin(
        &litestream_v0313(),
        [
            "restore",
            "-o",
            &out.display().to_string(),
            &file_url(replica),
        ],
    );
    assert_exit(&o, 0, "v0.3.13 restore");
    assert_integrity_ok(out, "restore");
    let c = rusqlite::Connection::open(out).unwrap();
    let mut st = c.prepare("SELECT v FROM t ORDER BY id").unwrap();
    let rows = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<String>, _>>()
        .unwrap();
    rows
}

/// Start, commit, SIGTERM right after the commit: the final sync ships it; exit 0.
fn sigterm_final_sync(args: Vec<String>, db: &Path, replica: &Path, out: &Path) {
    let c = app(db);
    c.execute("INSERT INTO t (v) VALUES ('before')", [])
        .unwrap();
    let mut child = spawn(&args);
    wait_snapshot(replica);
    c.execute("INSERT INTO t (v) VALUES ('last')", []).unwrap();
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    assert_eq!(restored_rows(replica, out), vec!["before", "last"]);
}

#[test]
fn url_mode_sigterm_runs_a_final_sync_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let args = vec!["replicate".into(), db.display().to_string(), file_url(&rep)];
    sigterm_final_sync(args, &db, &rep, &dir.path().join("out.db"));
}

#[test]
fn config_mode_sigterm_runs_a_final_sync_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let cfg = dir.path().join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - url: {}\n",
            db.display(),
            file_url(&rep)
        ),
    )
    .unwrap();
    let args = vec![
        "replicate".into(),
        "-config".into(),
        cfg.display().to_string(),
    ];
    sigterm_final_sync(args, &db, &rep, &dir.path().join("out.db"));
}

#[test]
fn exec_forwards_sigterm_and_exits_with_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let _c = app(&db);
    let marker = dir.path().join("got-term");
    let script = format!(
        "sh -c 'trap \"echo term > {}; exit 0\" TERM; while true; do sleep 0.05; done'",
        marker.display()
    );
    let base = vec![
        "replicate".to_string(),
        "-exec".into(),
        script,
        db.display().to_string(),
        file_url(&rep),
    ];
    let mut child = spawn(&base);
    wait_snapshot(&rep);
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    assert!(marker.exists(), "the child did not receive SIGTERM");

    // The child exits by itself: litestream exits too, 1 when the child failed.
    for (cmd, code) in [
        ("sh -c 'sleep 0.5; exit 0'", 0),
        ("sh -c 'sleep 0.5; exit 3'", 1),
    ] {
        let mut child = spawn(&[
            "replicate".into(),
            "-exec".into(),
            cmd.into(),
            db.display().to_string(),
            file_url(&rep),
        ]);
        assert_eq!(
            wait_exit(&mut child, Duration::from_secs(20)),
            code,
            "{cmd}"
        );
    }
}

#[test]
fn argument_validation_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db").display().to_string();
    let o = run_bin(&our_bin(), ["replicate", db.as_str()]);
    assert_exit(&o, 1, "one positional");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        all.contains(&format!("must specify at least one replica URL for {db}")),
        "{all}"
    );

    let cfg = dir.path().join("litestream.yml");
    std::fs::write(&cfg, "dbs: []\n").unwrap();
    let url = file_url(&dir.path().join("r"));
    let o = run_bin(
        &our_bin(),
        [
            "replicate",
            "-config",
            cfg.to_str().unwrap(),
            db.as_str(),
            url.as_str(),
        ],
    );
    assert_exit(&o, 1, "-config and positionals");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        all.contains("cannot specify a replica URL and the -config flag"),
        "{all}"
    );
    assert!(!Path::new(&db).exists(), "nothing may be created");
}

#[test]
fn restart_without_foreign_writes_keeps_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let args = vec![
        "replicate".to_string(),
        db.display().to_string(),
        file_url(&rep),
    ];
    let c = app(&db);
    for round in 0..2 {
        c.execute("INSERT INTO t (v) VALUES (?1)", [format!("round {round}")])
            .unwrap();
        let before = wal_files(&rep);
        let mut child = spawn(&args);
        wait_snapshot(&rep);
        c.execute("INSERT INTO t (v) VALUES (?1)", [format!("after {round}")])
            .unwrap();
        // Wait until this run shipped something (the real v0.3.13 syncs only after 1 s).
        let start = Instant::now();
        while wal_files(&rep) <= before {
            assert!(start.elapsed() < Duration::from_secs(20), "nothing shipped");
            std::thread::sleep(Duration::from_millis(50));
        }
        sigterm(&child);
        assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    }
    assert_eq!(
        generations(&rep).len(),
        1,
        "one generation across the restart"
    );
    assert_eq!(
        restored_rows(&rep, &dir.path().join("out.db")),
        vec!["round 0", "after 0", "round 1", "after 1"]
    );
}

/// A second `replicate` on a database that one is already replicating (two sidecars, or a
/// sidecar beside an app that embeds the library; Litestream v0.3.13 lets both run and they
/// churn generations, issue #422) exits 1 naming the database and the first process's pid;
/// the first goes on undisturbed.
#[test]
fn a_second_replicate_on_the_same_database_exits_naming_the_first() {
    if skip_if_our_bin_overridden("Litestream v0.3.13 does not detect a second replicator") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let other = dir.path().join("other-replica");
    let c = app(&db);
    c.execute("INSERT INTO t (v) VALUES ('before')", [])
        .unwrap();
    let mut first = spawn(&[
        "replicate".to_string(),
        db.display().to_string(),
        file_url(&rep),
    ]);
    wait_snapshot(&rep);

    let log = dir.path().join("second.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut second = Command::new(our_bin())
        .args(["replicate", &db.display().to_string(), &file_url(&other)])
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    assert_eq!(wait_exit(&mut second, Duration::from_secs(20)), 1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("already being replicated")
            && text.contains(&db.display().to_string())
            && text.contains(&format!("pid {}", first.id())),
        "the error should name the database and the first process:\n{text}"
    );
    assert!(
        !other.join("generations").exists(),
        "the second one wrote a replica"
    );

    c.execute("INSERT INTO t (v) VALUES ('after')", []).unwrap();
    sigterm(&first);
    assert_eq!(wait_exit(&mut first, Duration::from_secs(20)), 0);
    assert_eq!(generations(&rep).len(), 1);
    assert_eq!(
        restored_rows(&rep, &dir.path().join("out.db")),
        vec!["before", "after"]
    );
}

/// `-exec` forwards the signal with a system call: a slim image has no `kill` program (here
/// the child runs with a PATH holding nothing at all).
#[test]
fn exec_forwards_sigterm_without_a_kill_program() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let _c = app(&db);
    let marker = dir.path().join("got-term");
    let empty = dir.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let script = format!(
        "/bin/sh -c 'trap \"echo term > {}; exit 0\" TERM; while :; do /bin/sleep 0.05; done'",
        marker.display()
    );
    let mut child = Command::new(our_bin())
        .args([
            "replicate".to_string(),
            "-exec".into(),
            script,
            db.display().to_string(),
            file_url(&rep),
        ])
        .env("PATH", &empty)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_snapshot(&rep);
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default().trim(),
        "term",
        "the child did not receive SIGTERM"
    );
}

/// The scale case: 200 databases in one directory, each written once, one process. SIGINT
/// stops it (the final syncs of all of them included) promptly, and each database restores.
#[test]
fn many_databases_in_one_directory_stop_promptly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let n = 200;
    let mut cfg = String::from("dbs:\n");
    let mut conns = Vec::new();
    for i in 0..n {
        let db = data.join(format!("db{i}.db"));
        let c = app(&db);
        c.execute("INSERT INTO t (v) VALUES (?1)", [format!("db {i}")])
            .unwrap();
        conns.push(c);
        cfg.push_str(&format!(
            "  - path: {}\n    replicas:\n      - url: {}\n",
            db.display(),
            file_url(&dir.path().join(format!("rep{i}")))
        ));
    }
    let cfg_path = dir.path().join("litestream.yml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut child = spawn(&[
        "replicate".into(),
        "-config".into(),
        cfg_path.display().to_string(),
    ]);
    for i in 0..n {
        wait_snapshot(&dir.path().join(format!("rep{i}")));
    }
    // One more write to every database, then SIGINT right away: the final syncs ship them.
    for c in &conns {
        c.execute("INSERT INTO t (v) VALUES ('last')", []).unwrap();
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let started = Instant::now();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    eprintln!("{n} databases stopped {:?} after SIGINT", started.elapsed());
    for i in [0, n / 2, n - 1] {
        let out = dir.path().join(format!("out{i}.db"));
        let rows = restored_rows(&dir.path().join(format!("rep{i}")), &out);
        assert_eq!(rows, vec![format!("db {i}"), "last".to_string()]);
    }
}

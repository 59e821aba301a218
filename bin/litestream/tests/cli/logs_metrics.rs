//! Operator-facing output of our `litestream`: JSON logs (one line per documented event, no
//! credentials), `/metrics` (strictly parsed Prometheus text whose counters move under a
//! write load), `/healthz`, and the restore progress line (only on a terminal).
//!
//! Needs util-linux `script` for the pseudo-terminal; panics (never skips) without it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use litestream_test_servers::free_port;
use litestream_test_servers::prometheus_text::{parse_exposition, Exposition};

// ---------------------------------------------------------------------------------------
// One JSON log line: exactly one object (serde_json), no key twice (serde_json alone keeps
// the last of two).

#[derive(Debug)]
struct Json(serde_json::Map<String, serde_json::Value>);

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Json, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(Json(out))
            }
        }
        d.deserialize_map(Object)
    }
}

impl Json {
    fn parse_document(text: &str) -> serde_json::Result<Json> {
        serde_json::from_str(text)
    }
    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key)
    }
    fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(serde_json::Value::as_str)
    }
}

#[test]
fn json_parser_is_strict() {
    let ok = Json::parse_document(r#"{"a":1,"b":[true,null,-2.5e3],"c":"x\"\u00e9"}"#).unwrap();
    assert_eq!(ok.str("c"), Some("x\"é"));
    for bad in [
        r#"{"a":1,}"#,
        r#"{"a":1}{"#,
        r#"{'a':1}"#,
        r#"{"a":01}"#,
        r#"{"a":1,"a":2}"#,
        "{\"a\":\"\t\"}",
        "time=x level=INFO",
    ] {
        assert!(Json::parse_document(bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// GET `path` on `port`: (status code, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Lines of a child's pipe, collected by a thread.
fn collect_lines<R: Read + Send + 'static>(r: R) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(line) => l.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
    });
    lines
}

fn sigterm_and_wait(child: &mut Child) -> i32 {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("litestream did not exit within 30s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `name` with exactly these labels.
fn metric(exp: &Exposition, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    exp.get(name)?
        .1
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

fn scrape(port: u16) -> (String, Exposition) {
    let (status, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "/metrics status\n{body}");
    let exp = parse_exposition(&body)
        .unwrap_or_else(|e| panic!("/metrics is not valid Prometheus text: {e}\n{body}"));
    (body, exp)
}

// Credentials in the config; none may appear in any output line.
const SECRET_KEY_ID: &str = "AKIAZZTOPLEVELKEYID7F3A";
const SECRET_ACCESS_KEY: &str = "tOpLeVeL/SeCrEt+AcCeSs-KeY-9b1c";
const SECRET_ENV: &str = "EnvExpandedSecret-4d2e";
const SECRET_PASSWORD: &str = "replica-pa55word-61aa";
const SECRET_ACCOUNT_KEY: &str = "QWNjb3VudEtleVNlY3JldA==";
const SECRET_SAS: &str = "sv=2024-01-01&sig=SaSsIgNaTuReSeCrEt";

// ---------------------------------------------------------------------------------------
// Logs and metrics under a write load.

#[test]
fn json_logs_and_metrics_under_write_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let db = root.join("app.db");
    let replica = root.join("replica");
    let cfg_path = root.join("litestream.yml");
    let port = free_port();
    let db_s = db.display().to_string();

    let cfg = format!(
        "addr: 127.0.0.1:{port}
access-key-id: {SECRET_KEY_ID}
secret-access-key: {SECRET_ACCESS_KEY}
logging:
  type: json
  level: debug
dbs:
  - path: {db}
    monitor-interval: 100ms
    checkpoint-interval: 1s
    min-checkpoint-page-count: 8
    replicas:
      - type: file
        name: backup
        path: {replica}
        sync-interval: 200ms
        password: {SECRET_PASSWORD}
        account-key: {SECRET_ACCOUNT_KEY}
        sas-token: \"{SECRET_SAS}\"
        secret-access-key: ${{LS_TEST_SECRET}}
",
        db = db.display(),
        replica = replica.display(),
    );
    std::fs::write(&cfg_path, cfg).unwrap();

    let c = rusqlite::Connection::open(&db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.pragma_update(None, "journal_mode", "wal").unwrap();
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t (v) VALUES (randomblob(100));")
        .unwrap();

    let mut child = Command::new(our_bin())
        .args(["replicate", "-config", &cfg_path.display().to_string()])
        .env_remove("LITESTREAM_LOG")
        .env_remove("LITESTREAM_CONFIG")
        .env("LS_TEST_SECRET", SECRET_ENV)
        .env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", our_bin().display()));
    let stdout = collect_lines(child.stdout.take().unwrap());
    let stderr = collect_lines(child.stderr.take().unwrap());
    let dump = || {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            stdout.lock().unwrap().join("\n"),
            stderr.lock().unwrap().join("\n")
        )
    };
    let has_msg = |msg: &str| {
        stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&format!("\"msg\":\"{msg}\"")))
    };

    wait_for(Duration::from_secs(30), "snapshot written", dump, || {
        has_msg("snapshot written")
    });
    wait_for(Duration::from_secs(10), "/healthz", dump, || {
        http_get(port, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    let (body1, m1) = scrape(port);

    // Spec section 10 names (checkpoint series appear after the first checkpoint: below).
    for name in [
        "litestream_db_size",
        "litestream_wal_size",
        "litestream_total_wal_bytes",
        "litestream_shadow_wal_index",
        "litestream_shadow_wal_size",
        "litestream_sync_count",
        "litestream_sync_error_count",
        "litestream_sync_seconds",
        "litestream_checkpoint_count",
        "litestream_checkpoint_error_count",
        "litestream_checkpoint_seconds",
        "litestream_replica_wal_bytes",
        "litestream_replica_wal_index",
        "litestream_replica_wal_offset",
        "litestream_replica_validation_total",
        "litestream_replica_operation_total",
        "litestream_replica_operation_bytes",
    ] {
        assert!(m1.contains_key(name), "/metrics lacks {name}\n{body1}");
    }
    for (name, kind) in [
        ("litestream_db_size", "gauge"),
        ("litestream_total_wal_bytes", "counter"),
        ("litestream_sync_count", "counter"),
        ("litestream_replica_wal_bytes", "counter"),
        ("litestream_replica_wal_index", "gauge"),
        ("litestream_checkpoint_count", "counter"),
    ] {
        assert_eq!(m1[name].0, kind, "type of {name}\n{body1}");
    }
    let dbl = [("db", db_s.as_str())];
    let rl = [("db", db_s.as_str()), ("name", "backup")];
    let sync1 = metric(&m1, "litestream_sync_count", &dbl)
        .unwrap_or_else(|| panic!("sync_count for {db_s}\n{body1}"));
    let total1 = metric(&m1, "litestream_total_wal_bytes", &dbl)
        .unwrap_or_else(|| panic!("total_wal_bytes\n{body1}"));
    let rbytes1 = metric(&m1, "litestream_replica_wal_bytes", &rl)
        .unwrap_or_else(|| panic!("replica_wal_bytes\n{body1}"));
    assert!(
        metric(&m1, "litestream_db_size", &dbl).is_some_and(|v| v > 0.0),
        "db_size\n{body1}"
    );
    for status in ["ok", "error"] {
        assert!(
            metric(
                &m1,
                "litestream_replica_validation_total",
                &[("db", &db_s), ("name", "backup"), ("status", status)]
            )
            .is_some(),
            "validation_total status={status}\n{body1}"
        );
    }
    // (Operation counters are not incremented by the file backend, as in Litestream.)

    // Write load: a few hundred commits of 1 KiB rows, well past the checkpoint threshold.
    let load_start = Instant::now();
    let mut i = 0;
    while load_start.elapsed() < Duration::from_secs(3) || i < 300 {
        c.execute("INSERT INTO t (v) VALUES (randomblob(1024))", [])
            .unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_for(
        Duration::from_secs(30),
        "a checkpoint and a wal segment",
        dump,
        || has_msg("checkpoint") && has_msg("wal segment written"),
    );
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        Duration::from_secs(20),
        "counters to move",
        || last.borrow().clone(),
        || {
            let (body, m) = scrape(port);
            let moved = metric(&m, "litestream_sync_count", &dbl).is_some_and(|v| v > sync1)
                && metric(&m, "litestream_total_wal_bytes", &dbl).is_some_and(|v| v > total1)
                && metric(&m, "litestream_replica_wal_bytes", &rl)
                    .is_some_and(|v| v > rbytes1 + 300.0 * 1024.0)
                && m["litestream_checkpoint_count"].1.iter().any(|s| {
                    s.labels.get("db") == Some(&db_s)
                        && s.labels.contains_key("mode")
                        && s.value > 0.0
                });
            *last.borrow_mut() = format!("before:\n{body1}\nnow:\n{body}");
            moved
        },
    );
    let (status, health) = http_get(port, "/healthz").unwrap();
    assert_eq!((status, health.as_str()), (200, "ok\n"), "/healthz");

    assert_eq!(sigterm_and_wait(&mut child), 0, "exit status\n{}", dump());
    std::thread::sleep(Duration::from_millis(200)); // let the readers drain the pipes
    let out = stdout.lock().unwrap().clone();
    let err = stderr.lock().unwrap().clone();

    // Every stdout line is one JSON object with time, level and msg.
    assert!(!out.is_empty(), "no log output\n{}", dump());
    let mut events: Vec<Json> = Vec::new();
    for line in &out {
        let v = Json::parse_document(line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}\n{}", dump()));
        for k in ["time", "level", "msg"] {
            assert!(v.str(k).is_some(), "no string {k:?} in {line}");
        }
        assert!(
            matches!(v.str("level"), Some("DEBUG" | "INFO" | "WARN" | "ERROR")),
            "level: {line}"
        );
        events.push(v);
    }
    let find = |msg: &str| -> Vec<&Json> {
        events
            .iter()
            .filter(|e| e.str("msg") == Some(msg))
            .collect()
    };

    let gens = find("sync: new generation");
    assert!(!gens.is_empty(), "no `sync: new generation`\n{}", dump());
    for g in &gens {
        assert!(
            g.str("reason").is_some_and(|r| !r.is_empty()),
            "reason: {g:?}"
        );
        assert_eq!(g.str("db"), Some(db_s.as_str()), "{g:?}");
        assert!(g.str("generation").is_some_and(|s| s.len() == 16), "{g:?}");
        assert_eq!(g.str("level"), Some("INFO"));
    }
    for msg in ["snapshot written", "wal segment written"] {
        let ev = find(msg);
        assert!(!ev.is_empty(), "no `{msg}`\n{}", dump());
        for e in ev {
            assert_eq!(e.str("replica"), Some("backup"), "{e:?}");
            assert!(e.str("position").is_some(), "{e:?}");
            assert!(
                e.get("sz")
                    .and_then(serde_json::Value::as_f64)
                    .is_some_and(|n| n > 0.0),
                "sz: {e:?}"
            );
            assert_eq!(e.str("level"), Some("INFO"));
        }
    }
    // Litestream v0.3.13 logs its checkpoints at debug: `msg=checkpoint mode=PASSIVE result=…`.
    let cps = find("checkpoint");
    assert!(!cps.is_empty(), "no `checkpoint`\n{}", dump());
    for e in cps {
        assert!(
            matches!(e.str("mode"), Some("PASSIVE" | "RESTART" | "TRUNCATE")),
            "{e:?}"
        );
        assert_eq!(e.str("db"), Some(db_s.as_str()), "{e:?}");
    }

    // No credential anywhere.
    for line in out.iter().chain(err.iter()) {
        for secret in [
            SECRET_KEY_ID,
            SECRET_ACCESS_KEY,
            SECRET_ENV,
            SECRET_PASSWORD,
            SECRET_ACCOUNT_KEY,
            SECRET_SAS,
            "SaSsIgNaTuReSeCrEt",
        ] {
            assert!(
                !line.contains(secret),
                "secret {secret:?} in log line: {line}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The restore progress line.

/// A database of about `mib` MiB of incompressible rows, replicated to `replica` by our
/// `litestream replicate` (stopped once the snapshot is written).
fn large_replica(root: &Path, mib: usize) -> std::path::PathBuf {
    let db = root.join("big.db");
    let replica = root.join("replica");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "journal_mode", "wal").unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE b (x BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO b SELECT randomblob(4000) FROM n;
             PRAGMA wal_checkpoint(TRUNCATE);",
            mib * 256
        ))
        .unwrap();
    }
    let mut child = Command::new(our_bin())
        .args(["replicate", &db.display().to_string(), &file_url(&replica)])
        .env_remove("LITESTREAM_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "the snapshot", String::new, || {
        replica.join("generations").is_dir()
            && generations(&replica)
                .iter()
                .any(|g| !snapshot_indexes(&replica, g).is_empty())
    });
    assert_eq!(sigterm_and_wait(&mut child), 0);
    replica
}

#[test]
fn restore_progress_line_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let replica = large_replica(&root, 24);
    let url = file_url(&replica);

    // On a pseudo-terminal (util-linux `script`): the line appears, redrawn with \r, ending
    // at 100%.
    let out_tty = root.join("tty.db");
    let cmdline = format!(
        "'{}' restore -o '{}' '{}'",
        our_bin().display(),
        out_tty.display(),
        url
    );
    let o = Command::new("script")
        .args(["-q", "-e", "-c", &cmdline, "/dev/null"])
        .env_remove("LITESTREAM_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| {
            panic!("util-linux `script` is required for the pseudo-terminal test: {e}")
        });
    assert_exit(&o, 0, "restore under script");
    let tty = String::from_utf8_lossy(&o.stdout);
    let re = regex::Regex::new(r"\r(?:\x1b\[2K)?restoring: (\d{1,3})% \((\d+\.\d)/(\d+\.\d) MB\)")
        .unwrap();
    let caps: Vec<_> = re.captures_iter(&tty).collect();
    assert!(
        !caps.is_empty(),
        "no progress line on the terminal:\n{tty:?}"
    );
    let last = caps.last().unwrap();
    assert_eq!(&last[1], "100", "last progress line: {tty:?}");
    assert_eq!(last[2], last[3], "{tty:?}");
    let total: f64 = last[3].parse().unwrap();
    assert!(
        total > 20.0,
        "total {total} MB for a 24 MiB database: {tty:?}"
    );
    let mut prev = 0u32;
    for c in &caps {
        let pct: u32 = c[1].parse().unwrap();
        assert!(pct >= prev && pct <= 100, "{tty:?}");
        prev = pct;
    }
    assert!(
        tty.contains("restoring: 100%")
            && tty[tty.rfind("restoring: 100%").unwrap()..].contains('\n'),
        "the final line ends with a newline: {tty:?}"
    );
    assert_integrity_ok(&out_tty, "restore on a terminal");

    // Without a terminal: nothing.
    let out_pipe = root.join("pipe.db");
    let o = run_bin(
        &our_bin(),
        ["restore", "-o", &out_pipe.display().to_string(), &url],
    );
    assert_exit(&o, 0, "restore to a pipe");
    let err = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        !err.contains("restoring:") && !err.contains('\r') && !stdout.contains("restoring:"),
        "progress output without a terminal:\n{}",
        describe(&o)
    );
    assert!(
        err.contains("restoring snapshot"),
        "logs still there:\n{}",
        describe(&o)
    );
    assert_files_equal(&out_tty, &out_pipe, "tty and pipe restores");
}

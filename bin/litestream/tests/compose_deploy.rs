//! The deployment templates under `deploy/{s3,abs,sftp}/` run for real: this test reads each
//! `docker-compose.yml`, checks the app/sidecar wiring, and runs exactly the sidecar's
//! healthcheck and `replicate` commands with our binary against the local test servers
//! (`TEST_S3_*`, `TEST_ABS_*`, `TEST_SFTP_*` from `scripts/test.sh`; a missing variable is a
//! failure, never a skip). Then the disaster drill: replicate under a write load, stop, lose
//! the volume, run the healthcheck again and check the data is back.
//!
//! Standing in for Docker: the named volume `data` is a temp dir, the bind-mounted
//! `litestream.yml` is a copy with container paths rewritten to it, `/usr/local/bin/litestream`
//! is our binary, the container environment is the service's `environment:` after compose
//! interpolation (the process gets nothing else but `PATH`, `HOME`, and `LITESTREAM_CONFIG`
//! pointing at the config copy, since `/etc/litestream.yml` cannot be written here).
//!
//! Along the way: `/metrics` on the configured `addr` must parse and its counters must move
//! under the write load, and every log line (JSON, per the templates) must parse and carry no
//! credential. Failures are collected and reported together at the end so one missing piece
//! does not hide the others.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use litestream_test_servers::free_port;
use serde::Deserialize;

const LITESTREAM: &str = "/usr/local/bin/litestream";

// ------------------------------------------------------------------------------------------
// compose file model
// ------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ComposeFile {
    services: BTreeMap<String, Service>,
    #[serde(default)]
    volumes: BTreeMap<String, Option<serde::de::IgnoredAny>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum StrOrList {
    Str(String),
    List(Vec<String>),
}

impl StrOrList {
    fn to_vec(&self) -> Vec<String> {
        match self {
            StrOrList::Str(s) => vec![s.clone()],
            StrOrList::List(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum Environment {
    Map(BTreeMap<String, Option<String>>),
    List(Vec<String>),
}

#[derive(Debug, Deserialize, Clone)]
struct DependsOn {
    condition: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
struct Healthcheck {
    test: StrOrList,
}

#[derive(Debug, Deserialize, Clone)]
struct Service {
    image: Option<String>,
    entrypoint: Option<StrOrList>,
    command: Option<StrOrList>,
    environment: Option<Environment>,
    #[serde(default)]
    volumes: Vec<String>,
    healthcheck: Option<Healthcheck>,
    depends_on: Option<BTreeMap<String, DependsOn>>,
}

fn load_compose(path: &Path) -> ComposeFile {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------
// compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR, $$
// ------------------------------------------------------------------------------------------

fn interpolate(s: &str, env: &BTreeMap<String, String>) -> String {
    let lookup = |name: &str| -> Option<String> { env.get(name).cloned() };
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        if b.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if b.get(i + 1) == Some(&b'{') {
            let end = s[i..].find('}').map(|e| i + e).unwrap_or_else(|| {
                panic!("unterminated ${{ in {s:?}");
            });
            let inner = &s[i + 2..end];
            let value = if let Some((name, def)) = inner.split_once(":-") {
                lookup(name)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| def.to_string())
            } else if let Some((name, def)) = inner.split_once('-') {
                lookup(name).unwrap_or_else(|| def.to_string())
            } else {
                lookup(inner).unwrap_or_else(|| {
                    panic!("compose variable {inner} is not set (test env mapping incomplete)")
                })
            };
            out.push_str(&value);
            i = end + 1;
            continue;
        }
        let name: String = s[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            out.push('$');
            i += 1;
        } else {
            out.push_str(
                &lookup(&name).unwrap_or_else(|| panic!("compose variable {name} is not set")),
            );
            i += 1 + name.len();
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// the environment each template reads, pointed at the local test servers
// ------------------------------------------------------------------------------------------

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the tests via `bash scripts/test.sh` (it starts the local \
             S3/Azure/SFTP servers and exports TEST_S3_*, TEST_ABS_*, TEST_SFTP_*)"
        ),
    }
}

fn unique(tag: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("compose-{tag}-{:x}-{n:x}", std::process::id())
}

/// (host environment the compose file is interpolated with, secrets that must never be logged)
fn host_env(backend: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut e = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        e.insert(k.to_string(), v);
    };
    put("LITESTREAM_ADDR", format!("127.0.0.1:{}", free_port()));
    let secrets = match backend {
        "s3" => {
            put("AWS_ACCESS_KEY_ID", env("TEST_S3_ACCESS_KEY_ID"));
            put("AWS_SECRET_ACCESS_KEY", env("TEST_S3_SECRET_ACCESS_KEY"));
            // The seed's `s3://${AWS_S3_BUCKET}/...` URL: on the local server the bucket host
            // is BUCKET.localhost:PORT (path style over plain HTTP), as for MinIO.
            let endpoint = env("TEST_S3_ENDPOINT");
            let port = endpoint.rsplit(':').next().unwrap_or("9000").to_string();
            put(
                "AWS_S3_BUCKET",
                format!("{}.localhost:{port}", env("TEST_S3_BUCKET")),
            );
            put("LITESTREAM_REPLICA_PATH", unique("s3"));
            vec![env("TEST_S3_SECRET_ACCESS_KEY")]
        }
        "abs" => {
            put(
                "LITESTREAM_AZURE_ACCOUNT_NAME",
                env("TEST_ABS_ACCOUNT_NAME"),
            );
            put("LITESTREAM_AZURE_ACCOUNT_KEY", env("TEST_ABS_ACCOUNT_KEY"));
            put("LITESTREAM_AZURE_CONTAINER", env("TEST_ABS_CONTAINER"));
            put("LITESTREAM_AZURE_ENDPOINT", env("TEST_ABS_ENDPOINT"));
            put("LITESTREAM_REPLICA_PATH", unique("abs"));
            vec![env("TEST_ABS_ACCOUNT_KEY")]
        }
        "sftp" => {
            put("LITESTREAM_SFTP_HOST", env("TEST_SFTP_ADDR"));
            put("LITESTREAM_SFTP_USER", env("TEST_SFTP_USER"));
            put("LITESTREAM_SFTP_PASSWORD", env("TEST_SFTP_PASSWORD"));
            put("LITESTREAM_SFTP_HOST_KEY", env("TEST_SFTP_HOST_KEY"));
            put(
                "LITESTREAM_SFTP_PATH",
                format!("{}/{}", env("TEST_SFTP_ROOT"), unique("sftp")),
            );
            vec![env("TEST_SFTP_PASSWORD")]
        }
        other => panic!("unknown backend {other}"),
    };
    (e, secrets)
}

// ------------------------------------------------------------------------------------------
// the sidecar, "containerised" in a temp dir
// ------------------------------------------------------------------------------------------

struct Sidecar {
    /// Container path -> host path (longest first).
    mounts: Vec<(String, PathBuf)>,
    /// The container environment.
    env: BTreeMap<String, String>,
    entrypoint: Vec<String>,
    command: Vec<String>,
    healthcheck: Vec<String>,
    config: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
}

impl Sidecar {
    fn map_str(&self, s: &str) -> String {
        for (dst, host) in &self.mounts {
            if s == dst {
                return host.to_string_lossy().into_owned();
            }
            if let Some(rest) = s.strip_prefix(&format!("{dst}/")) {
                return host.join(rest).to_string_lossy().into_owned();
            }
        }
        s.to_string()
    }

    fn map_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (dst, host) in &self.mounts {
            out = out.replace(&format!("{dst}/"), &format!("{}/", host.display()));
        }
        out
    }

    /// Turn a container command line into a host `Command` running our binary.
    fn command(&self, argv: &[String]) -> Command {
        let mut argv: Vec<String> = argv.iter().map(|a| self.map_str(a)).collect();
        let bin = common::our_bin().to_string_lossy().into_owned();
        let mut cmd = if argv.first().map(String::as_str) == Some(LITESTREAM) {
            argv[0] = bin;
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        } else if argv.len() >= 3 && argv[0] == "/bin/sh" && argv[1] == "-c" {
            let script = self
                .map_text(&argv[2..].join(" "))
                .replace(LITESTREAM, &bin);
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        } else {
            panic!("unexpected sidecar command {argv:?}");
        };
        cmd.env_clear()
            .envs(&self.env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("LITESTREAM_CONFIG", &self.config)
            .stdin(Stdio::null());
        cmd
    }

    fn healthcheck(&self) -> Output {
        let test = &self.healthcheck;
        let argv = match test.first().map(String::as_str) {
            Some("CMD") => test[1..].to_vec(),
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
            _ => panic!("unexpected healthcheck test {test:?}"),
        };
        let mut cmd = self.command(&argv);
        let start = Instant::now();
        let out = cmd.output().unwrap();
        eprintln!(
            "healthcheck {:?} -> {:?} in {:.1?}",
            argv,
            out.status.code(),
            start.elapsed()
        );
        out
    }

    fn start_replicate(&self, log: &Path) -> Child {
        let argv: Vec<String> = self
            .entrypoint
            .iter()
            .chain(self.command.iter())
            .cloned()
            .collect();
        let mut cmd = self.command(&argv);
        let f = fs::File::create(log).unwrap();
        cmd.stdout(f.try_clone().unwrap()).stderr(f);
        cmd.spawn().unwrap()
    }
}

fn sidecar(backend: &str, host: &BTreeMap<String, String>) -> Sidecar {
    let dir = common::repo_root().join("deploy").join(backend);
    let compose = load_compose(&dir.join("docker-compose.yml"));

    // Which service is the sidecar, which the app.
    let (side_name, side) = compose
        .services
        .iter()
        .find(|(_, s)| {
            s.healthcheck
                .as_ref()
                .is_some_and(|h| h.test.to_vec().iter().any(|a| a.contains(LITESTREAM)))
        })
        .unwrap_or_else(|| panic!("{backend}: no service with a litestream healthcheck"));
    let side_vol = side
        .volumes
        .iter()
        .find_map(|v| {
            let (src, dst) = v.split_once(':')?;
            (!src.starts_with('.') && !src.starts_with('/')).then(|| (src.to_string(), dst))
        })
        .unwrap_or_else(|| panic!("{backend}: sidecar has no named volume"));
    assert!(
        compose.volumes.contains_key(&side_vol.0),
        "{backend}: volume {} not declared",
        side_vol.0
    );
    let apps: Vec<_> = compose
        .services
        .iter()
        .filter(|(n, _)| *n != side_name)
        .collect();
    assert!(!apps.is_empty(), "{backend}: no app service");
    for (name, app) in apps {
        let cond = app
            .depends_on
            .as_ref()
            .and_then(|d| d.get(side_name))
            .and_then(|d| d.condition.clone());
        assert_eq!(
            cond.as_deref(),
            Some("service_healthy"),
            "{backend}: {name} must depend on {side_name} being healthy"
        );
        assert!(
            app.volumes
                .iter()
                .any(|v| v.split(':').next() == Some(side_vol.0.as_str())),
            "{backend}: {name} does not share volume {}",
            side_vol.0
        );
    }
    assert!(
        side.image
            .as_deref()
            .is_some_and(|i| i.contains("litestream")),
        "{backend}: sidecar image {:?}",
        side.image
    );

    // The container environment, after compose interpolation.
    let mut cenv = BTreeMap::new();
    match side.environment.clone() {
        Some(Environment::Map(m)) => {
            for (k, v) in m {
                let v = match v {
                    Some(v) => interpolate(&v, host),
                    None => host.get(&k).cloned().unwrap_or_default(),
                };
                cenv.insert(k, v);
            }
        }
        Some(Environment::List(l)) => {
            for kv in l {
                let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
                cenv.insert(k.to_string(), interpolate(v, host));
            }
        }
        None => {}
    }

    // Mounts: named volumes -> temp dirs; bind-mounted files -> rewritten copies.
    let tmp = tempfile::tempdir().unwrap();
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut binds = Vec::new();
    for v in &side.volumes {
        let mut parts = v.split(':');
        let (src, dst) = (parts.next().unwrap(), parts.next().unwrap());
        if src.starts_with('.') || src.starts_with('/') {
            binds.push((dir.join(src), dst.to_string()));
        } else {
            let p = tmp.path().join(format!("vol-{src}"));
            fs::create_dir_all(&p).unwrap();
            mounts.push((dst.to_string(), p));
        }
    }
    let mut config = None;
    let mut sc = Sidecar {
        mounts: mounts.clone(),
        env: cenv,
        entrypoint: side
            .entrypoint
            .as_ref()
            .map(StrOrList::to_vec)
            .unwrap_or_else(|| vec![LITESTREAM.to_string()]),
        command: side
            .command
            .as_ref()
            .map(StrOrList::to_vec)
            .unwrap_or_else(|| vec!["replicate".to_string()]),
        healthcheck: side
            .healthcheck
            .as_ref()
            .unwrap()
            .test
            .to_vec()
            .iter()
            .map(|a| interpolate(a, host))
            .collect(),
        config: PathBuf::new(),
        data: mounts
            .iter()
            .find(|(d, _)| d == side_vol.1)
            .unwrap()
            .1
            .clone(),
        dir: tmp,
    };
    for (src, dst) in binds {
        let text = fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        let copy = sc.dir.path().join(src.file_name().unwrap());
        fs::write(&copy, sc.map_text(&text)).unwrap();
        if dst == "/etc/litestream.yml" {
            config = Some(copy.clone());
        }
        mounts.push((dst, copy));
    }
    mounts.sort_by_key(|(d, _)| std::cmp::Reverse(d.len()));
    sc.mounts = mounts;
    sc.config = config.unwrap_or_else(|| panic!("{backend}: litestream.yml not mounted"));
    assert_eq!(
        sc.command,
        vec!["replicate".to_string()],
        "{backend}: sidecar command"
    );
    sc
}

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

fn count_rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// `name{labels} value` lines of a /metrics body whose name is `name`, summed.
fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        let n = line.split(['{', ' ']).next().unwrap_or("");
        if n == name {
            let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

fn kill_term(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ------------------------------------------------------------------------------------------
// the drill
// ------------------------------------------------------------------------------------------

fn drill(backend: &str) {
    let (host, secrets) = host_env(backend);
    let sc = sidecar(backend, &host);
    let db = sc.data.join("app.db");
    let mut failures: Vec<String> = Vec::new();
    let mut logs = String::new();

    // 1. First start: the replica is empty, the healthcheck passes and creates nothing.
    let out = sc.healthcheck();
    logs.push_str(&String::from_utf8_lossy(&out.stdout));
    logs.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{backend}: healthcheck on an empty replica:\n{}",
        describe(&out)
    );
    assert!(
        !db.exists(),
        "{backend}: healthcheck created {}",
        db.display()
    );

    // 2. The app creates its database; the sidecar replicates while the app writes.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);")
        .unwrap();
    let log_path = sc.dir.path().join("replicate.log");
    let mut child = sc.start_replicate(&log_path);
    let addr = sc.env.get("LITESTREAM_ADDR").cloned().unwrap_or_default();
    let mut rows = 0i64;
    let mut first_metrics: Option<String> = None;
    for batch in 0..30 {
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..50 {
            rows += 1;
            tx.execute(
                "INSERT INTO t (id, v) VALUES (?1, ?2)",
                rusqlite::params![rows, format!("row {rows} {}", "x".repeat(200))],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if batch == 10 && !addr.is_empty() {
            first_metrics = http_get(&addr, "/metrics").ok();
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "{backend}: replicate exited early ({st}):\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
    }

    // 3. Wait until the replica holds every row (restore to a scratch file).
    let scratch = sc.dir.path().join("probe.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut replicated = false;
    while Instant::now() < deadline {
        let _ = fs::remove_file(&scratch);
        let out = sc
            .command(&[
                LITESTREAM.to_string(),
                "restore".into(),
                "-o".into(),
                scratch.to_string_lossy().into_owned(),
                "/data/app.db".into(),
            ])
            .output()
            .unwrap();
        if out.status.success() && scratch.exists() && count_rows(&scratch) == rows {
            replicated = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if !replicated {
        failures.push(format!(
            "replica did not reach {rows} rows within 60s; replicate log:\n{}",
            fs::read_to_string(&log_path).unwrap_or_default()
        ));
    }

    // 4. Metrics: served on addr, parseable names, counters moving under the load.
    if addr.is_empty() {
        failures.push("no LITESTREAM_ADDR in the sidecar environment".into());
    } else {
        match (first_metrics, http_get(&addr, "/metrics")) {
            (Some(a), Ok(b)) => {
                let body = b.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
                if !b.starts_with("HTTP/1.1 200") {
                    failures.push(format!("/metrics: {b}"));
                }
                for name in [
                    "litestream_db_size",
                    "litestream_sync_count",
                    "litestream_replica_wal_index",
                    "litestream_replica_operation_total",
                    "litestream_replica_lag_seconds",
                ] {
                    if !body.contains(&format!("# TYPE {name} ")) {
                        failures.push(format!("/metrics lacks {name}"));
                    }
                }
                let before = metric_sum(&a, "litestream_sync_count").unwrap_or(0.0);
                let after = metric_sum(body, "litestream_sync_count").unwrap_or(0.0);
                if after <= before {
                    failures.push(format!(
                        "litestream_sync_count did not move under load ({before} -> {after})"
                    ));
                }
                let ops = metric_sum(body, "litestream_replica_operation_total").unwrap_or(0.0);
                if ops <= 0.0 {
                    failures.push("litestream_replica_operation_total is 0".into());
                }
                match http_get(&addr, "/healthz") {
                    Ok(h) if h.starts_with("HTTP/1.1 200") => {}
                    Ok(h) => failures.push(format!("/healthz while replicating: {h}")),
                    Err(e) => failures.push(format!("/healthz: {e}")),
                }
            }
            (a, b) => failures.push(format!(
                "metrics not served on {addr} (first scrape ok: {}, last: {:?})",
                a.is_some(),
                b.err()
            )),
        }
    }

    // 5. Stop the sidecar, lose the volume.
    drop(conn);
    kill_term(&mut child);
    let replicate_log = fs::read_to_string(&log_path).unwrap_or_default();
    logs.push_str(&replicate_log);
    fs::remove_dir_all(&sc.data).unwrap();
    fs::create_dir_all(&sc.data).unwrap();

    // 6. The container comes back: the healthcheck restores the database.
    let out = sc.healthcheck();
    logs.push_str(&String::from_utf8_lossy(&out.stdout));
    logs.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || !db.exists() {
        failures.push(format!(
            "healthcheck did not restore the database:\n{}",
            describe(&out)
        ));
    } else {
        let n = count_rows(&db);
        if n != rows {
            failures.push(format!("restored {n} rows, expected {rows}"));
        }
        let ic = common::integrity_check(&db);
        if ic != "ok" {
            failures.push(format!("integrity_check: {ic}"));
        }
        // And from then on the healthcheck is a no-op.
        let before = fs::metadata(&db).unwrap().modified().unwrap();
        let again = sc.healthcheck();
        if !again.status.success() || fs::metadata(&db).unwrap().modified().unwrap() != before {
            failures.push(format!(
                "healthcheck with the database present:\n{}",
                describe(&again)
            ));
        }
    }

    // 7. Logs: JSON lines (per the templates), the operator events, no credential.
    for s in &secrets {
        if logs.contains(s.as_str()) {
            failures.push(format!("a credential appears in the logs:\n{logs}"));
        }
    }
    for line in replicate_log.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Result<BTreeMap<String, serde::de::IgnoredAny>, _> =
            serde_saphyr::from_str(line);
        let ok = line.starts_with("{\"time\":\"")
            && line.ends_with('}')
            && line.contains("\"level\":\"")
            && line.contains("\"msg\":")
            && parsed.is_ok();
        if !ok {
            failures.push(format!("replicate log line is not a JSON record: {line}"));
            break;
        }
    }
    for msg in ["initialized db", "replicating to"] {
        if !replicate_log.contains(&format!("\"msg\":\"{msg}\"")) {
            failures.push(format!("replicate log lacks {msg:?}"));
        }
    }

    assert!(
        failures.is_empty(),
        "{backend}: {} problem(s):\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
}

#[test]
fn compose_s3_drill() {
    drill("s3");
}

#[test]
fn compose_abs_drill() {
    drill("abs");
}

#[test]
fn compose_sftp_drill() {
    drill("sftp");
}

#[test]
fn interpolation_follows_compose() {
    let mut e = BTreeMap::new();
    e.insert("A".to_string(), "1".to_string());
    e.insert("E".to_string(), String::new());
    assert_eq!(interpolate("x${A}y$A", &e), "x1y1");
    assert_eq!(interpolate("${B:-d}|${E:-d}|${E-d}", &e), "d|d|");
    assert_eq!(interpolate("$$A", &e), "$A");
}

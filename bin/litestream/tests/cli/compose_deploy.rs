//! The deployment templates under `deploy/{s3,abs,sftp,gcs}/` run for real, in docker's own order,
//! both forms of each: `docker-compose.yml` (the seed's form: `entrypoint: ["/bin/sh", "-c"]`,
//! `litestream replicate /data/app.db URL`, the healthcheck
//! `litestream restore -if-db-not-exists -if-replica-exists -o /data/app.db URL`, credentials
//! from the environment or in the URL) and `docker-compose.config.yml` (`litestream.yml`
//! mounted at `/etc/litestream.yml`). The exact strings of each file run with our binary against
//! the local test servers (`TEST_S3_*`, `TEST_ABS_*`, `TEST_SFTP_*`, `TEST_GCS_*` from
//! `scripts/test.sh`; a missing variable is a failure, never a skip); only the variables' values
//! are the test's. The seed has no GCS template: `deploy/gcs/` is its S3 one with a `gcs://` URL.
//!
//! The drill, as `docker compose up` runs it: the sidecar's `replicate` starts first on an empty
//! volume; its healthcheck's restore runs while it runs; once healthy the app creates the
//! database and writes. The volume is lost; the stack comes up again (replicate first, then the
//! healthcheck restores), the app writes more. The volume is lost again: the healthcheck brings
//! back every row of both phases (row contents compared). Each stop is `docker stop`: SIGTERM
//! to the container's PID 1, which must be litestream itself (the image's `/bin/sh` is busybox
//! ash, which execs the command; the test runs the same busybox), exiting within docker's 10 s.
//!
//! Standing in for Docker: the named volume is a temp dir, `/usr/local/bin` holds a `litestream`
//! link to our binary (and is on `PATH`), a bind-mounted `litestream.yml` is a copy with
//! container paths rewritten, the container environment is the service's `environment:` after
//! compose interpolation plus `PATH`, `HOME` (an empty directory: a fresh container has no
//! `~/.ssh/known_hosts`) and, for the config form, `LITESTREAM_CONFIG` pointing at the copy.
//! Failures are collected and reported together at the end.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common;
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
    common::test_env(
        name,
        "the compose drill needs the local S3/Azure/SFTP/GCS servers",
    )
}

fn unique(tag: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("compose-{tag}-{:x}-{n:x}", std::process::id())
}

/// Which file of a backend's folder.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Form {
    /// `docker-compose.yml`: the seed's URL form.
    Seed,
    /// `docker-compose.config.yml` + `litestream.yml`.
    Config,
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
            let endpoint = env("TEST_S3_ENDPOINT");
            let port = endpoint.rsplit(':').next().unwrap_or("9000").to_string();
            let path = unique("s3");
            // Seed: s3://${AWS_S3_BUCKET}/MyApp.sqlite. The local server's bucket host is
            // BUCKET.localhost:PORT (path style over plain HTTP, as for MinIO); the run's own
            // prefix rides in the value.
            put(
                "AWS_S3_BUCKET",
                format!("{}.localhost:{port}/{path}", env("TEST_S3_BUCKET")),
            );
            put("AWS_ACCESS_KEY_ID", env("TEST_S3_ACCESS_KEY_ID"));
            put("AWS_SECRET_ACCESS_KEY", env("TEST_S3_SECRET_ACCESS_KEY"));
            put("LITESTREAM_REPLICA_PATH", path);
            vec![env("TEST_S3_SECRET_ACCESS_KEY")]
        }
        "abs" => {
            let path = unique("abs");
            put("AZURE_ACCOUNT_NAME", env("TEST_ABS_ACCOUNT_NAME"));
            put("AZURE_CONTAINER", env("TEST_ABS_CONTAINER"));
            put("AZURE_ACCOUNT_KEY", env("TEST_ABS_ACCOUNT_KEY"));
            put(
                "AZURE_REPLICA_PATH",
                format!("{path}/MyApp.sqlite?endpoint={}", env("TEST_ABS_ENDPOINT")),
            );
            put(
                "LITESTREAM_AZURE_ACCOUNT_NAME",
                env("TEST_ABS_ACCOUNT_NAME"),
            );
            put("LITESTREAM_AZURE_ACCOUNT_KEY", env("TEST_ABS_ACCOUNT_KEY"));
            put("LITESTREAM_AZURE_CONTAINER", env("TEST_ABS_CONTAINER"));
            put("LITESTREAM_AZURE_ENDPOINT", env("TEST_ABS_ENDPOINT"));
            put("LITESTREAM_REPLICA_PATH", path);
            vec![env("TEST_ABS_ACCOUNT_KEY")]
        }
        "sftp" => {
            let dir = format!("{}/{}", env("TEST_SFTP_ROOT"), unique("sftp"));
            // Seed: sftp://${SFTP_USERNAME}:${SFTP_PASSWORD}@${SFTP_HOST}:${SFTP_PORT}/MyApp.sqlite;
            // the run's own directory under the server's root rides in SFTP_PORT's value.
            put("SFTP_USERNAME", env("TEST_SFTP_USER"));
            put("SFTP_PASSWORD", env("TEST_SFTP_PASSWORD"));
            put("SFTP_HOST", env("TEST_SFTP_HOST"));
            put("SFTP_PORT", format!("{}{dir}", env("TEST_SFTP_PORT")));
            put("LITESTREAM_SFTP_HOST", env("TEST_SFTP_ADDR"));
            put("LITESTREAM_SFTP_USER", env("TEST_SFTP_USER"));
            put("LITESTREAM_SFTP_PASSWORD", env("TEST_SFTP_PASSWORD"));
            put("LITESTREAM_SFTP_PATH", dir);
            // No host key anywhere: trusted on first use, remembered on the volume.
            vec![env("TEST_SFTP_PASSWORD")]
        }
        "gcs" => {
            // Seed-style: gcs://${GCS_BUCKET}/MyApp.sqlite; the run's own prefix rides in the
            // bucket's value. No credentials: STORAGE_EMULATOR_HOST, as Google's clients take it.
            let path = unique("gcs");
            put("GCS_BUCKET", format!("{}/{path}", env("TEST_GCS_BUCKET")));
            put("STORAGE_EMULATOR_HOST", env("TEST_GCS_EMULATOR_HOST"));
            put("LITESTREAM_REPLICA_PATH", path);
            vec![]
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
    /// entrypoint + command, as docker execs them.
    argv: Vec<String>,
    /// The healthcheck as docker execs it.
    healthcheck: Vec<String>,
    config: Option<PathBuf>,
    data: PathBuf,
    home: PathBuf,
    bin_dir: PathBuf,
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
        map_paths(text, &self.mounts)
    }

    /// A container command line (exec form, or `/bin/sh -c SCRIPT`) as a host `Command`: paths
    /// mapped to the mounts, `/bin/sh` the image's busybox ash.
    fn command(&self, argv: &[String]) -> Command {
        let mut cmd = if argv.len() >= 3 && argv[0] == "/bin/sh" && argv[1] == "-c" {
            let mut c = Command::new("busybox");
            c.arg("sh").arg("-c").arg(self.map_text(&argv[2]));
            c.args(&argv[3..]);
            c
        } else {
            let argv: Vec<String> = argv.iter().map(|a| self.map_str(a)).collect();
            assert!(
                argv[0].starts_with(self.bin_dir.to_str().unwrap()),
                "unexpected container command {argv:?}"
            );
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        };
        cmd.env_clear()
            .envs(&self.env)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.bin_dir.display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .env("HOME", &self.home)
            .stdin(Stdio::null());
        if let Some(c) = &self.config {
            cmd.env("LITESTREAM_CONFIG", c);
        }
        cmd
    }

    fn healthcheck(&self) -> Output {
        let start = Instant::now();
        let out = self.command(&self.healthcheck).output().unwrap();
        eprintln!(
            "healthcheck -> {:?} in {:.1?}",
            out.status.code(),
            start.elapsed()
        );
        out
    }

    /// The healthcheck's restore with its output moved to `scratch` (to see what the replica
    /// holds without touching the volume).
    fn probe(&self, scratch: &Path) -> Output {
        let target = self.map_str("/data/app.db");
        let scratch = scratch.to_str().unwrap();
        let argv: Vec<String> = self
            .healthcheck
            .iter()
            .map(|a| {
                self.map_text(a)
                    .replace(&format!("-o {target}"), &format!("-o {scratch}"))
            })
            .collect();
        let argv = match argv.iter().position(|a| a == "-o") {
            Some(i) if argv[0] != "/bin/sh" => {
                let mut v = argv.clone();
                v[i + 1] = scratch.to_string();
                v
            }
            _ => argv,
        };
        self.command(&argv).output().unwrap()
    }

    /// `docker compose up`: start the sidecar's process; returns once it has exec'd into
    /// litestream (the shell's own PID: what `docker stop` signals).
    fn start(&self, log: &Path) -> Child {
        let mut cmd = self.command(&self.argv);
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        cmd.stdout(f.try_clone().unwrap()).stderr(f);
        let child = cmd.spawn().unwrap();
        let comm = format!("/proc/{}/comm", child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let name = fs::read_to_string(&comm).unwrap_or_default();
            if name.trim() == "litestream" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the sidecar's PID {} is {:?}, not litestream: its /bin/sh did not exec the \
                 command, so docker stop's SIGTERM would not reach litestream",
                child.id(),
                name.trim()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

fn sidecar(backend: &str, form: Form, host: &BTreeMap<String, String>) -> Sidecar {
    let dir = common::repo_root().join("deploy").join(backend);
    let file = match form {
        Form::Seed => "docker-compose.yml",
        Form::Config => "docker-compose.config.yml",
    };
    let compose = load_compose(&dir.join(file));
    let what = format!("{backend}/{file}");

    let (side_name, side) = compose
        .services
        .iter()
        .find(|(_, s)| {
            s.healthcheck.as_ref().is_some_and(|h| {
                h.test
                    .to_vec()
                    .iter()
                    .any(|a| a.contains("litestream restore") || a.contains(LITESTREAM))
            })
        })
        .unwrap_or_else(|| panic!("{what}: no service with a litestream healthcheck"));
    let side_vol = side
        .volumes
        .iter()
        .find_map(|v| {
            let (src, dst) = v.split_once(':')?;
            (!src.starts_with('.') && !src.starts_with('/')).then(|| (src.to_string(), dst))
        })
        .unwrap_or_else(|| panic!("{what}: sidecar has no named volume"));
    assert_eq!(
        side_vol.1, "/data",
        "{what}: the volume is mounted at /data"
    );
    assert!(
        compose.volumes.contains_key(&side_vol.0),
        "{what}: volume {} not declared",
        side_vol.0
    );
    let apps: Vec<_> = compose
        .services
        .iter()
        .filter(|(n, _)| *n != side_name)
        .collect();
    assert!(!apps.is_empty(), "{what}: no app service");
    for (name, app) in apps {
        let cond = app
            .depends_on
            .as_ref()
            .and_then(|d| d.get(side_name))
            .and_then(|d| d.condition.clone());
        assert_eq!(
            cond.as_deref(),
            Some("service_healthy"),
            "{what}: {name} must depend on {side_name} being healthy"
        );
        assert!(
            app.volumes
                .iter()
                .any(|v| v.split(':').next() == Some(side_vol.0.as_str())),
            "{what}: {name} does not share volume {}",
            side_vol.0
        );
    }
    assert!(
        side.image
            .as_deref()
            .is_some_and(|i| i.contains("litestream")),
        "{what}: sidecar image {:?}",
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

    // Mounts: named volume -> temp dir; /usr/local/bin -> a dir with our binary as
    // `litestream`; bind-mounted files -> rewritten copies.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join(format!("vol-{}", side_vol.0));
    let home = tmp.path().join("home");
    let bin_dir = tmp.path().join("usr-local-bin");
    for d in [&data, &home, &bin_dir] {
        fs::create_dir_all(d).unwrap();
    }
    std::os::unix::fs::symlink(common::our_bin(), bin_dir.join("litestream")).unwrap();
    let mut mounts: Vec<(String, PathBuf)> = vec![
        ("/data".into(), data.clone()),
        ("/usr/local/bin".into(), bin_dir.clone()),
    ];
    let mut config = None;
    for v in &side.volumes {
        let mut parts = v.split(':');
        let (src, dst) = (parts.next().unwrap(), parts.next().unwrap());
        if src.starts_with('.') || src.starts_with('/') {
            let src = dir.join(src);
            let text =
                fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
            let copy = tmp.path().join(src.file_name().unwrap());
            fs::write(&copy, map_paths(&text, &mounts)).unwrap();
            if dst == "/etc/litestream.yml" {
                config = Some(copy.clone());
            }
            mounts.push((dst.to_string(), copy));
        }
    }
    mounts.sort_by_key(|(d, _)| std::cmp::Reverse(d.len()));

    let interp =
        |v: Vec<String>| -> Vec<String> { v.iter().map(|a| interpolate(a, host)).collect() };
    let argv = interp(
        side.entrypoint
            .as_ref()
            .map(StrOrList::to_vec)
            .unwrap_or_else(|| vec![LITESTREAM.to_string()])
            .into_iter()
            .chain(
                side.command
                    .as_ref()
                    .map(StrOrList::to_vec)
                    .unwrap_or_else(|| vec!["replicate".to_string()]),
            )
            .collect(),
    );
    let test = side.healthcheck.as_ref().unwrap().test.clone();
    let healthcheck = interp(match test {
        StrOrList::Str(s) => vec!["/bin/sh".into(), "-c".into(), s],
        StrOrList::List(l) if l.first().map(String::as_str) == Some("CMD-SHELL") => {
            vec!["/bin/sh".into(), "-c".into(), l[1..].join(" ")]
        }
        StrOrList::List(l) if l.first().map(String::as_str) == Some("CMD") => l[1..].to_vec(),
        StrOrList::List(l) => panic!("{what}: unexpected healthcheck test {l:?}"),
    });
    match form {
        Form::Seed => {
            assert_eq!(
                argv[..2],
                ["/bin/sh".to_string(), "-c".to_string()],
                "{what}: the seed's entrypoint"
            );
            assert!(
                argv[2].starts_with("litestream replicate /data/app.db "),
                "{what}: {argv:?}"
            );
            assert!(
                healthcheck[2].starts_with(
                    "litestream restore -if-db-not-exists -if-replica-exists -o /data/app.db "
                ),
                "{what}: {healthcheck:?}"
            );
            assert!(config.is_none(), "{what}: the seed's form mounts no config");
        }
        Form::Config => {
            assert!(config.is_some(), "{what}: litestream.yml not mounted");
        }
    }
    Sidecar {
        mounts,
        env: cenv,
        argv,
        healthcheck,
        config,
        data,
        home,
        bin_dir,
        dir: tmp,
    }
}

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

/// Replace container paths (`/data/...`) that start a word (after whitespace, a quote or `=`,
/// or at the start) with their host paths; `/data/` inside a URL is left alone.
fn map_paths(text: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut out = String::new();
    let mut i = 0;
    'scan: while i < text.len() {
        let at_word = i == 0 || text[..i].ends_with([' ', '\t', '\n', '"', '\'', '=']);
        if at_word {
            for (dst, host) in mounts {
                if text[i..].starts_with(&format!("{dst}/")) {
                    out.push_str(&host.to_string_lossy());
                    i += dst.len();
                    continue 'scan;
                }
            }
        }
        let c = text[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
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

/// `docker stop`: SIGTERM, then (after docker's 10 s) SIGKILL. Err if SIGKILL was needed.
fn docker_stop(child: &mut Child) -> Result<(), String> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            eprintln!("sidecar stopped: {st}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("the sidecar did not exit within 10 s of SIGTERM (docker would SIGKILL it)".into())
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Rows of `t` as (id, v); empty if the table or file is missing.
type Rows = Vec<(i64, Vec<u8>)>;

/// The app: create the database if needed and write `n` rows in small transactions.
fn app_writes(db: &Path, n: usize) {
    if !db.exists() {
        common::create_db(db);
    }
    for _ in 0..n / 25 {
        common::insert(db, 25, 300);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait (60 s at most) until the replica restores exactly `want`.
fn wait_replicated(sc: &Sidecar, want: &Rows, log: &Path) -> Result<(), String> {
    let scratch = sc.dir.path().join("probe.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let _ = fs::remove_file(&scratch);
        let out = sc.probe(&scratch);
        if out.status.success() && scratch.exists() {
            let got = common::all_rows(&scratch);
            if &got == want {
                return Ok(());
            }
            last = format!("replica restores {} rows, want {}", got.len(), want.len());
        } else {
            last = describe(&out);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!(
        "the replica did not reach the app's {} rows within 60 s ({last}); sidecar log:\n{}",
        want.len(),
        fs::read_to_string(log).unwrap_or_default()
    ))
}

/// Run the healthcheck as docker does until healthy (`retries: 3`); Err with its output.
fn until_healthy(sc: &Sidecar, logs: &mut String) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..3 {
        let out = sc.healthcheck();
        logs.push_str(&String::from_utf8_lossy(&out.stdout));
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            return Ok(());
        }
        last = describe(&out);
        std::thread::sleep(Duration::from_secs(2));
    }
    Err(format!("the healthcheck never passed:\n{last}"))
}

fn lose_volume(sc: &Sidecar) {
    fs::remove_dir_all(&sc.data).unwrap();
    fs::create_dir_all(&sc.data).unwrap();
}

// ------------------------------------------------------------------------------------------
// the drill
// ------------------------------------------------------------------------------------------

/// One `docker compose up` with the app writing `n` rows; returns the app's rows. Pushes
/// failures; panics only when going on makes no sense.
fn stack_up(
    sc: &Sidecar,
    n: usize,
    phase: &str,
    logs: &mut String,
    failures: &mut Vec<String>,
) -> Rows {
    let db = sc.data.join("app.db");
    let log = sc.dir.path().join(format!("sidecar-{phase}.log"));
    let mut child = sc.start(&log);
    std::thread::sleep(Duration::from_secs(1));
    if let Err(e) = until_healthy(sc, logs) {
        let _ = docker_stop(&mut child);
        panic!("{phase}: {e}");
    }
    app_writes(&db, n);
    let want = common::all_rows(&db);
    if let Err(e) = wait_replicated(sc, &want, &log) {
        failures.push(format!("{phase}: {e}"));
    }
    if sc.config.is_some() {
        check_metrics(sc, phase, failures);
    }
    if let Err(e) = docker_stop(&mut child) {
        failures.push(format!("{phase}: {e}"));
    }
    let text = fs::read_to_string(&log).unwrap_or_default();
    if sc.config.is_some() {
        check_json_log(&text, phase, failures);
    }
    logs.push_str(&text);
    want
}

fn check_metrics(sc: &Sidecar, phase: &str, failures: &mut Vec<String>) {
    let Some(addr) = sc.env.get("LITESTREAM_ADDR").filter(|a| !a.is_empty()) else {
        return failures.push(format!(
            "{phase}: no LITESTREAM_ADDR in the sidecar environment"
        ));
    };
    match http_get(addr, "/metrics") {
        Ok(b) if b.starts_with("HTTP/1.1 200") => {
            for name in [
                "litestream_db_size",
                "litestream_sync_count",
                "litestream_replica_lag_seconds",
            ] {
                if !b.contains(&format!("# TYPE {name} ")) {
                    failures.push(format!("{phase}: /metrics lacks {name}"));
                }
            }
        }
        other => failures.push(format!("{phase}: /metrics on {addr}: {other:?}")),
    }
    match http_get(addr, "/healthz") {
        Ok(h) if h.starts_with("HTTP/1.1 200") => {}
        other => failures.push(format!("{phase}: /healthz while replicating: {other:?}")),
    }
}

fn check_json_log(text: &str, phase: &str, failures: &mut Vec<String>) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Result<BTreeMap<String, serde::de::IgnoredAny>, _> =
            serde_saphyr::from_str(line);
        if !(line.starts_with("{\"time\":\"") && line.contains("\"msg\":") && parsed.is_ok()) {
            return failures.push(format!(
                "{phase}: sidecar log line is not a JSON record: {line}"
            ));
        }
    }
    if !text.contains("\"msg\":\"replicating to\"") {
        failures.push(format!("{phase}: sidecar log lacks \"replicating to\""));
    }
}

fn drill(backend: &str, form: Form) {
    let (host, secrets) = host_env(backend);
    let sc = sidecar(backend, form, &host);
    let db = sc.data.join("app.db");
    let mut failures: Vec<String> = Vec::new();
    let mut logs = String::new();

    // Phase 1: a new host. Empty volume, empty replica.
    let first = stack_up(&sc, 500, "phase 1", &mut logs, &mut failures);
    assert_eq!(first.len(), 500);

    // Phase 2: the volume is lost; the stack comes up again and the app writes more.
    lose_volume(&sc);
    let both = stack_up(&sc, 500, "phase 2", &mut logs, &mut failures);
    if both.len() != 1000 || both[..500] != first[..] {
        failures.push(format!(
            "phase 2: the healthcheck did not bring phase 1's rows back before the app wrote \
             (the app saw {} rows after writing 500 more)",
            both.len()
        ));
    }

    // Phase 3: the volume is lost again: every row of both phases comes back.
    lose_volume(&sc);
    let log = sc.dir.path().join("sidecar-phase-3.log");
    let mut child = sc.start(&log);
    std::thread::sleep(Duration::from_secs(1));
    match until_healthy(&sc, &mut logs) {
        Ok(()) if db.exists() => {
            let got = common::all_rows(&db);
            if got != both {
                failures.push(format!(
                    "phase 3: restored {} rows, the app had written {} (contents differ: {})",
                    got.len(),
                    both.len(),
                    got.len() == both.len()
                ));
            }
            let ic = common::integrity_check(&db);
            if ic != "ok" {
                failures.push(format!("phase 3: integrity_check: {ic}"));
            }
            // Healthy from then on, without touching the database.
            let before = fs::metadata(&db).unwrap().modified().unwrap();
            let again = sc.healthcheck();
            if !again.status.success() || fs::metadata(&db).unwrap().modified().unwrap() != before {
                failures.push(format!(
                    "healthcheck with the database present:\n{}",
                    describe(&again)
                ));
            }
        }
        Ok(()) => failures.push("phase 3: healthy, but /data/app.db was not restored".into()),
        Err(e) => failures.push(format!("phase 3: {e}")),
    }
    if let Err(e) = docker_stop(&mut child) {
        failures.push(format!("phase 3: {e}"));
    }
    logs.push_str(&fs::read_to_string(&log).unwrap_or_default());

    if backend == "sftp" {
        let store = sc.data.join(".app.db-litestream").join("known_hosts");
        if !store.exists() {
            failures.push(format!(
                "sftp: the host key was not remembered in {}",
                store.display()
            ));
        }
        if !logs.contains("trusting host key on first use") {
            failures.push("sftp: no first-use host key line in the logs".into());
        }
        if fs::read_dir(&sc.home).unwrap().count() != 0 {
            failures.push("sftp: something was written to HOME".into());
        }
    }
    for s in &secrets {
        if logs.contains(s.as_str()) {
            failures.push(format!("a credential appears in the logs:\n{logs}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{backend} {form:?}: {} problem(s):\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
}

#[test]
fn compose_s3_seed_drill() {
    drill("s3", Form::Seed);
}

#[test]
fn compose_s3_config_drill() {
    drill("s3", Form::Config);
}

#[test]
fn compose_abs_seed_drill() {
    drill("abs", Form::Seed);
}

#[test]
fn compose_abs_config_drill() {
    drill("abs", Form::Config);
}

#[test]
fn compose_sftp_seed_drill() {
    drill("sftp", Form::Seed);
}

#[test]
fn compose_sftp_config_drill() {
    drill("sftp", Form::Config);
}

#[test]
fn compose_gcs_seed_drill() {
    drill("gcs", Form::Seed);
}

#[test]
fn compose_gcs_config_drill() {
    drill("gcs", Form::Config);
}

/// Requests moto logged (werkzeug prints one line per request).
fn moto_requests(log: &Path) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" HTTP/1.1\" "))
        .count()
}

/// Connections the private sshd logged (VERBOSE: one "Connection from" per TCP connection).
fn sshd_connections(log: &Path) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Connection from"))
        .count()
}

/// The healthcheck runs every `interval` for the container's whole life: with the database on
/// the volume it returns at once (exit 0) without a single request to the replica. Counted on
/// a private moto's request log and a private sshd's connection log, after checking that a
/// healthcheck without the database does reach them (so the counters count).
#[test]
fn healthcheck_on_existing_database_makes_no_request() {
    let tmp = tempfile::tempdir().unwrap();
    let moto_log = tmp.path().join("moto.log");
    let moto = litestream_test_servers::Moto::start_logged(&moto_log);
    moto.create_bucket("hc-bucket");
    let sshd = litestream_test_servers::PrivateSshd::start();
    let cases = [("s3", moto_log.clone()), ("sftp", sshd.log())];
    for (backend, log) in cases {
        let (mut host, _) = host_env(backend);
        match backend {
            "s3" => {
                host.insert(
                    "AWS_S3_BUCKET".into(),
                    format!("hc-bucket.localhost:{}/{}", moto.port, unique("hc")),
                );
            }
            _ => {
                let dir = format!("{}/{}", env("TEST_SFTP_ROOT"), unique("hc"));
                host.insert("SFTP_PORT".into(), format!("{}{dir}", sshd.port));
            }
        }
        let sc = sidecar(backend, Form::Seed, &host);
        let count = || match backend {
            "s3" => moto_requests(&log),
            _ => sshd_connections(&log),
        };
        let before = count();
        let out = sc.healthcheck();
        assert!(out.status.success(), "{backend}: {}", describe(&out));
        let reached = count();
        assert!(
            reached > before,
            "{backend}: the counter saw no request from a healthcheck that needs one"
        );
        common::create_db(&sc.data.join("app.db"));
        for _ in 0..3 {
            let out = sc.healthcheck();
            assert!(out.status.success(), "{backend}: {}", describe(&out));
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("database already exists, skipping")
                    || String::from_utf8_lossy(&out.stderr)
                        .contains("database already exists, skipping"),
                "{backend}: {}",
                describe(&out)
            );
        }
        // Give a straggling request time to reach the log before counting.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            count(),
            reached,
            "{backend}: the healthcheck on an existing database made requests"
        );
    }
}

#[test]
fn interpolation_follows_compose() {
    let mut e = BTreeMap::new();
    e.insert("A".to_string(), "1".to_string());
    e.insert("E".to_string(), String::new());
    assert_eq!(interpolate("x${A}y$A", &e), "x1y1");
    assert_eq!(interpolate("${B:-d}|${E:-d}|${E-d}", &e), "d|d|");
    assert_eq!(interpolate("$$A", &e), "$A");
    let m = vec![("/data".to_string(), PathBuf::from("/v"))];
    assert_eq!(
        map_paths("x /data/a.db sftp://h:1/work/data/s path: \"/data/b\"", &m),
        "x /v/a.db sftp://h:1/work/data/s path: \"/v/b\""
    );
}

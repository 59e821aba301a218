//! Operator-facing output of our `litestream`: JSON logs (one line per documented event, no
//! credentials), `/metrics` (strictly parsed Prometheus text whose counters move under a
//! write load), `/healthz`, and the restore progress line (only on a terminal).
//!
//! Needs util-linux `script` for the pseudo-terminal; panics (never skips) without it.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use litestream_test_servers::free_port;

// ---------------------------------------------------------------------------------------
// A strict JSON parser (enough to check that each log line is exactly one JSON object).

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Json::Str(s)) => Some(s),
            _ => None,
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn parse_document(text: &str) -> Result<Json, String> {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        p.ws();
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing data at byte {}", p.i));
        }
        Ok(v)
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.i))
        }
    }
    fn lit(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("bad literal at byte {}", self.i))
        }
    }
    fn value(&mut self) -> Result<Json, String> {
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut kv = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(kv));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    if kv.iter().any(|(x, _): &(String, Json)| *x == k) {
                        return Err(format!("duplicate key {k:?}"));
                    }
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    let v = self.value()?;
                    kv.push((k, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(kv));
                        }
                        _ => return Err(format!("expected , or }} at byte {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value()?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("expected , or ] at byte {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.lit("true", Json::Bool(true)),
            Some(b'f') => self.lit("false", Json::Bool(false)),
            Some(b'n') => self.lit("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(format!("unexpected byte at {}", self.i)),
        }
    }
    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = |p: &mut Self| {
            let s = p.i;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.i += 1;
            }
            p.i - s
        };
        let int_start = self.i;
        let n = digits(self);
        if n == 0 || (n > 1 && self.s[int_start] == b'0') {
            return Err(format!("bad number at byte {start}"));
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(format!("bad fraction at byte {start}"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(format!("bad exponent at byte {start}"));
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
        Ok(Json::Num(text.parse().map_err(|e| format!("{e}"))?))
    }
    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err("unterminated string".into());
            };
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = self.peek().ok_or("unterminated escape")?;
                    self.i += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                            let hex = std::str::from_utf8(hex).map_err(|e| e.to_string())?;
                            let cp = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            self.i += 4;
                            let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                            let mut b = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                        }
                        _ => return Err(format!("bad escape at byte {}", self.i)),
                    }
                }
                c if c < 0x20 => return Err(format!("raw control byte in string at {}", self.i)),
                c => out.push(c),
            }
        }
    }
}

#[test]
fn json_parser_is_strict() {
    let ok =
        JsonParser::parse_document(r#"{"a":1,"b":[true,null,-2.5e3],"c":"x\"\u00e9"}"#).unwrap();
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
        assert!(JsonParser::parse_document(bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------
// A strict parser for the Prometheus text exposition format, version 0.0.4.

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Families by name: (type, samples).
type Exposition = BTreeMap<String, (String, Vec<Sample>)>;

fn is_metric_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_prom_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
            && !s.is_empty() =>
        {
            s.parse().map_err(|e| format!("bad value {s:?}: {e}"))
        }
        _ => Err(format!("bad value {s:?}")),
    }
}

/// Parse `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("sample without value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let consumed;
        loop {
            // label name
            let mut lname = String::new();
            match chars.peek() {
                Some((i, '}')) => {
                    consumed = i + 1;
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            while let Some(&(_, c)) = chars.peek() {
                if c == '=' {
                    break;
                }
                lname.push(c);
                chars.next();
            }
            if !is_label_name(&lname) {
                return Err(format!("bad label name {lname:?}"));
            }
            if chars.next().map(|x| x.1) != Some('=') || chars.next().map(|x| x.1) != Some('"') {
                return Err(format!("label {lname}: expected =\""));
            }
            let mut val = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => val.push('\\'),
                        Some((_, '"')) => val.push('"'),
                        Some((_, 'n')) => val.push('\n'),
                        other => return Err(format!("bad escape in label value: {other:?}")),
                    },
                    Some((_, '\n')) => return Err("raw newline in label value".into()),
                    Some((_, c)) => val.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            if labels.insert(lname.clone(), val).is_some() {
                return Err(format!("duplicate label {lname}"));
            }
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    consumed = i + 1;
                    break;
                }
                other => return Err(format!("expected , or }} after label, got {other:?}")),
            }
        }
        rest = &r[consumed..];
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected one space before the value")?;
    let mut parts = rest.split(' ');
    let value = parse_prom_value(parts.next().ok_or("missing value")?)?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing fields after timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parse a whole exposition; any deviation is an error naming the line.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("exposition does not end with a newline".into());
    }
    let mut fams: Exposition = BTreeMap::new();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<(String, Vec<(String, String)>)> = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let mut w = c.trim_start().splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("HELP"), Some(name), help) => {
                    if !is_metric_name(name) {
                        return Err(err("bad HELP name".into()));
                    }
                    if !helped.insert(name.to_string()) {
                        return Err(err("second HELP for the family".into()));
                    }
                    let help = help.unwrap_or("");
                    let mut it = help.chars();
                    while let Some(ch) = it.next() {
                        if ch == '\\' && !matches!(it.next(), Some('\\' | 'n')) {
                            return Err(err("bad escape in HELP".into()));
                        }
                    }
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_metric_name(name) {
                        return Err(err("bad TYPE name".into()));
                    }
                    if !matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(err(format!("bad type {kind:?}")));
                    }
                    if fams.contains_key(name) {
                        return Err(err("TYPE after samples or second TYPE".into()));
                    }
                    if let Some(prev) = current.replace(name.to_string()) {
                        closed.insert(prev);
                    }
                    fams.insert(name.to_string(), (kind.to_string(), Vec::new()));
                }
                (Some("TYPE"), _, _) => return Err(err("TYPE without a type".into())),
                _ => {} // a plain comment
            }
            continue;
        }
        let s = parse_sample(line).map_err(err)?;
        let family = match fams.get(&s.name) {
            Some((kind, _)) if kind == "counter" || kind == "gauge" || kind == "untyped" => {
                s.name.clone()
            }
            _ => {
                // histogram/summary children, or an untyped family.
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suf| s.name.strip_suffix(suf))
                    .filter(|b| {
                        fams.get(*b)
                            .is_some_and(|(k, _)| k == "histogram" || k == "summary")
                    })
                    .map(str::to_string);
                match base {
                    Some(b) => b,
                    None => {
                        fams.insert(s.name.clone(), ("untyped".into(), Vec::new()));
                        if let Some(prev) = current.replace(s.name.clone()) {
                            closed.insert(prev);
                        }
                        s.name.clone()
                    }
                }
            }
        };
        if closed.contains(&family) || current.as_deref() != Some(family.as_str()) {
            return Err(err("samples of a family are not contiguous".into()));
        }
        let key = (
            s.name.clone(),
            s.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        if !series.insert(key) {
            return Err(err("duplicate series".into()));
        }
        fams.get_mut(&family).unwrap().1.push(s);
    }
    for h in &helped {
        if !fams.contains_key(h) {
            return Err(format!("HELP for {h} without TYPE or samples"));
        }
    }
    Ok(fams)
}

#[test]
fn prometheus_parser_is_strict() {
    let good = "# HELP a_total A thing.\n# TYPE a_total counter\na_total{db=\"/x \\\"y\\\"\"} 3\n\
                # TYPE g gauge\ng 1.5e3 1700000000000\ng{k=\"v\"} NaN\n";
    let f = parse_exposition(good).unwrap();
    assert_eq!(f["a_total"].1[0].labels["db"], "/x \"y\"");
    assert_eq!(f["g"].1.len(), 2);
    for bad in [
        "a 1",                                                        // no trailing newline
        "a{b=\"c\"}  1\n",                                            // two spaces
        "a{b=c} 1\n",                                                 // unquoted label
        "a{b=\"c\",b=\"d\"} 1\n",                                     // duplicate label
        "a 1\na 2\n",                                                 // duplicate series
        "# TYPE a counter\na 1\n# TYPE a counter\n",                  // second TYPE
        "# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n", // not contiguous
        "# TYPE a widget\n",                                          // bad type
        "1a 1\n",                                                     // bad name
        "a one\n",                                                    // bad value
        "a{b=\"\\q\"} 1\n",                                           // bad escape
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?}");
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
        let v = JsonParser::parse_document(line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}\n{}", dump()));
        assert!(matches!(v, Json::Obj(_)), "not an object: {line}");
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
                matches!(e.get("sz"), Some(Json::Num(n)) if *n > 0.0),
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

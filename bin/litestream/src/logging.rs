//! Logging through `tracing`, formatted like Litestream v0.3.13's `log/slog` output.
//!
//! * Before a config file is loaded ([`init_default`]): Go's default `log` bridge format on
//!   **stderr**, `YYYY/MM/DD HH:MM:SS LEVEL msg key=value …`.
//! * Once a config is loaded ([`init`]): slog text (`time=… level=… msg=… key=value`) or,
//!   with `logging.type: json`, one JSON object per line (`{"time":…,"level":…,"msg":…,…}`),
//!   on **stdout** (stderr with `logging.stderr: true`); level by `logging.level`
//!   (`debug`, `info`, `warn`/`warning`, `error`, case-insensitive, anything else = info).
//! * `LITESTREAM_LOG` (an `EnvFilter` directive such as `debug,litestream_s3=trace`), when set,
//!   overrides the level and lets dependencies' events through (a debugging aid).
//! * Events of other crates (SDKs, HTTP, SSH) are shown only at `warn` and above.
//! * Times are UTC with millisecond precision (Litestream prints local time; containers run in
//!   UTC).
//!
//! # Secrets
//! Nothing in this project logs credentials: replica URLs are logged through
//! [`litestream_core::url::redact_url`] and configuration structs are never logged whole. As a
//! second line of defence this formatter replaces the value of any field whose name looks like
//! a credential (`password`, `secret`, `token`, `account-key`, `credential`, `authorization`,
//! `passphrase`, `private-key`) with `REDACTED`, and passes every string value that looks like
//! a URL with a password through `redact_url`.
//!
//! The subscriber is installed once per process; [`init`] may be called after
//! [`init_default`] and switches the format, destination and level in place (through a
//! `tracing_subscriber::reload` handle).
//!
//! Log lines on stderr share it with one transient status line (the restore progress,
//! [`draw_status_line`]): a log line erases it first, and its next update redraws it.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Result};
use litestream_core::config::LoggingConfig;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, Layered};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Go's default log bridge (before a config is loaded).
    GoLog,
    /// slog text handler.
    Text,
    /// slog JSON handler.
    Json,
}

impl Format {
    /// `logging.type`: `text` (or unset) or `json`, case-insensitive. Anything else is an
    /// error (Litestream v0.3.13 panics on it).
    fn from_config(log_type: Option<&str>) -> Result<Format> {
        match log_type.map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => {
                bail!("unknown logging type: {other:?} (expected \"text\" or \"json\")")
            }
        }
    }
}

/// The most verbose level shown, in order (`Error` shows the least).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// `logging.level` as Litestream parses it: `debug`, `info`, `warn`/`warning`, `error`
    /// (and our `trace`), case-insensitive; anything else, or unset, is info.
    fn from_config(level: Option<&str>) -> LogLevel {
        match level.map(str::to_ascii_lowercase).as_deref() {
            Some("debug") => LogLevel::Debug,
            Some("warn") | Some("warning") => LogLevel::Warn,
            Some("error") => LogLevel::Error,
            Some("trace") => LogLevel::Trace,
            _ => LogLevel::Info,
        }
    }

    /// The level of a `tracing` event.
    fn of(level: &Level) -> LogLevel {
        match *level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        }
    }
}

/// Known secret values (from the config and the environment): replaced by `REDACTED` in every
/// message and value, whoever logs it, so that `LITESTREAM_LOG` letting dependencies' events
/// through (SDK, HTTP, SSH debug output) cannot print them.
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Environment variables whose values are credentials.
const SECRET_ENV: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LITESTREAM_SECRET_ACCESS_KEY",
    "LITESTREAM_AZURE_ACCOUNT_KEY",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
];

/// Add secret values to redact from every log line (values shorter than 4 bytes are
/// ignored: replacing them would garble lines without protecting anything).
pub(crate) fn register_secrets(values: impl IntoIterator<Item = String>) {
    if let Ok(mut known) = SECRETS.write() {
        for v in values {
            if v.len() >= 4 && !known.contains(&v) {
                known.push(v);
            }
        }
        // Longest first, so that a secret containing another is replaced whole.
        known.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// `s` with every registered secret replaced by `REDACTED`.
fn redact_known(s: String) -> String {
    let Ok(known) = SECRETS.read() else {
        return s;
    };
    let mut out = s;
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "REDACTED");
        }
    }
    out
}

/// The handle that switches the installed layer's settings.
type Handle = reload::Handle<LitestreamLayer, Layered<Option<EnvFilter>, Registry>>;

/// Install the subscriber once: `LITESTREAM_LOG`'s filter (when set) under the Litestream
/// layer, which starts in the pre-config format. `None` when another subscriber was
/// installed first (unit tests), then settings changes do nothing.
fn handle() -> Option<&'static Handle> {
    static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            register_secrets(SECRET_ENV.iter().filter_map(|k| std::env::var(k).ok()));
            let env = std::env::var("LITESTREAM_LOG")
                .ok()
                .filter(|v| !v.is_empty())
                .and_then(|v| EnvFilter::try_new(v).ok());
            let (layer, handle) = reload::Layer::new(LitestreamLayer {
                env_override: env.is_some(),
                ..LitestreamLayer::PRE_CONFIG
            });
            let installed = tracing_subscriber::registry()
                .with(env)
                .with(layer)
                .try_init();
            installed.ok().map(|()| handle)
        })
        .as_ref()
}

/// Change the installed layer's settings (the reload handle rebuilds the callsite cache).
fn configure(change: impl FnOnce(&mut LitestreamLayer)) {
    if let Some(handle) = handle() {
        if let Err(e) = handle.modify(change) {
            eprintln!("cannot change the log settings: {e}");
        }
    }
}

/// Install the subscriber with the pre-config format: Go `log` style on stderr, level info.
pub(crate) fn init_default() {
    configure(|l| {
        l.format = Format::GoLog;
        l.to_stderr = true;
        l.level = LitestreamLayer::PRE_CONFIG.level;
    });
}

/// Keep stdout for the command's output (`ltx -json` stays parseable): every later log line
/// goes to stderr, whatever the config says.
pub(crate) fn keep_stdout_for_data() {
    configure(|l| {
        l.data_on_stdout = true;
        l.to_stderr = true;
    });
}

/// Switch to the configured format, destination and level (installs the subscriber if
/// needed). An unknown `logging.type` is an error (Litestream v0.3.13 panics on it).
pub(crate) fn init(cfg: &LoggingConfig) -> Result<()> {
    let format = Format::from_config(cfg.log_type.as_deref())?;
    let level = LogLevel::from_config(cfg.level.as_deref());
    configure(|l| {
        l.format = format;
        l.to_stderr = cfg.stderr || l.data_on_stdout;
        l.level = level;
    });
    Ok(())
}

/// The layer writing Litestream-formatted lines; its settings change through [`Handle`].
#[derive(Debug, Clone, Copy)]
struct LitestreamLayer {
    format: Format,
    /// Most verbose level of this project's events; dependencies' events are shown at
    /// `warn` and above.
    level: LogLevel,
    to_stderr: bool,
    /// Set by commands whose stdout is their data: logs stay on stderr.
    data_on_stdout: bool,
    /// `LITESTREAM_LOG` is set: its filter decides, the level check is bypassed.
    env_override: bool,
}

impl LitestreamLayer {
    const PRE_CONFIG: LitestreamLayer = LitestreamLayer {
        format: Format::GoLog,
        level: LogLevel::Info,
        to_stderr: true,
        data_on_stdout: false,
        env_override: false,
    };

    fn shows(&self, meta: &Metadata<'_>) -> bool {
        if self.env_override {
            return true;
        }
        let mut max = self.level;
        if !meta.target().starts_with("litestream") {
            max = max.min(LogLevel::Warn);
        }
        LogLevel::of(meta.level()) <= max
    }
}

impl<S: Subscriber> Layer<S> for LitestreamLayer {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.shows(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.shows(meta)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !self.shows(event.metadata()) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = redact_known(format_line(
            self.format,
            time::OffsetDateTime::now_utc(),
            event.metadata().level(),
            &fields,
        ));
        if self.to_stderr {
            write_stderr(line.as_bytes());
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    }
}

// ------------------------------------------------------------------------------------------
// stderr and its status line
// ------------------------------------------------------------------------------------------

/// The escape sequence that erases the status line (carriage return, erase line).
const CLEAR_LINE: &str = "\r\x1b[2K";

/// True while a status line is on stderr without its newline; held while writing to stderr.
static STATUS_LINE: Mutex<bool> = Mutex::new(false);

fn status_line_lock() -> std::sync::MutexGuard<'static, bool> {
    STATUS_LINE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Write a log line to stderr, erasing the status line first (its next update redraws it).
fn write_stderr(line: &[u8]) {
    let active = status_line_lock();
    let mut err = std::io::stderr().lock();
    if *active {
        let _ = err.write_all(CLEAR_LINE.as_bytes());
    }
    let _ = err.write_all(line);
}

/// Draw `text` as the transient status line on stderr (e.g. the restore progress), replacing
/// the previous one; `last` ends it with a newline so that it stays on screen.
pub(crate) fn draw_status_line(text: &str, last: bool) {
    let mut active = status_line_lock();
    let mut err = std::io::stderr().lock();
    let newline = if last { "\n" } else { "" };
    let _ = write!(err, "{CLEAR_LINE}{text}{newline}");
    let _ = err.flush();
    *active = !last;
}

/// Leave the status line where it is and move to the next line (nothing if none is drawn).
pub(crate) fn end_status_line() {
    let mut active = status_line_lock();
    if *active {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"\n");
        let _ = err.flush();
    }
    *active = false;
}

/// A field value, keeping numbers and booleans typed for JSON.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// The message and key/value fields of one event.
#[derive(Debug, Default)]
struct Fields {
    msg: String,
    kv: Vec<(String, Value)>,
}

/// True if a field of this name must never be printed.
fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace(['-', '.'], "_");
    [
        "password",
        "secret",
        "token",
        "account_key",
        "credential",
        "authorization",
        "passphrase",
        "private_key",
        "identities",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// Redact what looks like a secret inside a free-form string value (URLs with passwords).
pub(crate) fn redact_value(s: &str) -> String {
    if !(s.contains("://") && s.contains('@')) {
        return s.to_string();
    }
    s.split(' ')
        .map(|w| {
            if w.contains("://") && w.contains('@') {
                litestream_core::url::redact_url(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Fields {
    fn push(&mut self, field: &Field, v: Value) {
        let name = field.name();
        if name == "message" {
            self.msg = match v {
                Value::Str(s) => redact_known(redact_value(&s)),
                other => value_text(&other),
            };
            return;
        }
        if name.starts_with("log.") {
            return; // tracing-log bookkeeping (target, module path, file, line)
        }
        let v = if is_secret_name(name) {
            Value::Str("REDACTED".into())
        } else {
            match v {
                Value::Str(s) => Value::Str(redact_known(redact_value(&s))),
                other => other,
            }
        };
        self.kv.push((name.replace('_', "-"), v));
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Value::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::Str(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, Value::Str(value.to_string()));
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::I64(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F64(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        // slog has no trace level; Litestream never logs below debug.
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// slog's rule: quote a text value when it is empty or has spaces, `=`, `"` or control
/// characters.
fn text_value(s: &str) -> String {
    let needs = s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c == '=' || c == '"' || c.is_control());
    if !needs {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Append `s` as a JSON string (escaped by serde_json).
fn json_string(out: &mut String, s: &str) {
    // Serialising a string cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn json_value(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => json_string(out, s),
        Value::I64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::U64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::F64(n) if n.is_finite() => {
            let _ = write!(out, "{n}");
        }
        Value::F64(n) => json_string(out, &n.to_string()),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
    }
}

const RFC3339_MILLIS: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);
const GO_LOG_TIME: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]/[month]/[day] [hour]:[minute]:[second]");

/// Format one event as a full line (with the trailing newline).
fn format_line(format: Format, now: time::OffsetDateTime, level: &Level, f: &Fields) -> String {
    let mut out = String::with_capacity(128);
    match format {
        Format::GoLog => {
            let _ = write!(
                out,
                "{} {} {}",
                now.format(GO_LOG_TIME).unwrap_or_default(),
                level_name(level),
                f.msg
            );
            for (k, v) in &f.kv {
                let _ = write!(out, " {k}={}", text_value(&value_text(v)));
            }
        }
        Format::Text => {
            let _ = write!(
                out,
                "time={} level={} msg={}",
                now.format(RFC3339_MILLIS).unwrap_or_default(),
                level_name(level),
                text_value(&f.msg)
            );
            for (k, v) in &f.kv {
                let _ = write!(out, " {k}={}", text_value(&value_text(v)));
            }
        }
        Format::Json => {
            out.push_str("{\"time\":");
            json_string(&mut out, &now.format(RFC3339_MILLIS).unwrap_or_default());
            out.push_str(",\"level\":");
            json_string(&mut out, level_name(level));
            out.push_str(",\"msg\":");
            json_string(&mut out, &f.msg);
            for (k, v) in &f.kv {
                out.push(',');
                json_string(&mut out, k);
                out.push(':');
                json_value(&mut out, v);
            }
            out.push('}');
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(msg: &str, kv: &[(&str, Value)]) -> Fields {
        Fields {
            msg: msg.into(),
            kv: kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    fn t0() -> time::OffsetDateTime {
        time::macros::datetime!(2024-05-01 12:00:00.123 UTC)
    }

    #[test]
    fn text_format_is_slog_like() {
        let f = fields(
            "initialized db",
            &[
                ("path", Value::Str("/data/app.db".into())),
                ("n", Value::U64(3)),
                ("reason", Value::Str("no generation exists".into())),
            ],
        );
        assert_eq!(
            format_line(Format::Text, t0(), &Level::INFO, &f),
            "time=2024-05-01T12:00:00.123Z level=INFO msg=\"initialized db\" path=/data/app.db \
             n=3 reason=\"no generation exists\"\n"
        );
        assert_eq!(
            format_line(Format::GoLog, t0(), &Level::WARN, &f),
            "2024/05/01 12:00:00 WARN initialized db path=/data/app.db n=3 \
             reason=\"no generation exists\"\n"
        );
    }

    #[test]
    fn json_format() {
        let f = fields(
            "write \"wal\" segment",
            &[
                ("db", Value::Str("/data/a\\b.db".into())),
                ("index", Value::U64(7)),
                ("ok", Value::Bool(true)),
            ],
        );
        let want = r#"{"time":"2024-05-01T12:00:00.123Z","level":"DEBUG","msg":"write \"wal\" segment","db":"/data/a\\b.db","index":7,"ok":true}"#;
        assert_eq!(
            format_line(Format::Json, t0(), &Level::DEBUG, &f),
            format!("{want}\n")
        );
    }

    #[test]
    fn levels_parse_like_litestream() {
        let parse = LogLevel::from_config;
        assert_eq!(parse(Some("DEBUG")), LogLevel::Debug);
        assert_eq!(parse(Some("Warning")), LogLevel::Warn);
        assert_eq!(parse(Some("warn")), LogLevel::Warn);
        assert_eq!(parse(Some("error")), LogLevel::Error);
        assert_eq!(parse(Some("bogus")), LogLevel::Info);
        assert_eq!(parse(None), LogLevel::Info);
        assert!(LogLevel::Error < LogLevel::Warn && LogLevel::Debug < LogLevel::Trace);
    }

    #[test]
    fn formats_parse_like_litestream() {
        assert_eq!(Format::from_config(None).expect("unset"), Format::Text);
        assert_eq!(Format::from_config(Some("")).expect("empty"), Format::Text);
        assert_eq!(
            Format::from_config(Some("JSON")).expect("json"),
            Format::Json
        );
        let e = Format::from_config(Some("xml"))
            .expect_err("xml")
            .to_string();
        assert!(e.contains("unknown logging type: \"xml\""), "{e}");
    }

    #[test]
    fn registered_secrets_are_redacted_from_any_event() {
        register_secrets(["sk-9f8e7d6c5b4a".to_string()]);
        let f = fields(
            "dependency said sk-9f8e7d6c5b4a in its debug output",
            &[("request", Value::Str("auth=sk-9f8e7d6c5b4a;".into()))],
        );
        let line = redact_known(format_line(Format::Text, t0(), &Level::DEBUG, &f));
        assert!(!line.contains("sk-9f8e7d6c5b4a"), "{line}");
        assert!(line.contains("REDACTED"), "{line}");
    }

    #[test]
    fn secrets_are_redacted() {
        assert!(is_secret_name("password"));
        assert!(is_secret_name("secret_access_key"));
        assert!(is_secret_name("account-key"));
        assert!(!is_secret_name("path"));
        assert!(!is_secret_name("key-path"));
        let v = redact_value("replicating to sftp://u:hunter2@host:22/x now");
        assert!(!v.contains("hunter2"), "{v}");
        assert!(v.contains("sftp://u:xxxxx@host:22/x"), "{v}");
    }

    #[test]
    fn unknown_type_is_an_error() {
        let cfg = LoggingConfig {
            log_type: Some("xml".into()),
            ..Default::default()
        };
        assert!(init(&cfg).is_err());
    }

    #[test]
    fn settings_switch_through_the_reload_handle() {
        let current = || {
            handle()
                .expect("installed")
                .with_current(|l| *l)
                .expect("layer")
        };
        let debug_shown = || tracing::enabled!(target: "litestream::test", Level::DEBUG);
        let dependency_info_shown = || tracing::enabled!(target: "hyper::test", Level::INFO);
        init_default();
        assert_eq!(current().format, Format::GoLog);
        assert!(current().to_stderr && !debug_shown() && !dependency_info_shown());
        let cfg = LoggingConfig {
            log_type: Some("JSON".into()),
            level: Some("debug".into()),
            ..Default::default()
        };
        init(&cfg).expect("json");
        let l = current();
        assert_eq!(
            (l.format, l.level, l.to_stderr),
            (Format::Json, LogLevel::Debug, false)
        );
        assert!(debug_shown() && !dependency_info_shown());
        keep_stdout_for_data();
        init(&cfg).expect("json again");
        assert!(
            current().to_stderr,
            "data on stdout keeps the logs on stderr"
        );
        init_default();
        assert!(!debug_shown());
    }

    #[test]
    fn json_strings_are_escaped_by_serde_json() {
        let mut out = String::new();
        json_string(&mut out, "tab\tbell\u{7}quote\"");
        assert_eq!(out, "\"tab\\tbell\\u0007quote\\\"\"");
        let back: String = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(back, "tab\tbell\u{7}quote\"");
    }
}

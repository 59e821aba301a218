//! The command-line flag parser of the `litestream` binary (`bin/litestream/src/flags.rs`,
//! compiled here as a module) on arbitrary argument vectors, non-UTF-8 included, then every
//! flag value through the parsers the commands apply to it (hex index, RFC 3339 time, TXID,
//! generation, parallelism, Go duration, replica URL).
//!
//! Input: arguments separated by NUL bytes; the first is the command, whose flag set (the
//! same names and kinds as `bin/litestream/src/cmd/*.rs`) parses the rest.
#![no_main]

#[path = "../../bin/litestream/src/flags.rs"]
#[allow(dead_code, unreachable_pub)]
mod flags;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use flags::{Flag, FlagError, FlagSet};
use libfuzzer_sys::fuzz_target;
use litestream_core::ltx::parse_txid;
use litestream_core::url::{is_url, parse_replica_url};
use litestream_core::{parse_go_duration, parse_rfc3339};
use litestream_core::{parse_index_hex, Generation};

const CONFIG: &[(&str, bool)] = &[("config", false), ("no-expand-env", true)];
const RESTORE: &[(&str, bool)] = &[
    ("o", false),
    ("replica", false),
    ("generation", false),
    ("index", false),
    ("txid", false),
    ("timestamp", false),
    ("parallelism", false),
    ("if-db-not-exists", true),
    ("if-replica-exists", true),
];
const LIST: &[(&str, bool)] = &[("replica", false), ("generation", false)];
const LTX: &[(&str, bool)] = &[("replica", false), ("level", false), ("json", true)];
const REPLICATE: &[(&str, bool)] = &[("exec", false)];

/// The flag set of `command` (restore's for an unknown name) and its flags with their kinds.
fn flag_set(command: &str) -> (FlagSet, Vec<(Flag, bool)>) {
    let (name, own): (&'static str, &[(&'static str, bool)]) = match command {
        "replicate" => ("replicate", REPLICATE),
        "generations" => ("generations", LIST),
        "snapshots" => ("snapshots", LIST),
        "wal" => ("wal", LIST),
        "ltx" => ("ltx", LTX),
        "databases" => ("databases", &[]),
        _ => ("restore", RESTORE),
    };
    let defs: Vec<(Flag, bool)> = CONFIG
        .iter()
        .chain(own)
        .map(|&(flag, is_bool)| {
            let f = if is_bool {
                Flag::bool(flag, "usage")
            } else {
                Flag::value(flag, "usage")
            };
            (f, is_bool)
        })
        .collect();
    let flags: Vec<Flag> = defs.iter().map(|(f, _)| *f).collect();
    let fs = FlagSet::new(name, "[arguments] DB_PATH|REPLICA_URL", &flags);
    (fs, defs)
}

/// Every parser a command applies to a flag value or positional argument; none may panic.
fn parse_value(v: &str) {
    let _ = parse_index_hex(v);
    let _ = parse_rfc3339(v);
    let _ = parse_txid(v);
    let _ = Generation::parse(v);
    let _ = v.parse::<i64>();
    let _ = parse_go_duration(v);
    if is_url(v) {
        if let Ok(cfg) = parse_replica_url(v) {
            let _ = cfg.resolve();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let raw: Vec<OsString> = data
        .split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let all_utf8 = data
        .split(|b| *b == 0)
        .all(|a| std::str::from_utf8(a).is_ok());
    let args = match flags::utf8_args(raw.into_iter()) {
        Ok(args) => {
            assert!(all_utf8, "a non-UTF-8 argument was accepted");
            args
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!all_utf8, "UTF-8 arguments refused: {msg}");
            assert!(msg.starts_with("argument ") && msg.contains("not valid UTF-8"));
            return;
        }
    };
    let Some((command, rest)) = args.split_first() else {
        return;
    };
    let (fs, defs) = flag_set(command);
    match fs.parse(rest) {
        Ok(p) => {
            // The positionals are what follows the flags, unchanged.
            assert!(p.args.len() <= rest.len());
            assert_eq!(p.args[..], rest[rest.len() - p.args.len()..]);
            for (flag, is_bool) in defs {
                if let Some(v) = p.value(&flag) {
                    if is_bool {
                        assert!(v == "true" || v == "false", "-{flag:?} stored {v:?}");
                    }
                    parse_value(v);
                }
            }
            for a in &p.args {
                parse_value(a);
            }
        }
        Err(FlagError::Help(usage)) => assert!(usage.starts_with("The ")),
        Err(FlagError::Usage(msg, usage)) => {
            assert!(!msg.is_empty());
            assert!(usage.starts_with("The "));
        }
    }
});

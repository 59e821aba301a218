//! `restore` makes its output durable (issue 13, item 6), watched from outside with strace:
//! every directory it creates has its parent fsynced, the output's directory is fsynced after
//! the restored file is linked into place, and a failing directory fsync fails the command
//! (exit 1, naming the directory) instead of being ignored. Both formats: v0.3 and LTX.
//!
//! Needs Debian's `strace` (scripts/test.sh installs it); without it the tests fail.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// The fixture replicas restored here: one per format.
const REPLICAS: [&str; 2] = ["v0.3.13/page-1024", "v0.5.15/basic"];

fn strace() -> Command {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "strace is required by these tests: apt-get install strace (scripts/test.sh does)"
    );
    let mut cmd = Command::new("strace");
    // -f: every thread; -qq -e signal=none: only the syscalls; -y: paths of descriptors.
    cmd.args(["-f", "-qq", "-y", "-e", "signal=none"]);
    cmd.env_remove("LITESTREAM_CONFIG");
    cmd
}

fn replica_url(fixture: &str) -> String {
    file_url(&repo_root().join("fixtures").join(fixture).join("replica"))
}

/// One traced system call: its name and the text of its arguments (fd paths included).
#[derive(Debug)]
struct Call {
    name: String,
    args: String,
}

/// The calls in an strace `-f -y -o` log (`PID name(args) = result` lines), in the order
/// they started; a call split by another thread's (`<unfinished ...>`, then
/// `<... name resumed>rest`) is joined back together.
fn parse_trace(log: &str) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    for line in log.lines() {
        let line = line.trim_start();
        let (pid, rest) = match line.split_once(' ') {
            Some((pid, rest)) if pid.bytes().all(|b| b.is_ascii_digit()) => (pid, rest.trim()),
            _ => ("", line),
        };
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let tail = resumed.split_once("resumed>").map_or("", |(_, t)| t);
            if let Some(i) = open.remove(pid) {
                calls[i].args.push_str(tail);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        let args = match args.strip_suffix("<unfinished ...>") {
            Some(started) => {
                open.insert(pid.to_string(), calls.len());
                started.trim_end().to_string()
            }
            None => args.to_string(),
        };
        calls.push(Call {
            name: name.trim().to_string(),
            args,
        });
    }
    calls
}

/// Index of the first fsync of the directory `dir` at or after call `from`.
fn dir_fsync_after(calls: &[Call], dir: &Path, from: usize) -> Option<usize> {
    let want = format!("<{}>", dir.display());
    calls
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, c)| c.name == "fsync" && c.args.contains(&want))
        .map(|(i, _)| i)
}

/// Index of the first successful call named one of `names` whose arguments mention `"path"`.
fn call_on(calls: &[Call], names: &[&str], path: &Path) -> Option<usize> {
    let quoted = format!("\"{}\"", path.display());
    calls.iter().position(|c| {
        names.contains(&c.name.as_str()) && c.args.contains(&quoted) && c.args.ends_with("= 0")
    })
}

#[test]
fn restore_fsyncs_new_ancestors_and_the_output_directory_after_linking_the_database() {
    for fixture in REPLICAS {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let (n1, n2): (PathBuf, PathBuf) = (root.join("new1"), root.join("new1/new2"));
        let out = n2.join("restored.db");
        let log = dir.path().join("strace.log");
        let mut cmd = strace();
        cmd.arg("-o").arg(&log).args([
            "-e",
            "trace=fsync,fdatasync,mkdir,mkdirat,link,linkat,rename,renameat,renameat2",
        ]);
        cmd.arg(our_bin())
            .args(["restore", "-o"])
            .arg(&out)
            .arg(replica_url(fixture));
        let res = run(&mut cmd);
        assert_exit(&res, 0, fixture);
        assert!(out.exists(), "{fixture}: no database at {}", out.display());
        let calls = parse_trace(&std::fs::read_to_string(&log).unwrap());

        // Each new directory: created, then its parent fsynced (so the entry survives a crash).
        for (new, parent) in [(&n1, &root), (&n2, &n1)] {
            let made = call_on(&calls, &["mkdir", "mkdirat"], new)
                .unwrap_or_else(|| panic!("{fixture}: no mkdir of {}: {calls:#?}", new.display()));
            assert!(
                dir_fsync_after(&calls, parent, made).is_some(),
                "{fixture}: {} created but its parent {} never fsynced after: {calls:#?}",
                new.display(),
                parent.display()
            );
        }
        // The database: linked (or renamed) into place, then its directory fsynced.
        let linked = call_on(
            &calls,
            &["link", "linkat", "rename", "renameat", "renameat2"],
            &out,
        )
        .unwrap_or_else(|| panic!("{fixture}: no link/rename to the output: {calls:#?}"));
        assert!(
            dir_fsync_after(&calls, &n2, linked).is_some(),
            "{fixture}: {} not fsynced after the database was linked into it: {calls:#?}",
            n2.display()
        );
    }
}

#[test]
fn a_failing_directory_fsync_fails_the_restore_naming_the_directory() {
    for fixture in REPLICAS {
        // The output's own directory (exists already): its fsync after the link fails.
        let dir = tempfile::tempdir().unwrap();
        let outdir = dir.path().join("out");
        std::fs::create_dir(&outdir).unwrap();
        let out = outdir.join("restored.db");
        let mut cmd = strace();
        cmd.arg("-P")
            .arg(&outdir)
            .args(["-e", "trace=fsync", "-e", "inject=fsync:error=EIO"]);
        cmd.arg(our_bin())
            .args(["restore", "-o"])
            .arg(&out)
            .arg(replica_url(fixture));
        let res = run(&mut cmd);
        let text = output_text(&res);
        assert!(
            text.contains("(INJECTED)"),
            "{fixture}: the fsync of {} was not injected: {text}",
            outdir.display()
        );
        assert_exit(&res, 1, fixture);
        assert!(
            text.contains(&format!("{}: Input/output error", outdir.display())),
            "{fixture}: the error does not name {}: {text}",
            outdir.display()
        );
        assert_eq!(leftovers(&out), Vec::<String>::new(), "{fixture}");

        // A new directory's parent: the fsync fails before anything is written.
        let out = outdir.join("new/restored.db");
        let mut cmd = strace();
        cmd.arg("-P")
            .arg(&outdir)
            .args(["-e", "trace=fsync", "-e", "inject=fsync:error=EIO"]);
        cmd.arg(our_bin())
            .args(["restore", "-o"])
            .arg(&out)
            .arg(replica_url(fixture));
        let res = run(&mut cmd);
        let text = output_text(&res);
        assert_exit(&res, 1, fixture);
        assert!(
            text.contains(&format!("{}: Input/output error", outdir.display())),
            "{fixture}: the error does not name {}: {text}",
            outdir.display()
        );
        assert!(!out.exists(), "{fixture}: {} written", out.display());
    }
}

#[test]
fn trace_parser_joins_calls_split_by_other_threads() {
    let log = "12 mkdir(\"/a\", 0700) = 0\n\
               12 linkat(AT_FDCWD</x>, \"/a/t\", AT_FDCWD</x>, \"/a/d\", 0 <unfinished ...>\n\
               13 fsync(9</a/t>) = 0\n\
               12 <... linkat resumed>) = 0\n\
               12 fsync(9</a>) = 0\n";
    let calls = parse_trace(log);
    assert_eq!(calls.len(), 4, "{calls:#?}");
    let linked = call_on(&calls, &["linkat"], Path::new("/a/d")).expect("linkat");
    assert_eq!(linked, 1);
    assert_eq!(dir_fsync_after(&calls, Path::new("/a"), linked), Some(3));
}

//! `litestream`: a drop-in, Litestream v0.3.13-compatible command line over litestream-core.
//!
//! `main` parses the command name, hands the rest to one module per command, and is the only
//! place errors are printed. Exit codes are Litestream's: 0 for success and the "skip" cases,
//! 1 for every error, usage error and `-h`.

mod cmd;
mod flags;
mod http;
mod logging;
mod progress;
mod registry;
mod timefmt;

use std::process::ExitCode;

const COMMANDS: &str = "litestream is a tool for replicating SQLite databases.

Usage:

\tlitestream <command> [arguments]

The commands are:

\tdatabases    list databases specified in config file
\tgenerations  list available generations for a database
\tltx          list LTX files (Litestream v0.5 replicas) for a database
\treplicate    runs a server to replicate databases
\trestore      recovers database backup from a replica
\tsnapshots    list available snapshots for a database
\tversion      prints the binary version
\twal          list available WAL files for a database
";

fn main() -> ExitCode {
    one_malloc_arena();
    copy_aws_env();
    let args: Vec<String> = match flags::utf8_args(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let Some((name, rest)) = args.split_first() else {
        print!("{COMMANDS}");
        return ExitCode::from(1);
    };
    if name == "help" || name.starts_with('-') {
        print!("{COMMANDS}");
        return ExitCode::from(1);
    }
    if name == "version" {
        return cmd::version::run();
    }
    let Some(name) = cmd::Name::from_arg(name) else {
        eprintln!("litestream {name}: unknown command");
        return ExitCode::from(1);
    };
    logging::init_default();
    http::raise_nofile_limit();
    exit_code(cmd::Command::parse(name, rest).and_then(run))
}

/// glibc gives each thread that allocates its own malloc arena (up to 8 per core), and an
/// arena keeps the memory freed into it. The sidecar's allocations are a few buffers of up to
/// 512 KiB per sync, made on whichever tokio or blocking thread runs the step, so under a
/// steady load every one of ~5 threads kept 2-3 MB of freed buffers: half the process's
/// anonymous memory (peak RSS 27 MB with per-thread arenas, 18 MB with one, same load). One
/// arena, set before any thread starts; `MALLOC_ARENA_MAX` in the environment still wins.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes an allocator setting; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Litestream copies these before dispatch, only when the AWS variables are unset.
fn copy_aws_env() {
    for (from, to) in [
        ("LITESTREAM_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("LITESTREAM_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ] {
        if std::env::var_os(to).is_none() {
            if let Some(v) = std::env::var_os(from) {
                std::env::set_var(to, v);
            }
        }
    }
}

/// Run a parsed command in a multi-threaded runtime.
fn run(command: cmd::Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start runtime: {e}"))?;
    let result = runtime.block_on(command.run());
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

/// The exit code of a command's result; errors are printed here, once: usage errors and
/// `-h` as Go's `flag` package prints them, others as an error log line.
fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    let err = match result {
        Ok(code) => return code,
        Err(err) => err,
    };
    if let Some(fe) = err.downcast_ref::<flags::FlagError>() {
        match fe {
            flags::FlagError::Help(usage) => eprint!("{usage}"),
            flags::FlagError::Usage(msg, usage) => eprint!("{msg}\n{usage}"),
        }
        return ExitCode::from(1);
    }
    tracing::error!(error = %error_chain(&err), "failed to run");
    ExitCode::from(1)
}

/// `err` and its causes joined by ": ", leaving out a cause whose text the message before it
/// already ends with (typed errors print their source and expose it too, and anyhow's `{:#}`
/// would show "No space left on device" twice).
fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn error_chain_names_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(28);
        let typed = litestream_core::Error::io("/data/app.db.1234.tmp", io);
        let err = anyhow::Error::new(typed).context("cannot restore /data/app.db");
        let text = error_chain(&err);
        assert_eq!(
            text,
            format!(
                "cannot restore /data/app.db: /data/app.db.1234.tmp: {}",
                std::io::Error::from_raw_os_error(28)
            )
        );
        let plain = anyhow::anyhow!("bucket missing").context("listing s3://b/db");
        assert_eq!(error_chain(&plain), "listing s3://b/db: bucket missing");
    }
}

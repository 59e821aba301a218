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

use std::process::ExitCode;

const COMMANDS: &str = "litestream is a tool for replicating SQLite databases.

Usage:

\tlitestream <command> [arguments]

The commands are:

\tdatabases    list databases specified in config file
\tgenerations  list available generations for a database
\treplicate    runs a server to replicate databases
\trestore      recovers database backup from a replica
\tsnapshots    list available snapshots for a database
\tversion      prints the binary version
\twal          list available WAL files for a database
";

fn main() -> ExitCode {
    // Litestream copies these before dispatch, only when the AWS variables are unset.
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        print!("{COMMANDS}");
        return ExitCode::from(1);
    };
    if command == "help" || command.starts_with('-') {
        print!("{COMMANDS}");
        return ExitCode::from(1);
    }
    let rest = &args[1..];
    if command == "version" {
        return cmd::version::run();
    }
    let known = [
        "databases",
        "generations",
        "replicate",
        "restore",
        "snapshots",
        "wal",
    ];
    if !known.contains(&command.as_str()) {
        eprintln!("litestream {command}: unknown command");
        return ExitCode::from(1);
    }
    logging::init_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match command.as_str() {
            "restore" => cmd::restore::run(rest).await,
            "generations" => cmd::list::generations(rest).await,
            "snapshots" => cmd::list::snapshots(rest).await,
            "wal" => cmd::list::wal(rest).await,
            "databases" => cmd::databases::run(rest).await,
            "replicate" => cmd::replicate::run(rest).await,
            _ => Ok(ExitCode::from(1)),
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(err) => {
            if let Some(fe) = err.downcast_ref::<flags::FlagError>() {
                match fe {
                    flags::FlagError::Help(usage) => eprint!("{usage}"),
                    flags::FlagError::Usage(msg, usage) => eprint!("{msg}\n{usage}"),
                }
                return ExitCode::from(1);
            }
            tracing::error!(error = %format!("{err:#}"), "failed to run");
            ExitCode::from(1)
        }
    }
}

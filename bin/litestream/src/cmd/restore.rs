//! `litestream restore`: every v0.3.13 flag with its semantics (spec section 6.6).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use litestream_core::ltx::detect::{
    find_any_target, restore_target, AnyRestoreOutcome, RestoreTarget,
};
use litestream_core::ltx::parse_txid;
use litestream_core::pos::{parse_index_hex, Generation};
use litestream_core::restore::{self, RestoreOptions};
use litestream_core::timefmt::parse_rfc3339;
use litestream_core::url::is_url;

use super::{db_clients, find_db, load_config, url_client, NamedClient};
use crate::flags::FlagSet;

fn flag_set() -> FlagSet {
    FlagSet::new("restore", "[arguments] DB_PATH|REPLICA_URL")
        .value("config", "Specifies the configuration file.")
        .bool(
            "no-expand-env",
            "Disables environment variable expansion in configuration file.",
        )
        .value("o", "Output path of the restored database.")
        .value("replica", "Restore from a specific replica.")
        .value("generation", "Restore from a specific generation.")
        .value(
            "index",
            "Restore up to a specific hex-encoded WAL index (inclusive).",
        )
        .value(
            "txid",
            "Restore LTX (v0.5) data up to a specific TXID (16 hex digits, inclusive).",
        )
        .value(
            "timestamp",
            "Restore to a specific point-in-time (RFC 3339).",
        )
        .value(
            "parallelism",
            "Determines the number of WAL files downloaded in parallel.",
        )
        .bool(
            "if-db-not-exists",
            "Returns exit code of 0 if the database already exists.",
        )
        .bool(
            "if-replica-exists",
            "Returns exit code of 0 if no backups found.",
        )
}

pub(crate) async fn run(args: &[String]) -> Result<ExitCode> {
    let fs = flag_set();
    let p = fs.parse(args)?;
    // SIGINT/SIGTERM (e.g. a healthcheck's `timeout`) stop the restore: dropping it removes
    // its temporary file, and the command exits 1.
    let mut interrupt = Interrupt::new()?;
    tokio::select! {
        r = restore_cmd(&p) => r,
        sig = interrupt.recv() => bail!("restore interrupted by {sig}; nothing was written"),
    }
}

/// SIGINT and SIGTERM, listened for from the start of the command.
struct Interrupt {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Interrupt {
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

async fn restore_cmd(p: &crate::flags::Parsed) -> Result<ExitCode> {
    let mut opts = RestoreOptions::new(PathBuf::new());
    if let Some(s) = p.get("index") {
        opts.index = Some(parse_index_hex(s)?);
    }
    if let Some(s) = p.get("timestamp").filter(|s| !s.is_empty()) {
        opts.timestamp = Some(parse_rfc3339(s)?);
    }
    if let Some(s) = p.get("parallelism") {
        let n: i64 = s
            .parse()
            .map_err(|_| anyhow!("invalid value {s:?} for flag -parallelism: parse error"))?;
        if n > restore::MAX_PARALLELISM as i64 {
            bail!(
                "invalid value {s:?} for flag -parallelism: at most {} downloads can run at once",
                restore::MAX_PARALLELISM
            );
        }
        opts.parallelism = n.max(1) as usize;
    }
    if let Some(g) = p.get("generation").filter(|g| !g.is_empty()) {
        opts.generation =
            Some(Generation::parse(g).ok_or_else(|| anyhow!("invalid generation name: {g:?}"))?);
    }
    let txid = match p.get("txid").filter(|s| !s.is_empty()) {
        Some(s) => Some(parse_txid(s).map_err(|_| {
            anyhow!("invalid value {s:?} for flag -txid: invalid txid format (need 16 hex digits)")
        })?)
        .filter(|t| *t != 0),
        None => None,
    };
    if opts.index.is_some() && opts.timestamp.is_some() {
        bail!("cannot specify index & timestamp to restore");
    }
    let target = match p.args.as_slice() {
        [] => bail!("database path or replica URL required"),
        [one] => one.clone(),
        _ => bail!("too many arguments"),
    };

    let clients: Vec<NamedClient>;
    if is_url(&target) {
        if p.get("config").is_some() {
            bail!("cannot specify a replica URL and the -config flag");
        }
        let out = p
            .get("o")
            .filter(|o| !o.is_empty())
            .ok_or_else(|| anyhow!("output path required"))?;
        opts.output = PathBuf::from(out);
        if p.is_set("if-db-not-exists") && opts.output.symlink_metadata().is_ok() {
            tracing::info!("database already exists, skipping");
            return Ok(ExitCode::SUCCESS);
        }
        clients = vec![url_client(&target, Some(out)).await?];
    } else {
        let cfg = load_config(p.get("config"), p.is_set("no-expand-env"))?;
        let db = find_db(&cfg, &target)?;
        opts.output = PathBuf::from(p.get("o").filter(|o| !o.is_empty()).unwrap_or(&db.path));
        if p.is_set("if-db-not-exists") && opts.output.symlink_metadata().is_ok() {
            tracing::info!("database already exists, skipping");
            return Ok(ExitCode::SUCCESS);
        }
        clients = db_clients(db, p.get("replica").filter(|r| !r.is_empty())).await?;
    }

    // Pick the replica whose best generation was updated last (ties: first in config order).
    let mut best: Option<(usize, RestoreTarget)> = None;
    for (i, nc) in clients.iter().enumerate() {
        let found = find_any_target(nc.client.as_ref(), &opts, txid)
            .await
            .with_context(|| format!("cannot list replica {:?}", nc.name))?;
        if let Some(l) = found {
            let newer = match &best {
                None => true,
                Some((_, b)) => l.updated_at() > b.updated_at(),
            };
            if newer {
                best = Some((i, l));
            }
        }
    }
    let Some((i, target)) = best else {
        if p.is_set("if-replica-exists") {
            tracing::info!("no matching backups found");
            return Ok(ExitCode::SUCCESS);
        }
        if txid.is_some() {
            // Litestream v0.5.17's words for a -txid no LTX file reaches.
            bail!("no matching backup files available");
        }
        bail!("no matching backups found");
    };
    let nc = &clients[i];
    let progress = crate::progress::Progress::for_stderr();
    opts.progress = progress.as_ref().map(|p| p.callback());
    let result = restore_target(nc.client.clone(), &target, &opts).await;
    if let Some(p) = &progress {
        p.finish();
    }
    if result.is_err() && p.is_set("if-db-not-exists") && opts.output.symlink_metadata().is_ok() {
        // A concurrent restore to the same path won the race: the database exists.
        tracing::info!("database already exists, skipping");
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = result.with_context(|| {
        format!(
            "cannot restore {} from replica {:?} {}",
            opts.output.display(),
            nc.name,
            target.describe()
        )
    })?;
    match outcome {
        AnyRestoreOutcome::V3(o) => tracing::info!(
            replica = %nc.name,
            generation = %o.generation,
            index = o.max_index,
            segments = o.segments,
            path = %opts.output.display(),
            "restored"
        ),
        AnyRestoreOutcome::Ltx(o) => tracing::info!(
            replica = %nc.name,
            txid = %litestream_core::ltx::format_txid(o.txid),
            files = o.files,
            path = %opts.output.display(),
            "restored"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

//! `litestream restore`: every v0.3.13 flag with its semantics (spec section 6.6).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use litestream_core::ltx::detect::{
    find_any_target, restore_target, AnyRestoreOutcome, RestoreTarget,
};
use litestream_core::ltx::parse_txid;
use litestream_core::parse_rfc3339;
use litestream_core::restore::{self, RestoreOptions};
use litestream_core::{parse_index_hex, Generation};

use super::{db_clients, find_db, url_client, ConfigArgs, NamedClient, Source};
use super::{CONFIG, NO_EXPAND_ENV};
use crate::flags::{Flag, FlagSet, Parsed};

const O: Flag = Flag::value("o", "Output path of the restored database.");
const REPLICA: Flag = Flag::value("replica", "Restore from a specific replica.");
const GENERATION: Flag = Flag::value("generation", "Restore from a specific generation.");
const INDEX: Flag = Flag::value(
    "index",
    "Restore up to a specific hex-encoded WAL index (inclusive).",
);
const TXID: Flag = Flag::value(
    "txid",
    "Restore LTX (v0.5) data up to a specific TXID (16 hex digits, inclusive).",
);
const TIMESTAMP: Flag = Flag::value(
    "timestamp",
    "Restore to a specific point-in-time (RFC 3339).",
);
const PARALLELISM: Flag = Flag::value(
    "parallelism",
    "Determines the number of WAL files downloaded in parallel.",
);
const IF_DB_NOT_EXISTS: Flag = Flag::bool(
    "if-db-not-exists",
    "Returns exit code of 0 if the database already exists.",
);
const IF_REPLICA_EXISTS: Flag = Flag::bool(
    "if-replica-exists",
    "Returns exit code of 0 if no backups found.",
);

/// Where a restore reads from and writes to.
#[derive(Debug, Clone)]
enum Target {
    /// A replica URL, restored to `-o`.
    Url { url: String, output: PathBuf },
    /// A database of the config file, restored to `-o` (or its own path) from its replica
    /// named by `-replica` (or the best of all).
    Db {
        path: String,
        config: ConfigArgs,
        output: Option<PathBuf>,
        replica: Option<String>,
    },
}

/// `restore`'s arguments, checked as v0.3.13 checks them and in its order.
#[derive(Debug)]
pub(crate) struct Args {
    target: Target,
    /// `-generation`, `-index`, `-timestamp` and `-parallelism`; the output is set once known.
    options: RestoreOptions,
    /// `-txid` (LTX data; 0 means unset, as in v0.5).
    txid: Option<u64>,
    if_db_not_exists: bool,
    if_replica_exists: bool,
}

impl Args {
    pub(crate) fn parse(args: &[String]) -> Result<Args> {
        let flags = [
            CONFIG,
            NO_EXPAND_ENV,
            O,
            REPLICA,
            GENERATION,
            INDEX,
            TXID,
            TIMESTAMP,
            PARALLELISM,
            IF_DB_NOT_EXISTS,
            IF_REPLICA_EXISTS,
        ];
        let p = FlagSet::new("restore", "[arguments] DB_PATH|REPLICA_URL", &flags).parse(args)?;
        let options = parse_options(&p)?;
        let txid = parse_txid_flag(&p)?;
        if options.index.is_some() && options.timestamp.is_some() {
            bail!("cannot specify index & timestamp to restore");
        }
        let output = p.non_empty(&O).map(PathBuf::from);
        let target = match Source::parse(&p, "database path or replica URL required")? {
            Source::Url(url) => Target::Url {
                url,
                output: output.ok_or_else(|| anyhow!("output path required"))?,
            },
            Source::Db { path, config } => Target::Db {
                path,
                config,
                output,
                replica: p.non_empty(&REPLICA).map(str::to_string),
            },
        };
        Ok(Args {
            target,
            options,
            txid,
            if_db_not_exists: p.is_set(&IF_DB_NOT_EXISTS),
            if_replica_exists: p.is_set(&IF_REPLICA_EXISTS),
        })
    }
}

/// `-index`, `-timestamp`, `-parallelism` and `-generation` as restore options.
fn parse_options(p: &Parsed) -> Result<RestoreOptions> {
    let mut opts = RestoreOptions::new(PathBuf::new());
    if let Some(s) = p.value(&INDEX) {
        opts.index = Some(parse_index_hex(s)?);
    }
    if let Some(s) = p.non_empty(&TIMESTAMP) {
        opts.timestamp = Some(parse_rfc3339(s)?);
    }
    if let Some(s) = p.value(&PARALLELISM) {
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
    if let Some(g) = p.non_empty(&GENERATION) {
        opts.generation =
            Some(Generation::parse(g).ok_or_else(|| anyhow!("invalid generation name: {g:?}"))?);
    }
    Ok(opts)
}

/// `-txid`: 16 hex digits; 0 (or empty) means none.
fn parse_txid_flag(p: &Parsed) -> Result<Option<u64>> {
    let Some(s) = p.non_empty(&TXID) else {
        return Ok(None);
    };
    let txid = parse_txid(s).map_err(|_| {
        anyhow!("invalid value {s:?} for flag -txid: invalid txid format (need 16 hex digits)")
    })?;
    Ok(Some(txid).filter(|t| *t != 0))
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    // SIGINT/SIGTERM (e.g. a healthcheck's `timeout`) stop the restore: dropping it removes
    // its temporary file, and the command exits 1.
    let mut interrupt = Interrupt::new()?;
    tokio::select! {
        r = restore_cmd(args) => r,
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

/// Run a parsed restore: open the replicas, pick the best, restore from it.
async fn restore_cmd(mut args: Args) -> Result<ExitCode> {
    let Some(clients) = open_target(&mut args).await? else {
        tracing::info!("database already exists, skipping");
        return Ok(ExitCode::SUCCESS);
    };
    let Some((nc, target)) = pick_replica(&clients, &args.options, args.txid).await? else {
        if args.if_replica_exists {
            tracing::info!("no matching backups found");
            return Ok(ExitCode::SUCCESS);
        }
        if args.txid.is_some() {
            // Litestream v0.5.17's words for a -txid no LTX file reaches.
            bail!("no matching backup files available");
        }
        bail!("no matching backups found");
    };
    let progress = crate::progress::Progress::for_stderr();
    args.options.progress = progress.as_ref().map(|p| p.callback());
    let result = restore_target(nc.client.clone(), &target, &args.options).await;
    if let Some(p) = &progress {
        p.finish();
    }
    let output = &args.options.output;
    if result.is_err() && args.if_db_not_exists && output.symlink_metadata().is_ok() {
        // A concurrent restore to the same path won the race: the database exists.
        tracing::info!("database already exists, skipping");
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = result.with_context(|| {
        format!(
            "cannot restore {} from replica {:?} {}",
            output.display(),
            nc.name,
            target.describe()
        )
    })?;
    log_outcome(nc, output, &outcome);
    Ok(ExitCode::SUCCESS)
}

/// Set the output path and build the replicas' clients; `None` when `-if-db-not-exists`
/// finds the output already there (nothing to do).
async fn open_target(args: &mut Args) -> Result<Option<Vec<NamedClient>>> {
    let (output, clients) = match &args.target {
        Target::Url { url, output } => {
            if args.if_db_not_exists && output.symlink_metadata().is_ok() {
                return Ok(None);
            }
            let db = output.to_string_lossy();
            (output.clone(), vec![url_client(url, Some(&db)).await?])
        }
        Target::Db {
            path,
            config,
            output,
            replica,
        } => {
            let cfg = config.load()?;
            let db = find_db(&cfg, path)?;
            let output = output.clone().unwrap_or_else(|| PathBuf::from(&db.path));
            if args.if_db_not_exists && output.symlink_metadata().is_ok() {
                return Ok(None);
            }
            (output, db_clients(db, replica.as_deref()).await?)
        }
    };
    args.options.output = output;
    Ok(Some(clients))
}

/// The replica whose best restore target was updated last (ties: the first in config order).
async fn pick_replica<'c>(
    clients: &'c [NamedClient],
    opts: &RestoreOptions,
    txid: Option<u64>,
) -> Result<Option<(&'c NamedClient, RestoreTarget)>> {
    let mut best: Option<(&NamedClient, RestoreTarget)> = None;
    for nc in clients {
        let found = find_any_target(nc.client.as_ref(), opts, txid)
            .await
            .with_context(|| format!("cannot list replica {:?}", nc.name))?;
        if let Some(l) = found {
            let newer = match &best {
                None => true,
                Some((_, b)) => l.updated_at() > b.updated_at(),
            };
            if newer {
                best = Some((nc, l));
            }
        }
    }
    Ok(best)
}

/// Log what was restored.
fn log_outcome(nc: &NamedClient, output: &Path, outcome: &AnyRestoreOutcome) {
    match outcome {
        AnyRestoreOutcome::V3(o) => tracing::info!(
            replica = %nc.name,
            generation = %o.generation,
            index = o.max_index,
            segments = o.segments,
            path = %output.display(),
            "restored"
        ),
        AnyRestoreOutcome::Ltx(o) => tracing::info!(
            replica = %nc.name,
            txid = %litestream_core::ltx::format_txid(o.txid),
            files = o.files,
            path = %output.display(),
            "restored"
        ),
    }
}

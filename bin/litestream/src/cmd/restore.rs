//! `litestream restore`: every v0.3.13 flag with its semantics (spec section 6.6).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use litestream_core::pos::{parse_index_hex, Generation};
use litestream_core::restore::{self, GenerationListing, RestoreOptions};
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
        opts.parallelism = n.max(1) as usize;
    }
    if let Some(g) = p.get("generation").filter(|g| !g.is_empty()) {
        opts.generation =
            Some(Generation::parse(g).ok_or_else(|| anyhow!("invalid generation name: {g:?}"))?);
    }
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
    let mut best: Option<(usize, GenerationListing)> = None;
    for (i, nc) in clients.iter().enumerate() {
        let found = restore::find_target(nc.client.as_ref(), &opts)
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
    let Some((i, listing)) = best else {
        if p.is_set("if-replica-exists") {
            tracing::info!("no matching backups found");
            return Ok(ExitCode::SUCCESS);
        }
        bail!("no matching backups found");
    };
    let nc = &clients[i];
    let progress = crate::progress::Progress::for_stderr();
    opts.progress = progress.as_ref().map(|p| p.callback());
    let result = restore::restore_listing(nc.client.clone(), &listing, &opts).await;
    if let Some(p) = &progress {
        p.finish();
    }
    let outcome = result.with_context(|| {
        format!(
            "cannot restore {} from replica {:?} generation {}",
            opts.output.display(),
            nc.name,
            listing.generation
        )
    })?;
    tracing::info!(
        replica = %nc.name,
        generation = %outcome.generation,
        index = outcome.max_index,
        segments = outcome.segments,
        path = %opts.output.display(),
        "restored"
    );
    Ok(ExitCode::SUCCESS)
}

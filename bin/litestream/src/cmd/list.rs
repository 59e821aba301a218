//! `litestream generations`, `snapshots` and `wal`: listings of Litestream v0.3 data with
//! v0.3.13's columns; each notes on stderr when the replica also holds v0.5 (LTX) data.

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use litestream_core::pos::Generation;
use litestream_core::restore::list_generations;
use litestream_core::timefmt::{go_duration, rfc3339_seconds};
use litestream_core::url::is_url;
use time::OffsetDateTime;

use super::{db_clients, find_db, load_config, tabwrite, url_client, NamedClient};
use crate::flags::{FlagSet, Parsed};

fn flag_set(command: &'static str, with_generation: bool) -> FlagSet {
    let fs = FlagSet::new(command, "[arguments] DB_PATH|REPLICA_URL")
        .value("config", "Specifies the configuration file.")
        .bool(
            "no-expand-env",
            "Disables environment variable expansion in configuration file.",
        )
        .value("replica", "Optional, filter by a specific replica.");
    if with_generation {
        fs.value("generation", "Optional, filter by a specific generation.")
    } else {
        fs
    }
}

/// Clients for the positional argument, and the reference time for lag (DB mtime or now).
pub(crate) async fn clients_for(
    p: &Parsed,
    missing: &str,
) -> Result<(Vec<NamedClient>, OffsetDateTime)> {
    let target = match p.args.as_slice() {
        [] => return Err(anyhow!("{missing}")),
        [one] => one.clone(),
        _ => return Err(anyhow!("too many arguments")),
    };
    if is_url(&target) {
        if p.get("config").is_some() {
            return Err(anyhow!("cannot specify a replica URL and the -config flag"));
        }
        return Ok((
            vec![url_client(&target, None).await?],
            OffsetDateTime::now_utc(),
        ));
    }
    let cfg = load_config(p.get("config"), p.is_set("no-expand-env"))?;
    let db = find_db(&cfg, &target)?;
    let mut updated = OffsetDateTime::UNIX_EPOCH;
    for path in [db.path.clone(), format!("{}-wal", db.path)] {
        if let Ok(m) = std::fs::metadata(&path).and_then(|m| m.modified()) {
            updated = updated.max(OffsetDateTime::from(m));
        }
    }
    let clients = db_clients(db, p.get("replica").filter(|r| !r.is_empty())).await?;
    Ok((clients, updated))
}

pub(crate) async fn generations(args: &[String]) -> Result<ExitCode> {
    let p = flag_set("generations", false).parse(args)?;
    let (clients, reference) = clients_for(&p, "database path or replica URL required").await?;
    let mut rows = vec![["name", "generation", "lag", "start", "end"]
        .map(String::from)
        .to_vec()];
    for nc in &clients {
        super::ltx::note_ltx_data(nc).await;
        let listings = match list_generations(nc.client.as_ref(), None).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(replica = %nc.name, error = %e, "cannot list generations");
                continue;
            }
        };
        for l in listings {
            let (Some(start), Some(end)) = (l.created_at(), l.updated_at()) else {
                continue;
            };
            let lag = (reference - end).whole_nanoseconds();
            rows.push(vec![
                nc.name.clone(),
                l.generation.to_string(),
                go_duration(truncate_lag(lag)),
                rfc3339_seconds(start),
                rfc3339_seconds(end),
            ]);
        }
    }
    print!("{}", tabwrite(&rows));
    Ok(ExitCode::SUCCESS)
}

/// Litestream truncates lag to seconds above 10s, to 100ms above 1s, else to ms/µs.
fn truncate_lag(n: i128) -> i128 {
    let a = n.abs();
    let unit = if a > 10_000_000_000 {
        1_000_000_000
    } else if a > 1_000_000_000 {
        100_000_000
    } else if a > 1_000_000 {
        1_000_000
    } else if a > 1_000 {
        1_000
    } else {
        1
    };
    n / unit * unit
}

pub(crate) async fn snapshots(args: &[String]) -> Result<ExitCode> {
    let p = flag_set("snapshots", false).parse(args)?;
    let (clients, _) = clients_for(&p, "database path required").await?;
    let mut rows = vec![["replica", "generation", "index", "size", "created"]
        .map(String::from)
        .to_vec()];
    for nc in &clients {
        super::ltx::note_ltx_data(nc).await;
        let gens = match nc.client.generations().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(replica = %nc.name, error = %e, "cannot list snapshots");
                continue;
            }
        };
        for g in gens {
            match nc.client.snapshots(&g).await {
                Ok(snaps) => {
                    for s in snaps {
                        rows.push(vec![
                            nc.name.clone(),
                            g.to_string(),
                            s.index.to_string(),
                            s.size.to_string(),
                            rfc3339_seconds(s.created_at),
                        ]);
                    }
                }
                Err(e) => tracing::error!(replica = %nc.name, error = %e, "cannot list snapshots"),
            }
        }
    }
    print!("{}", tabwrite(&rows));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn wal(args: &[String]) -> Result<ExitCode> {
    let p = flag_set("wal", true).parse(args)?;
    let only = match p.get("generation").filter(|g| !g.is_empty()) {
        Some(g) => {
            Some(Generation::parse(g).ok_or_else(|| anyhow!("invalid generation name: {g:?}"))?)
        }
        None => None,
    };
    let (clients, _) = clients_for(&p, "database path required").await?;
    let mut rows = vec![[
        "replica",
        "generation",
        "index",
        "offset",
        "size",
        "created",
    ]
    .map(String::from)
    .to_vec()];
    for nc in &clients {
        super::ltx::note_ltx_data(nc).await;
        let gens = match nc.client.generations().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(replica = %nc.name, error = %e, "cannot list wal segments");
                continue;
            }
        };
        for g in gens {
            if only.as_ref().is_some_and(|o| *o != g) {
                continue;
            }
            match nc.client.wal_segments(&g).await {
                Ok(segs) => {
                    for s in segs {
                        rows.push(vec![
                            nc.name.clone(),
                            g.to_string(),
                            s.index.to_string(),
                            s.offset.to_string(),
                            s.size.to_string(),
                            rfc3339_seconds(s.created_at),
                        ]);
                    }
                }
                Err(e) => {
                    tracing::error!(replica = %nc.name, error = %e, "cannot list wal segments")
                }
            }
        }
    }
    print!("{}", tabwrite(&rows));
    Ok(ExitCode::SUCCESS)
}

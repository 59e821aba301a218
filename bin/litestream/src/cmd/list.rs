//! `litestream generations`, `snapshots` and `wal`: listings of Litestream v0.3 data with
//! v0.3.13's columns; each notes on stderr when the replica also holds v0.5 (LTX) data.

use std::process::ExitCode;

use crate::timefmt::{go_duration, rfc3339_seconds};
use anyhow::{anyhow, Result};
use litestream_core::restore::list_generations;
use litestream_core::Generation;
use time::OffsetDateTime;

use super::{db_clients, find_db, tabwrite, url_client, NamedClient, Source};
use super::{CONFIG, NO_EXPAND_ENV};
use crate::flags::{Flag, FlagSet, Parsed};

/// `-replica` of the listing commands.
const REPLICA: Flag = Flag::value("replica", "Optional, filter by a specific replica.");
/// `-generation` of `wal`.
const GENERATION: Flag = Flag::value("generation", "Optional, filter by a specific generation.");

/// The arguments of `generations` and `snapshots` (and, with more, of `wal` and `ltx`).
#[derive(Debug, Clone)]
pub(crate) struct ListArgs {
    /// The replica URL or database path to list.
    source: Source,
    /// `-replica`: only this replica of the database (ignored with a URL).
    replica: Option<String>,
}

impl ListArgs {
    /// `generations`' arguments.
    pub(crate) fn parse_generations(args: &[String]) -> Result<ListArgs> {
        let p =
            FlagSet::new("generations", SYNOPSIS, &[CONFIG, NO_EXPAND_ENV, REPLICA]).parse(args)?;
        ListArgs::from_flags(&p, &REPLICA, "database path or replica URL required")
    }

    /// `snapshots`' arguments.
    pub(crate) fn parse_snapshots(args: &[String]) -> Result<ListArgs> {
        let p =
            FlagSet::new("snapshots", SYNOPSIS, &[CONFIG, NO_EXPAND_ENV, REPLICA]).parse(args)?;
        ListArgs::from_flags(&p, &REPLICA, "database path required")
    }

    /// The source and `replica` flag from parsed flags (`missing`: the error without a
    /// positional argument).
    pub(crate) fn from_flags(p: &Parsed, replica: &Flag, missing: &str) -> Result<ListArgs> {
        Ok(ListArgs {
            source: Source::parse(p, missing)?,
            replica: p.non_empty(replica).map(str::to_string),
        })
    }
}

/// `wal`'s arguments.
#[derive(Debug, Clone)]
pub(crate) struct WalArgs {
    list: ListArgs,
    /// `-generation`: only this generation.
    generation: Option<Generation>,
}

impl WalArgs {
    pub(crate) fn parse(args: &[String]) -> Result<WalArgs> {
        let flags = [CONFIG, NO_EXPAND_ENV, REPLICA, GENERATION];
        let p = FlagSet::new("wal", SYNOPSIS, &flags).parse(args)?;
        let generation = match p.non_empty(&GENERATION) {
            Some(g) => Some(
                Generation::parse(g).ok_or_else(|| anyhow!("invalid generation name: {g:?}"))?,
            ),
            None => None,
        };
        Ok(WalArgs {
            list: ListArgs::from_flags(&p, &REPLICA, "database path required")?,
            generation,
        })
    }
}

/// The synopsis of the listing commands' usage.
pub(crate) const SYNOPSIS: &str = "[arguments] DB_PATH|REPLICA_URL";

/// Clients for the listed source, and the reference time for lag (DB mtime or now).
pub(crate) async fn clients_for(args: &ListArgs) -> Result<(Vec<NamedClient>, OffsetDateTime)> {
    let (path, config) = match &args.source {
        Source::Url(url) => {
            return Ok((
                vec![url_client(url, None).await?],
                OffsetDateTime::now_utc(),
            ));
        }
        Source::Db { path, config } => (path, config),
    };
    let cfg = config.load()?;
    let db = find_db(&cfg, path)?;
    let mut updated = OffsetDateTime::UNIX_EPOCH;
    for path in [db.path.clone(), format!("{}-wal", db.path)] {
        if let Ok(m) = std::fs::metadata(&path).and_then(|m| m.modified()) {
            updated = updated.max(OffsetDateTime::from(m));
        }
    }
    let clients = db_clients(db, args.replica.as_deref()).await?;
    Ok((clients, updated))
}

pub(crate) async fn generations(args: ListArgs) -> Result<ExitCode> {
    let (clients, reference) = clients_for(&args).await?;
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

pub(crate) async fn snapshots(args: ListArgs) -> Result<ExitCode> {
    let (clients, _) = clients_for(&args).await?;
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

pub(crate) async fn wal(args: WalArgs) -> Result<ExitCode> {
    let only = args.generation;
    let (clients, _) = clients_for(&args.list).await?;
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

//! `litestream ltx`: the LTX files of a Litestream v0.5 replica, as v0.5.17's `ltx` command
//! lists them (same columns, order, time format and JSON), and the note the v0.3 listings
//! (`generations`, `snapshots`, `wal`) print when a replica also holds LTX data.

use std::process::ExitCode;

use crate::timefmt::rfc3339_seconds;
use anyhow::{anyhow, bail, Context, Result};
use litestream_core::ltx::plan::{apply_writer_timestamps, list_levels};
use litestream_core::ltx::{format_txid, list_ltx_files, LtxFileInfo, MAX_LEVEL};
use litestream_core::ReplicaClient;

use super::list::{clients_for, ListArgs, SYNOPSIS};
use super::{tabwrite, NamedClient, CONFIG, NO_EXPAND_ENV};
use crate::flags::{Flag, FlagSet};

/// `-replica` of `ltx`.
const REPLICA: Flag = Flag::value(
    "replica",
    "The replica to list, for a database with several (v0.3 configs).",
);
/// `-level`.
const LEVEL: Flag = Flag::value(
    "level",
    "Compaction level to list (0-9 or \"all\"). Defaults to 0.",
);
/// `-json`.
const JSON: Flag = Flag::bool("json", "Output raw JSON instead of human-readable text.");

/// `ltx`'s arguments.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    list: ListArgs,
    /// The levels `-level` selects.
    levels: Vec<u8>,
    /// `-json`.
    json: bool,
}

impl Args {
    pub(crate) fn parse(args: &[String]) -> Result<Args> {
        let flags = [CONFIG, NO_EXPAND_ENV, REPLICA, LEVEL, JSON];
        let p = FlagSet::new("ltx", SYNOPSIS, &flags).parse(args)?;
        let levels = parse_levels(p.value(&LEVEL))?;
        Ok(Args {
            list: ListArgs::from_flags(&p, &REPLICA, "database path or replica URL required")?,
            levels,
            json: p.is_set(&JSON),
        })
    }
}

/// The levels `-level` selects: one of 0..=9, or all of them for `all` (v0.5's rules).
fn parse_levels(value: Option<&str>) -> Result<Vec<u8>> {
    let Some(v) = value else {
        return Ok(vec![0]);
    };
    if v == "all" {
        return Ok((0..=MAX_LEVEL).collect());
    }
    let n: i64 = v.parse().map_err(|_| {
        anyhow!(
            "invalid value {v:?} for flag -level: invalid level: must be 0-{MAX_LEVEL} or \"all\""
        )
    })?;
    match u8::try_from(n) {
        Ok(level) if level <= MAX_LEVEL => Ok(vec![level]),
        _ => bail!("invalid value {v:?} for flag -level: level must be between 0 and {MAX_LEVEL}"),
    }
}

/// The LTX files of `level` with the times v0.5's `ltx` shows: the listed time (file and sftp
/// mtimes, s3 `LastModified`), except on abs, whose v0.5 listing carries each blob's
/// `litestreamtimestamp` metadata (our Azure listing does not, so it costs a HEAD per file).
async fn level_files(client: &dyn ReplicaClient, level: u8) -> Result<Vec<LtxFileInfo>> {
    let mut files = list_ltx_files(client, level)
        .await
        .with_context(|| format!("listing LTX level {level}"))?;
    if client.kind() == "abs" {
        apply_writer_timestamps(client, &mut files)
            .await
            .with_context(|| format!("reading LTX timestamps of level {level}"))?;
    }
    Ok(files)
}

/// One replica of the positional argument: the URL's, or the database's only replica (or the
/// one `-replica` names).
fn one_replica(clients: Vec<NamedClient>) -> Result<NamedClient> {
    let n = clients.len();
    let mut it = clients.into_iter();
    match (it.next(), n) {
        (None, _) => bail!("database has no replica"),
        (Some(c), 1) => Ok(c),
        (Some(_), _) => {
            bail!("database has {n} replicas; choose the one to list with -replica NAME")
        }
    }
}

/// One entry of v0.5's `ltx -json` output (Go's `LTXFileInfo` fields, in its order).
#[derive(serde::Serialize)]
struct JsonFile {
    level: u8,
    min_txid: String,
    max_txid: String,
    size: u64,
    timestamp: String,
}

/// Go's `json.MarshalIndent(files, "", "  ")` of v0.5's `LTXFileInfo` list (serde_json's
/// pretty printer indents the same way).
fn to_json(files: &[LtxFileInfo]) -> Result<String> {
    let items: Vec<JsonFile> = files
        .iter()
        .map(|f| JsonFile {
            level: f.level,
            min_txid: format_txid(f.min_txid),
            max_txid: format_txid(f.max_txid),
            size: f.size,
            timestamp: rfc3339_seconds(f.created_at),
        })
        .collect();
    serde_json::to_string_pretty(&items).context("cannot encode the LTX file list as JSON")
}

fn to_table(files: &[LtxFileInfo]) -> String {
    let mut rows = vec![["level", "min_txid", "max_txid", "size", "created"]
        .map(String::from)
        .to_vec()];
    for f in files {
        rows.push(vec![
            f.level.to_string(),
            format_txid(f.min_txid),
            format_txid(f.max_txid),
            f.size.to_string(),
            rfc3339_seconds(f.created_at),
        ]);
    }
    tabwrite(&rows)
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    crate::logging::keep_stdout_for_data();
    let (clients, _) = clients_for(&args.list).await?;
    let nc = one_replica(clients)?;
    let client = nc.client.as_ref();
    let mut files = Vec::new();
    for level in args.levels {
        files.extend(level_files(client, level).await?);
    }
    if args.json {
        println!("{}", to_json(&files)?);
    } else {
        print!("{}", to_table(&files));
    }
    if files.is_empty() {
        if let Ok(gens) = client.generations().await {
            if let Some(last) = gens.last() {
                eprintln!(
                    "note: replica {:?} holds no LTX files here but {} Litestream v0.3 generation(s) \
                     (newest {last}); list them with `litestream generations`",
                    nc.name,
                    gens.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Print a note on stderr when `nc` also holds Litestream v0.5 (LTX) data, for the v0.3
/// listings: they show v0.3 generations only, and a restore may pick the LTX data instead.
/// A listing error only skips the note (the command's own listing reports errors).
pub(crate) async fn note_ltx_data(nc: &NamedClient) {
    let levels = match list_levels(nc.client.as_ref(), false).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(replica = %nc.name, error = %e, "cannot list LTX levels");
            return;
        }
    };
    let files: Vec<&LtxFileInfo> = levels.iter().flatten().collect();
    if let Some(newest) = files
        .iter()
        .max_by_key(|f| (f.max_txid, std::cmp::Reverse(f.level)))
    {
        eprintln!(
            "note: replica {:?} also holds Litestream v0.5 (LTX) data: {} LTX file(s), newest \
             TXID {} (level {}); list them with `litestream ltx -level all`",
            nc.name,
            files.len(),
            format_txid(newest.max_txid),
            newest.level
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn file(level: u8, min: u64, max: u64, size: u64, secs: i64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size,
            created_at: OffsetDateTime::from_unix_timestamp(secs).expect("time"),
        }
    }

    #[test]
    fn levels_parse_like_v05() {
        assert_eq!(parse_levels(None).expect("default"), [0]);
        assert_eq!(parse_levels(Some("9")).expect("9"), [9]);
        assert_eq!(parse_levels(Some("all")).expect("all").len(), 10);
        let e = parse_levels(Some("x")).expect_err("x").to_string();
        assert!(e.contains("invalid level: must be 0-9 or \"all\""), "{e}");
        for bad in ["10", "-1", "300"] {
            let e = parse_levels(Some(bad)).expect_err(bad).to_string();
            assert!(e.contains("level must be between 0 and 9"), "{e}");
        }
    }

    #[test]
    fn json_matches_go_marshal_indent() {
        assert_eq!(to_json(&[]).expect("json"), "[]");
        let got =
            to_json(&[file(0, 1, 1, 26376, 1_796_000_000), file(9, 1, 0xc, 7, 0)]).expect("json");
        let want = "[\n  {\n    \"level\": 0,\n    \"min_txid\": \"0000000000000001\",\n    \
                    \"max_txid\": \"0000000000000001\",\n    \"size\": 26376,\n    \
                    \"timestamp\": \"2026-11-30T00:53:20Z\"\n  },\n  {\n    \"level\": 9,\n    \
                    \"min_txid\": \"0000000000000001\",\n    \"max_txid\": \"000000000000000c\",\n    \
                    \"size\": 7,\n    \"timestamp\": \"1970-01-01T00:00:00Z\"\n  }\n]";
        assert_eq!(got, want);
    }

    #[test]
    fn table_has_v05_columns() {
        let got = to_table(&[file(1, 3, 5, 80107, 0)]);
        assert_eq!(
            got,
            "level  min_txid          max_txid          size   created\n\
             1      0000000000000003  0000000000000005  80107  1970-01-01T00:00:00Z\n"
        );
    }
}

//! Format detection: a replica path may hold v0.3 generations, LTX levels, or both (the
//! `litestream/litestream` image moved from v0.3 to v0.5 under its users). Litestream
//! v0.5.17's rule decides: with a timestamp, the format whose best snapshot before it is
//! newer; without, the format with the most recent data (ties: LTX). `-generation`/`-index`
//! select v0.3 data and `-txid` LTX data; asking one format for the other's option is an error.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::replica_client::ReplicaClient;
use crate::restore::{self, GenerationListing, RestoreOptions, RestoreOutcome};

use super::keys::{format_txid, LtxFileInfo, SNAPSHOT_LEVEL};
use super::plan::{list_levels_under, plan_from_levels, LevelListings};
use super::restore::{restore_plan, LtxRestoreOutcome};

/// What a restore will read: a v0.3 generation or an LTX plan.
#[derive(Debug, Clone)]
pub enum RestoreTarget {
    /// A v0.3 generation (snapshots and WAL segments).
    V3(GenerationListing),
    /// LTX files, oldest first.
    Ltx(Vec<LtxFileInfo>),
}

impl RestoreTarget {
    /// Latest created-at time of the data the target restores (to compare replicas).
    pub fn updated_at(&self) -> Option<OffsetDateTime> {
        match self {
            RestoreTarget::V3(l) => l.updated_at(),
            RestoreTarget::Ltx(plan) => plan.iter().map(|f| f.created_at).max(),
        }
    }

    /// `v0.3 generation <id>` or `ltx txid <max>`, for messages.
    pub fn describe(&self) -> String {
        match self {
            RestoreTarget::V3(l) => format!("v0.3 generation {}", l.generation),
            RestoreTarget::Ltx(plan) => format!(
                "ltx txid {}",
                format_txid(plan.last().map_or(0, |f| f.max_txid))
            ),
        }
    }
}

/// What a restore did, per format.
#[derive(Debug, Clone)]
pub enum AnyRestoreOutcome {
    /// A v0.3 restore.
    V3(RestoreOutcome),
    /// An LTX restore.
    Ltx(LtxRestoreOutcome),
}

/// The replica's v0.3 and LTX listings, once.
struct Listings {
    v3: Vec<GenerationListing>,
    ltx: LevelListings,
}

impl Listings {
    fn v3_updated(&self) -> Option<OffsetDateTime> {
        self.v3.iter().filter_map(|l| l.updated_at()).max()
    }

    fn ltx_updated(&self) -> Option<OffsetDateTime> {
        self.ltx.iter().flatten().map(|f| f.created_at).max()
    }

    /// Upstream `findBestSnapshotV3`: the newest snapshot created at or before `ts`.
    fn v3_snapshot_before(&self, ts: OffsetDateTime) -> Option<OffsetDateTime> {
        self.v3
            .iter()
            .flat_map(|l| l.snapshots.iter().map(|s| s.created_at))
            .filter(|t| *t <= ts)
            .max()
    }

    /// Upstream `findBestLTXSnapshotForTimestamp`: the last L9 file created before `ts`.
    fn ltx_snapshot_before(&self, ts: OffsetDateTime) -> Option<OffsetDateTime> {
        self.ltx
            .get(usize::from(SNAPSHOT_LEVEL))?
            .iter()
            .rfind(|f| f.created_at < ts)
            .map(|f| f.created_at)
    }
}

/// Which format to restore from, and why (logged), or `None` when the replica is empty.
fn choose(l: &Listings, opts: &RestoreOptions, txid: Option<u64>) -> Result<Option<bool>> {
    let (v3, ltx) = (l.v3_updated(), l.ltx_updated());
    let v3_opts = opts.generation.is_some() || opts.index.is_some();
    if v3_opts {
        if v3.is_none() && ltx.is_some() {
            return Err(Error::InvalidArgument(
                "-generation and -index apply to v0.3 generations, but this replica holds only \
                 LTX (v0.5) data: use -txid or -timestamp"
                    .into(),
            ));
        }
        tracing::info!(
            format = "v0.3",
            reason = "-generation/-index given",
            "restore format"
        );
        return Ok(v3.map(|_| true));
    }
    if txid.is_some() {
        if ltx.is_none() && v3.is_some() {
            return Err(Error::InvalidArgument(
                "-txid applies to LTX (v0.5) data, but this replica holds only v0.3 \
                 generations: use -generation/-index or -timestamp"
                    .into(),
            ));
        }
        tracing::info!(format = "ltx", reason = "-txid given", "restore format");
        return Ok(ltx.map(|_| false));
    }
    let (use_v3, reason) = match (v3, ltx, opts.timestamp) {
        (None, None, _) => return Ok(None),
        (Some(_), None, _) => (true, "the replica holds no LTX (v0.5) data".to_string()),
        (None, Some(_), _) => (false, "the replica holds no v0.3 generations".to_string()),
        (Some(_), Some(_), Some(ts)) => {
            let (a, b) = (l.v3_snapshot_before(ts), l.ltx_snapshot_before(ts));
            let use_v3 = a.is_some_and(|a| b.is_none_or(|b| a > b));
            (
                use_v3,
                format!(
                    "both formats present; newest snapshot before the timestamp: v0.3 {a:?}, \
                     ltx {b:?}"
                ),
            )
        }
        (Some(a), Some(b), None) => (
            a > b,
            format!("both formats present; most recent data: v0.3 {a}, ltx {b}"),
        ),
    };
    tracing::info!(
        format = if use_v3 { "v0.3" } else { "ltx" },
        %reason,
        "restore format"
    );
    Ok(Some(use_v3))
}

/// The format of the data already on a replica path, by the rule of a latest restore (the
/// format with the most recent data; ties: LTX): `Some(true)` for v0.3 generations,
/// `Some(false)` for LTX files, `None` for an empty path. A replicator continues a path in
/// this format.
pub async fn existing_format_is_v3(client: &dyn ReplicaClient) -> Result<Option<bool>> {
    let listings = list_both(client, false).await?;
    let v3 = listings.v3.iter().filter_map(|l| l.updated_at()).max();
    let ltx = listings.ltx.iter().flatten().map(|f| f.created_at).max();
    Ok(match (v3, ltx) {
        (None, None) => None,
        (Some(_), None) => Some(true),
        (None, Some(_)) => Some(false),
        (Some(a), Some(b)) => Some(a > b),
    })
}

/// Both formats' listings of `client`: one listing of the root tells which of
/// `generations/` and the level directories exist (v0.3.13 and v0.5.17 each list only their
/// own format), then what exists is listed, both formats together.
async fn list_both(client: &dyn ReplicaClient, use_timestamps: bool) -> Result<Listings> {
    let root = client.list_subdirs("").await?;
    let has_v3 = root
        .as_ref()
        .is_none_or(|r| r.iter().any(|d| d == crate::layout::GENERATIONS_DIR));
    let (v3, ltx) = futures::try_join!(
        list_generations_if(client, has_v3),
        list_levels_under(client, use_timestamps, root.as_deref())
    )?;
    Ok(Listings { v3, ltx })
}

/// The v0.3 generations when `wanted`, else none.
async fn list_generations_if(
    client: &dyn ReplicaClient,
    wanted: bool,
) -> Result<Vec<GenerationListing>> {
    if !wanted {
        return Ok(Vec::new());
    }
    restore::list_generations(client, None).await
}

/// Find what to restore on `client` for `opts` (v0.3 options, timestamp) and `txid`, across
/// both formats; `None` when the replica holds nothing that matches.
pub async fn find_any_target(
    client: &dyn ReplicaClient,
    opts: &RestoreOptions,
    txid: Option<u64>,
) -> Result<Option<RestoreTarget>> {
    if txid.is_some() && (opts.generation.is_some() || opts.index.is_some()) {
        return Err(Error::InvalidArgument(
            "-txid (LTX data) cannot be combined with -generation/-index (v0.3 data)".into(),
        ));
    }
    if txid.is_some() && opts.timestamp.is_some() {
        return Err(Error::InvalidArgument(
            "cannot specify both TXID & timestamp to restore".into(),
        ));
    }
    let listings = list_both(client, opts.timestamp.is_some()).await?;
    let Some(use_v3) = choose(&listings, opts, txid)? else {
        return Ok(None);
    };
    if use_v3 {
        let mine: Vec<GenerationListing> = listings
            .v3
            .into_iter()
            .filter(|l| opts.generation.as_ref().is_none_or(|g| *g == l.generation))
            .collect();
        return Ok(restore::choose_generation(mine, opts.timestamp).map(RestoreTarget::V3));
    }
    match plan_from_levels(&listings.ltx, txid, opts.timestamp) {
        Ok(plan) => Ok(Some(RestoreTarget::Ltx(plan))),
        Err(Error::NoMatchingBackups) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Restore `target` (from [`find_any_target`]) into `opts.output`.
pub async fn restore_target(
    client: Arc<dyn ReplicaClient>,
    target: &RestoreTarget,
    opts: &RestoreOptions,
) -> Result<AnyRestoreOutcome> {
    match target {
        RestoreTarget::V3(listing) => restore::restore_listing(client, listing, opts)
            .await
            .map(AnyRestoreOutcome::V3),
        RestoreTarget::Ltx(plan) => restore_plan(client, plan, opts)
            .await
            .map(AnyRestoreOutcome::Ltx),
    }
}

/// [`find_any_target`] then [`restore_target`]; [`Error::NoMatchingBackups`] when there is
/// nothing to restore.
pub async fn restore_any(
    client: Arc<dyn ReplicaClient>,
    opts: &RestoreOptions,
    txid: Option<u64>,
) -> Result<AnyRestoreOutcome> {
    let target = find_any_target(client.as_ref(), opts, txid)
        .await?
        .ok_or(Error::NoMatchingBackups)?;
    restore_target(client, &target, opts).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pos::Generation;
    use crate::replica_client::{SnapshotInfo, WalSegmentInfo};

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).expect("time")
    }

    fn ltx(level: u8, min: u64, max: u64, secs: i64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 100,
            created_at: at(secs),
        }
    }

    /// v0.3: snapshot at 10, WAL up to `v3_last`; LTX: L9 at 15, L0 up to 30.
    fn listings(v3_last: i64) -> Listings {
        let g = Generation::parse("0123456789abcdef").expect("gen");
        let mut levels: LevelListings = vec![Vec::new(); 10];
        levels[9].push(ltx(9, 1, 1, 15));
        levels[0].push(ltx(0, 1, 1, 15));
        levels[0].push(ltx(0, 2, 2, 30));
        Listings {
            v3: vec![GenerationListing {
                generation: g.clone(),
                snapshots: vec![SnapshotInfo::new(&g, 0, 10, at(10))],
                wal: vec![WalSegmentInfo::new(&g, 0, 0, 10, at(v3_last))],
            }],
            ltx: levels,
        }
    }

    fn pick(l: &Listings, ts: Option<i64>) -> Option<bool> {
        let mut opts = RestoreOptions::new("/x.db");
        opts.timestamp = ts.map(at);
        choose(l, &opts, None).expect("choice")
    }

    #[test]
    fn newest_data_wins_and_ties_go_to_ltx() {
        assert_eq!(pick(&listings(20), None), Some(false));
        assert_eq!(pick(&listings(40), None), Some(true));
        assert_eq!(pick(&listings(30), None), Some(false));
    }

    #[test]
    fn with_a_timestamp_the_newer_snapshot_before_it_wins() {
        // Only v0.3 has a snapshot at or before 12 (the L9 is at 15).
        assert_eq!(pick(&listings(40), Some(12)), Some(true));
        // The L9 at 15 is newer than the v0.3 snapshot at 10.
        assert_eq!(pick(&listings(40), Some(16)), Some(false));
        // v0.3 snapshots count at the timestamp itself, LTX snapshots only before it.
        assert_eq!(pick(&listings(40), Some(15)), Some(true));
    }

    #[test]
    fn format_specific_options_on_the_other_format_are_errors() {
        let mut only_ltx = listings(20);
        only_ltx.v3.clear();
        let mut opts = RestoreOptions::new("/x.db");
        opts.index = Some(1);
        let err = choose(&only_ltx, &opts, None).expect_err("v0.3 option");
        assert!(err.to_string().contains("only LTX"), "{err}");
        let mut only_v3 = listings(20);
        only_v3.ltx = vec![Vec::new(); 10];
        let opts = RestoreOptions::new("/x.db");
        let err = choose(&only_v3, &opts, Some(2)).expect_err("-txid");
        assert!(err.to_string().contains("only v0.3"), "{err}");
        assert_eq!(choose(&only_v3, &opts, None).expect("v3"), Some(true));
        let empty = Listings {
            v3: Vec::new(),
            ltx: vec![Vec::new(); 10],
        };
        assert_eq!(choose(&empty, &opts, None).expect("none"), None);
    }
}

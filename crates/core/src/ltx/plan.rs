//! The restore plan of Litestream v0.5.17 (`CalcRestorePlan`): the newest usable L9
//! snapshot, then, over levels 8 down to 0, repeatedly the file that extends the contiguous
//! TXID range furthest (ties: lower min TXID, then higher level, then earlier timestamp).

use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::replica_client::ReplicaClient;

use super::keys::{format_txid, list_ltx_files, LtxFileInfo, SNAPSHOT_LEVEL};

/// Concurrent timestamp look-ups per level for `-timestamp` (levels are listed together, so
/// up to 80 in flight; Litestream uses 50).
const TIMESTAMP_LOOKUPS: usize = 8;

/// Listings of every level, index = level (0..=9), each sorted by name.
pub type LevelListings = Vec<Vec<LtxFileInfo>>;

/// List every level of `client`; with `use_timestamps`, each file's `created_at` is the
/// writer's timestamp where the backend keeps one ([`ReplicaClient::object_timestamp`]).
pub async fn list_levels(
    client: &dyn ReplicaClient,
    use_timestamps: bool,
) -> Result<LevelListings> {
    // The ten listings go out together: one round trip of latency instead of ten.
    let levels = (0..=SNAPSHOT_LEVEL).map(|level| list_level(client, level, use_timestamps));
    futures::future::try_join_all(levels).await
}

async fn list_level(
    client: &dyn ReplicaClient,
    level: u8,
    use_timestamps: bool,
) -> Result<Vec<LtxFileInfo>> {
    let mut files = list_ltx_files(client, level).await?;
    if use_timestamps {
        apply_writer_timestamps(client, &mut files).await?;
    }
    Ok(files)
}

/// Set each file's `created_at` to the writer's timestamp where the backend keeps one
/// ([`ReplicaClient::object_timestamp`], up to 8 look-ups in flight per call).
pub async fn apply_writer_timestamps(
    client: &dyn ReplicaClient,
    files: &mut [LtxFileInfo],
) -> Result<()> {
    let kind = client.kind();
    let stamps: Vec<Option<OffsetDateTime>> = futures::stream::iter(files.iter())
        .map(|f| async move { client.object_timestamp(&f.key(kind)).await })
        .buffered(TIMESTAMP_LOOKUPS)
        .try_collect()
        .await?;
    for (f, ts) in files.iter_mut().zip(stamps) {
        if let Some(ts) = ts {
            f.created_at = ts;
        }
    }
    Ok(())
}

/// True when `next` is a better pick than `curr` (upstream `restoreCandidateBetter`).
fn better(curr: &LtxFileInfo, next: &LtxFileInfo) -> bool {
    if next.max_txid != curr.max_txid {
        return next.max_txid > curr.max_txid;
    }
    if next.min_txid != curr.min_txid {
        return next.min_txid < curr.min_txid;
    }
    if next.level != curr.level {
        return next.level > curr.level;
    }
    next.created_at < curr.created_at
}

/// Whether a file may be used for the target.
fn fits(f: &LtxFileInfo, txid: Option<u64>, timestamp: Option<OffsetDateTime>) -> bool {
    txid.is_none_or(|t| f.max_txid <= t) && timestamp.is_none_or(|ts| f.created_at < ts)
}

/// One level's files in name order, as upstream's `restoreLevelCursor`.
struct Cursor<'a> {
    files: &'a [LtxFileInfo],
    next: usize,
    candidate: Option<&'a LtxFileInfo>,
}

impl<'a> Cursor<'a> {
    fn current(&self) -> Option<&'a LtxFileInfo> {
        self.files.get(self.next)
    }

    fn refresh(&mut self, max: u64, txid: Option<u64>, ts: Option<OffsetDateTime>) {
        if self.current().is_none() {
            return;
        }
        if self.candidate.is_some_and(|c| c.max_txid <= max) {
            self.candidate = None;
        }
        while let Some(info) = self.current() {
            if info.min_txid > max.saturating_add(1) {
                return;
            }
            self.next += 1;
            if info.max_txid <= max || !fits(info, txid, ts) {
                continue;
            }
            if self.candidate.is_none_or(|c| better(c, info)) {
                self.candidate = Some(info);
            }
        }
    }
}

/// The files to restore, oldest first, from `levels` (see [`list_levels`]).
///
/// `txid` and `timestamp` are exclusive. Errors: [`Error::NoMatchingBackups`] when nothing
/// fits ("transaction not available" upstream), and a corrupt-replica error when a plain
/// restore finds a gap in the TXID range.
pub fn plan_from_levels(
    levels: &LevelListings,
    txid: Option<u64>,
    timestamp: Option<OffsetDateTime>,
) -> Result<Vec<LtxFileInfo>> {
    if txid.is_some() && timestamp.is_some() {
        return Err(Error::InvalidArgument(
            "cannot specify both TXID & timestamp to restore".into(),
        ));
    }
    let empty = Vec::new();
    let level = |l: u8| levels.get(usize::from(l)).unwrap_or(&empty);
    let mut plan: Vec<LtxFileInfo> = Vec::new();
    if let Some(s) = level(SNAPSHOT_LEVEL)
        .iter()
        .rfind(|f| fits(f, txid, timestamp))
    {
        plan.push(s.clone());
    }
    let mut max = plan.last().map_or(0, |f| f.max_txid);
    if txid.is_some_and(|t| max >= t) {
        return Ok(plan);
    }
    let mut cursors: Vec<Cursor<'_>> = (0..SNAPSHOT_LEVEL)
        .rev()
        .map(|l| Cursor {
            files: level(l),
            next: 0,
            candidate: None,
        })
        .collect();
    loop {
        let mut pick: Option<usize> = None;
        for i in 0..cursors.len() {
            cursors[i].refresh(max, txid, timestamp);
            let Some(c) = cursors[i].candidate else {
                continue;
            };
            if pick.is_none_or(|p| cursors[p].candidate.is_some_and(|b| better(b, c))) {
                pick = Some(i);
            }
        }
        let Some(p) = pick else { break };
        let Some(c) = cursors[p].candidate.take() else {
            break;
        };
        if c.max_txid <= max {
            continue;
        }
        plan.push(c.clone());
        max = c.max_txid;
        if txid.is_some_and(|t| max >= t) {
            break;
        }
    }
    if !plan.is_empty() && txid.is_none() && timestamp.is_none() {
        for c in &cursors {
            if let Some(cur) = c.current() {
                if cur.min_txid > max.saturating_add(1) {
                    return Err(Error::corrupt(
                        "ltx replica",
                        format!(
                            "non-contiguous ltx files: have up to {} but next file starts at {}",
                            format_txid(max),
                            format_txid(cur.min_txid)
                        ),
                    ));
                }
            }
        }
    }
    if plan.is_empty() && txid.is_none() && timestamp.is_none() {
        // Files exist but none can start a restore: a broken replica, not a missing one.
        if let Some(first) = levels.iter().flatten().min_by_key(|f| f.min_txid) {
            return Err(Error::corrupt(
                "ltx replica",
                format!(
                    "no snapshot: no file starts at TXID 1 (the oldest starts at {})",
                    format_txid(first.min_txid)
                ),
            ));
        }
    }
    if plan.is_empty() || txid.is_some_and(|t| max < t) {
        return Err(Error::NoMatchingBackups);
    }
    Ok(plan)
}

/// List `client` and compute the plan for `txid` / `timestamp` (see [`plan_from_levels`]).
pub async fn calc_restore_plan(
    client: &dyn ReplicaClient,
    txid: Option<u64>,
    timestamp: Option<OffsetDateTime>,
) -> Result<Vec<LtxFileInfo>> {
    let levels = list_levels(client, timestamp.is_some()).await?;
    plan_from_levels(&levels, txid, timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: u8, min: u64, max: u64, secs: i64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 1000,
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).expect("t"),
        }
    }

    fn levels(files: &[LtxFileInfo]) -> LevelListings {
        let mut out: LevelListings = vec![Vec::new(); 10];
        for x in files {
            out[usize::from(x.level)].push(x.clone());
        }
        for l in &mut out {
            l.sort_by_key(|x| (x.min_txid, x.max_txid));
        }
        out
    }

    fn names(plan: &[LtxFileInfo]) -> Vec<(u8, u64, u64)> {
        plan.iter()
            .map(|x| (x.level, x.min_txid, x.max_txid))
            .collect()
    }

    #[test]
    fn spec_example_plan() {
        // The t1 plan of the spec: L9 1-1, L1 1-2, L1 3-5, L0 6-6.
        let l = levels(&[
            f(9, 1, 1, 0),
            f(1, 1, 2, 2),
            f(1, 3, 5, 5),
            f(0, 1, 1, 0),
            f(0, 2, 2, 2),
            f(0, 3, 3, 3),
            f(0, 4, 4, 4),
            f(0, 5, 5, 5),
            f(0, 6, 6, 6),
        ]);
        let p = plan_from_levels(&l, None, None).expect("plan");
        assert_eq!(names(&p), [(9, 1, 1), (1, 1, 2), (1, 3, 5), (0, 6, 6)]);
        // L1 1-2 ties with L0 2-2 on max TXID and wins on the lower min TXID.
        let p = plan_from_levels(&l, Some(4), None).expect("plan");
        assert_eq!(names(&p), [(9, 1, 1), (1, 1, 2), (0, 3, 3), (0, 4, 4)]);
        let ts = OffsetDateTime::from_unix_timestamp(1_700_000_000 + 4).expect("t");
        let p = plan_from_levels(&l, None, Some(ts)).expect("plan");
        assert_eq!(names(&p), [(9, 1, 1), (1, 1, 2), (0, 3, 3)]);
        assert!(matches!(
            plan_from_levels(&l, Some(7), None),
            Err(Error::NoMatchingBackups)
        ));
    }

    #[test]
    fn ties_prefer_lower_min_then_higher_level_then_earlier_time() {
        let l = levels(&[f(2, 1, 8, 9), f(1, 1, 8, 5), f(0, 2, 8, 1)]);
        assert_eq!(
            names(&plan_from_levels(&l, None, None).expect("p")),
            [(2, 1, 8)]
        );
        let l = levels(&[f(1, 1, 8, 9), f(1, 1, 8, 5)]);
        let p = plan_from_levels(&l, None, None).expect("p");
        assert_eq!(p[0].created_at, f(1, 1, 8, 5).created_at);
    }

    #[test]
    fn newest_fitting_snapshot_and_gaps() {
        let l = levels(&[
            f(9, 1, 5, 5),
            f(9, 1, 9, 9),
            f(0, 10, 10, 10),
            f(0, 12, 12, 12),
        ]);
        let err = plan_from_levels(&l, None, None).expect_err("gap");
        assert!(err.to_string().contains(
            "non-contiguous ltx files: have up to 000000000000000a but next file starts at 000000000000000c"
        ), "{err}");
        let p = plan_from_levels(&l, Some(7), None).expect_err("no file ends at 7");
        assert!(matches!(p, Error::NoMatchingBackups));
        let p = plan_from_levels(&l, Some(5), None).expect("p");
        assert_eq!(names(&p), [(9, 1, 5)]);
        assert!(matches!(
            plan_from_levels(&levels(&[]), None, None),
            Err(Error::NoMatchingBackups)
        ));
    }
}

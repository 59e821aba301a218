//! The restore plan: Litestream v0.5.17's `CalcRestorePlan` with one change of base.
//!
//! Upstream starts from the newest usable L9 snapshot, then, over levels 8 down to 0,
//! repeatedly takes the file that extends the contiguous TXID range furthest (ties: lower
//! min TXID, then higher level, then earlier timestamp). Here the base is the usable file
//! with min TXID 1 at *any* level that reaches furthest (ties: higher level, so the L9
//! snapshot wins a tie); the extension across levels is upstream's.
//!
//! Why that is the same database: every LTX file that starts at TXID 1 is a full snapshot.
//! v0.5 writes the L0 file of TXID 1 from the whole database (its first sync, `verify`
//! with position 0, snapshots), each later L0 file carries every page a transaction wrote
//! (pages the database grew by included), and a compaction of contiguous files keeps the
//! newest copy of every page up to the last input's commit size with the first input's min
//! TXID. So a level file from TXID 1 holds every page of the database at its max TXID, and
//! upstream's own plan already starts from such a file when no L9 snapshot fits. When a
//! level file from TXID 1 reaches past the L9 snapshot, upstream applies it on top of the
//! snapshot, overwriting every page the snapshot had: reading the snapshot is wasted bytes
//! (half of a typical restore). Both plans end at the same TXID (greedy furthest extension
//! from a later start reaches the same frontier, since upstream can pick the same base), so
//! the output is the same; the merge still checks that every page up to the commit size
//! comes from some file.

use std::cmp::Reverse;

use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::replica_client::ReplicaClient;

use super::keys::{format_txid, level_dir, list_ltx_files, LtxFileInfo, SNAPSHOT_LEVEL};

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
    list_levels_under(client, use_timestamps, None).await
}

/// [`list_levels`], given the sub-directories of the replica root when the caller already
/// listed them (`root`): levels whose directory does not exist are not listed. On s3 the
/// level directories are in the root (`0000/`…`0009/`), elsewhere under `ltx/` (one more
/// listing); a client that cannot list sub-directories gets all ten levels listed.
pub async fn list_levels_under(
    client: &dyn ReplicaClient,
    use_timestamps: bool,
    root: Option<&[String]>,
) -> Result<LevelListings> {
    let present = present_levels(client, root).await?;
    // The listings go out together: one round trip of latency instead of one per level.
    // A Vec, not a lazy iterator: the future must stay `Send` inside spawned tasks (the
    // replicator's format check), which a closure-mapped iterator inside it is not.
    let mut levels = Vec::with_capacity(usize::from(SNAPSHOT_LEVEL) + 1);
    for level in 0..=SNAPSHOT_LEVEL {
        let wanted = present.as_ref().is_none_or(|p| p.contains(&level));
        levels.push(list_level_if(client, level, use_timestamps, wanted));
    }
    futures::future::try_join_all(levels).await
}

/// [`list_level`] when `wanted`, else empty.
async fn list_level_if(
    client: &dyn ReplicaClient,
    level: u8,
    use_timestamps: bool,
    wanted: bool,
) -> Result<Vec<LtxFileInfo>> {
    if !wanted {
        return Ok(Vec::new());
    }
    list_level(client, level, use_timestamps).await
}

/// The levels whose directory exists, from one listing of their parent (`root` when that is
/// the replica root and the caller listed it); `None` when the client cannot tell.
async fn present_levels(
    client: &dyn ReplicaClient,
    root: Option<&[String]>,
) -> Result<Option<Vec<u8>>> {
    let kind = client.kind();
    let split = |l: u8| -> (String, String) {
        let dir = level_dir(kind, l);
        match dir.rsplit_once('/') {
            Some((parent, name)) => (parent.to_string(), name.to_string()),
            None => (String::new(), dir),
        }
    };
    let (parent, _) = split(0);
    let names = if parent.is_empty() {
        match root {
            Some(r) => Some(r.to_vec()),
            None => client.list_subdirs("").await?,
        }
    } else if root.is_some_and(|r| !r.contains(&parent)) {
        Some(Vec::new())
    } else {
        client.list_subdirs(&parent).await?
    };
    Ok(names.map(|names| {
        (0..=SNAPSHOT_LEVEL)
            .filter(|&l| names.contains(&split(l).1))
            .collect()
    }))
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
    let keys: Vec<String> = files.iter().map(|f| f.key(kind)).collect();
    // Futures built in a loop, not by a closure over the stream: the whole listing must stay
    // `Send` inside spawned tasks (the replicator's format check).
    let mut lookups = Vec::with_capacity(keys.len());
    for key in &keys {
        lookups.push(client.object_timestamp(key));
    }
    let stamps: Vec<Option<OffsetDateTime>> = futures::stream::iter(lookups)
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

/// The plan's first file: of the files with min TXID 1 (full snapshots) that fit the
/// target, the one reaching the furthest max TXID; ties go to the higher level (the L9
/// snapshot over a level file), then to the earlier timestamp (as [`better`]).
fn base(
    levels: &LevelListings,
    txid: Option<u64>,
    timestamp: Option<OffsetDateTime>,
) -> Option<LtxFileInfo> {
    levels
        .iter()
        .flatten()
        .filter(|f| f.min_txid == 1 && fits(f, txid, timestamp))
        .max_by_key(|f| (f.max_txid, f.level, Reverse(f.created_at)))
        .cloned()
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
    let mut plan: Vec<LtxFileInfo> = base(levels, txid, timestamp).into_iter().collect();
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

    /// The plan for a target, as (level, min, max) triples.
    fn planned(
        l: &LevelListings,
        txid: Option<u64>,
        ts: Option<OffsetDateTime>,
    ) -> Vec<(u8, u64, u64)> {
        names(&plan_from_levels(l, txid, ts).expect("plan"))
    }

    fn names(plan: &[LtxFileInfo]) -> Vec<(u8, u64, u64)> {
        plan.iter()
            .map(|x| (x.level, x.min_txid, x.max_txid))
            .collect()
    }

    #[tokio::test]
    async fn only_existing_level_directories_are_listed() {
        let c = crate::memory::MemoryClient::new();
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("t");
        for key in [
            "ltx/0/0000000000000002-0000000000000002.ltx",
            "ltx/9/0000000000000001-0000000000000001.ltx",
        ] {
            c.put_object(key, vec![0; 100], t, None).expect("put");
        }
        let all = list_levels(&c, false).await.expect("levels");
        let found: Vec<(u8, u64, u64)> = names(&all.concat());
        assert_eq!(found, vec![(0, 2, 2), (9, 1, 1)]);
        assert_eq!(
            present_levels(&c, None).await.expect("present"),
            Some(vec![0, 9])
        );
        // A root listing without `ltx/` (given by the caller): nothing else is listed.
        let root = vec!["generations".to_string()];
        let none = list_levels_under(&c, false, Some(&root))
            .await
            .expect("levels");
        assert!(none.iter().all(Vec::is_empty), "{none:?}");
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
        // Upstream: L9 1-1, L1 1-2, ...; L1 1-2 is a full snapshot reaching further than
        // L9 1-1, so it is the base and L9 1-1 is not read.
        let p = plan_from_levels(&l, None, None).expect("plan");
        assert_eq!(names(&p), [(1, 1, 2), (1, 3, 5), (0, 6, 6)]);
        let p = plan_from_levels(&l, Some(4), None).expect("plan");
        assert_eq!(names(&p), [(1, 1, 2), (0, 3, 3), (0, 4, 4)]);
        let ts = OffsetDateTime::from_unix_timestamp(1_700_000_000 + 4).expect("t");
        let p = plan_from_levels(&l, None, Some(ts)).expect("plan");
        assert_eq!(names(&p), [(1, 1, 2), (0, 3, 3)]);
        assert!(matches!(
            plan_from_levels(&l, Some(7), None),
            Err(Error::NoMatchingBackups)
        ));
    }

    #[test]
    fn ties_prefer_lower_min_then_higher_level_then_earlier_time() {
        let l = levels(&[f(2, 1, 8, 9), f(1, 1, 8, 5), f(0, 2, 8, 1)]);
        assert_eq!(planned(&l, None, None), [(2, 1, 8)]);
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

    #[test]
    fn base_is_the_furthest_file_from_txid_1_at_any_level() {
        // The benchmark's replica shape: L9 at the first TXID, an L2 file from TXID 1 that
        // holds the whole database again, later L2/L1 files and L0 files.
        let l = levels(&[
            f(9, 1, 5, 5),
            f(2, 1, 20, 20),
            f(2, 21, 30, 30),
            f(1, 21, 25, 25),
            f(1, 31, 33, 33),
            f(0, 31, 31, 31),
            f(0, 32, 32, 32),
            f(0, 33, 33, 33),
            f(0, 34, 34, 34),
        ]);
        // Upstream: L9 1-5, L2 1-20, L2 21-30, L1 31-33, L0 34.
        let p = plan_from_levels(&l, None, None).expect("plan");
        assert_eq!(
            names(&p),
            [(2, 1, 20), (2, 21, 30), (1, 31, 33), (0, 34, 34)]
        );
        // A target before the level file: the L9 snapshot is the only base that fits.
        assert!(matches!(
            plan_from_levels(&l, Some(7), None),
            Err(Error::NoMatchingBackups)
        ));
        assert_eq!(planned(&l, Some(5), None), [(9, 1, 5)]);
        assert_eq!(planned(&l, Some(20), None), [(2, 1, 20)]);
        assert_eq!(planned(&l, Some(25), None), [(2, 1, 20), (1, 21, 25)]);
        assert_eq!(
            planned(&l, Some(32), None),
            [(2, 1, 20), (2, 21, 30), (0, 31, 31), (0, 32, 32)]
        );
        // Timestamps: a base must be older than the target too.
        let at = |s: i64| OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).expect("t");
        assert_eq!(planned(&l, None, Some(at(20))), [(9, 1, 5)]);
        assert_eq!(planned(&l, None, Some(at(21))), [(2, 1, 20)]);
        assert_eq!(
            planned(&l, None, Some(at(32))),
            [(2, 1, 20), (2, 21, 30), (0, 31, 31)]
        );
        assert!(matches!(
            plan_from_levels(&l, None, Some(at(5))),
            Err(Error::NoMatchingBackups)
        ));
    }

    #[test]
    fn base_ties_prefer_the_snapshot_level_then_the_earlier_file() {
        // Same max TXID: the L9 snapshot wins over a level file, as upstream.
        let l = levels(&[f(9, 1, 8, 9), f(3, 1, 8, 5), f(0, 9, 9, 9)]);
        assert_eq!(planned(&l, None, None), [(9, 1, 8), (0, 9, 9)]);
        // Among levels below 9, the higher level; then the earlier timestamp.
        let l = levels(&[f(1, 1, 8, 1), f(3, 1, 8, 9), f(0, 1, 1, 0)]);
        assert_eq!(planned(&l, None, None), [(3, 1, 8)]);
        let l = levels(&[f(2, 1, 8, 9), f(2, 1, 8, 3), f(2, 1, 8, 7)]);
        let p = plan_from_levels(&l, None, None).expect("p");
        assert_eq!(p[0].created_at, f(2, 1, 8, 3).created_at);
        // No L9 at all: the L0 file of TXID 1 (the first sync's snapshot) is a base.
        let l = levels(&[f(0, 1, 1, 1), f(0, 2, 2, 2), f(1, 2, 4, 4)]);
        assert_eq!(planned(&l, None, None), [(0, 1, 1), (1, 2, 4)]);
    }

    #[test]
    fn extension_may_go_past_a_later_base() {
        // A file not from TXID 1 reaching further than every base still extends it.
        let l = levels(&[f(9, 1, 10, 10), f(2, 1, 12, 12), f(3, 5, 40, 40)]);
        // Upstream: L9 1-10, L3 5-40.
        assert_eq!(planned(&l, None, None), [(2, 1, 12), (3, 5, 40)]);
        // A gap after the base is still an error on a plain restore.
        let l = levels(&[f(9, 1, 3, 3), f(1, 1, 6, 6), f(0, 9, 9, 9)]);
        let err = plan_from_levels(&l, None, None).expect_err("gap");
        assert!(err.to_string().contains("non-contiguous"), "{err}");
    }
}

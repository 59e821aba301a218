//! Validation (`validation-interval`, spec 5.4): compare a CRC-64/ISO of the database as of a
//! position with the CRC-64/ISO of a restore of the replica up to that position.
//!
//! Litestream forces a `RESTART` checkpoint for every validation so that the database file
//! alone is the state at the end of an index. We do not: under the write lock we copy every
//! committed frame into the shadow WAL (position `P`) and open a read transaction on a fresh
//! connection, which pins the WAL at `P` (no back-fill past `P`, no WAL restart that would let
//! a checkpoint overwrite pages of our snapshot). The database as of `P` is then the main
//! database file overlaid with the newest version of each page among the frames of the current
//! shadow index up to `P`, cut to the page count of `P`'s commit frame. Pages that a concurrent
//! back-fill writes while we read are exactly pages that are in that overlay, so torn reads of
//! them do not matter. The replica is then brought to exactly `P` (the upload is capped at
//! `P`). That much runs in the replica's task; the rest, a [`ValidationJob`], runs beside it so
//! that uploads go on: the replica is restored up to `P` (its index, only the segments before
//! `P`'s offset) into a temporary directory and checksummed. Snapshots and retention of that
//! replica wait until the job is done, so the objects it reads do not change under it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::pos::Pos;
use crate::replica_client::ReplicaClient;
use crate::retry::RetryConfig;
use crate::wal::{WAL_FRAME_HEADER_SIZE, WAL_HEADER_SIZE};

/// The second half of a validation: restore the replica up to `position` and compare.
pub(crate) struct ValidationJob {
    pub(crate) client: Arc<dyn ReplicaClient>,
    pub(crate) retry: RetryConfig,
    pub(crate) db_path: PathBuf,
    pub(crate) replica: String,
    pub(crate) stats: Arc<Mutex<ValidationStats>>,
    pub(crate) position: Pos,
    pub(crate) db_checksum: u64,
}

impl ValidationJob {
    /// Restore, checksum, compare; record and log the outcome.
    pub(crate) async fn run(self) -> Result<ValidationReport> {
        let r = self.compare().await;
        record_validation(&self.db_path, &self.replica, &self.stats, r.as_ref());
        r
    }

    async fn compare(&self) -> Result<ValidationReport> {
        let dir = TempDir::new()?;
        let out = dir.0.join("replica");
        let mut opts = crate::restore::RestoreOptions::new(&out);
        opts.generation = Some(self.position.generation.clone());
        opts.index = Some(self.position.index);
        opts.until_offset = Some(self.position.offset);
        opts.retry = self.retry;
        crate::restore::restore(Arc::clone(&self.client), &opts).await?;
        compare_restored(
            &self.db_path,
            &self.replica,
            self.position.clone(),
            self.db_checksum,
            out,
        )
        .await
    }
}

/// Checksum the replica restored into `out` (up to `position`), compare it with
/// `db_checksum` (the database as of `position`) and log the outcome.
pub(crate) async fn compare_restored(
    db_path: &Path,
    replica: &str,
    position: Pos,
    db_checksum: u64,
    out: PathBuf,
) -> Result<ValidationReport> {
    let o = out.clone();
    let replica_checksum = tokio::task::spawn_blocking(move || file_checksum(&o))
        .await
        .map_err(|e| Error::io("validation task", io::Error::other(e)))?
        .map_err(|e| Error::io(out.display().to_string(), e))?;
    let rep = ValidationReport {
        position,
        db_checksum,
        replica_checksum,
    };
    let status = if rep.ok() { "ok" } else { "mismatch" };
    tracing::info!(db = %db_path.display(), replica = %replica, status,
        db_checksum = %format!("{:016x}", rep.db_checksum),
        replica_checksum = %format!("{replica_checksum:016x}"),
        position = %rep.position, "validator");
    Ok(rep)
}

/// A temporary directory for a validation restore, removed when dropped (also when the job
/// is cancelled).
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("{:016x}-litestream", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Count a validation's outcome (metrics and [`ValidationStats`]) and log failures.
pub(crate) fn record_validation(
    db_path: &Path,
    replica: &str,
    stats: &Mutex<ValidationStats>,
    r: std::result::Result<&ValidationReport, &Error>,
) {
    let ok = matches!(r, Ok(rep) if rep.ok());
    crate::metrics::replica(&db_path.to_string_lossy(), replica).record_validation(ok);
    if let Ok(mut v) = stats.lock() {
        if ok {
            v.ok += 1;
        } else {
            v.error += 1;
        }
        if let Ok(rep) = r {
            v.last = Some(rep.clone());
        }
    }
    match r {
        Ok(rep) if !rep.ok() => {
            tracing::error!(db = %db_path.display(), replica = %replica,
                error = "invalid replica, checksum mismatch", "validator error");
        }
        Err(e) => {
            tracing::error!(db = %db_path.display(), replica = %replica, error = %e,
                "validator error");
        }
        Ok(_) => {}
    }
}

/// The outcome of one validation of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationReport {
    /// The position that was validated (generation, index, committed offset).
    pub position: Pos,
    /// CRC-64/ISO of the local database as of `position`.
    pub db_checksum: u64,
    /// CRC-64/ISO of the replica restored up to `position`.
    pub replica_checksum: u64,
}

impl ValidationReport {
    /// True when both checksums match.
    pub fn ok(&self) -> bool {
        self.db_checksum == self.replica_checksum
    }
}

/// Validation counters of one replica (the `litestream_replica_validation_total` statuses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationStats {
    /// Validations whose checksums matched.
    pub ok: u64,
    /// Validations that found a mismatch or failed.
    pub error: u64,
    /// The last completed comparison (matching or not).
    pub last: Option<ValidationReport>,
}

/// CRC-64 with the ISO 3309 polynomial, as Go's `hash/crc64` with `crc64.ISO`.
#[derive(Debug, Clone)]
pub(crate) struct Crc64 {
    table: [u64; 256],
    crc: u64,
}

impl Crc64 {
    const ISO: u64 = 0xD800_0000_0000_0000;

    pub(crate) fn new() -> Crc64 {
        let mut table = [0u64; 256];
        for (i, t) in table.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ Self::ISO
                } else {
                    c >> 1
                };
            }
            *t = c;
        }
        Crc64 { table, crc: 0 }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        let mut crc = !self.crc;
        for &b in data {
            crc = self.table[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
        }
        self.crc = !crc;
    }

    pub(crate) fn sum(&self) -> u64 {
        self.crc
    }
}

/// Read `buf.len()` bytes at `off`, zero-filling past the end of the file.
fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// CRC-64/ISO of the database as of shadow offset `end` of the current index: the main file
/// `db` overlaid with the newest version of each page among the frames of `shadow` before
/// `end`, cut to the page count of the last commit frame (the file size when the index holds
/// no commit yet). `db` must be pinned at that position by a read transaction (module docs).
pub(crate) fn page_image_checksum(
    db: &File,
    shadow: &File,
    page_size: u32,
    end: u64,
) -> io::Result<u64> {
    let ps = u64::from(page_size);
    if ps == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "page size 0"));
    }
    let fsz = WAL_FRAME_HEADER_SIZE as u64 + ps;
    let mut latest: HashMap<u32, u64> = HashMap::new();
    let mut npage: u64 = 0;
    let mut off = WAL_HEADER_SIZE as u64;
    let mut fh = [0u8; WAL_FRAME_HEADER_SIZE];
    while off + fsz <= end {
        shadow.read_exact_at(&mut fh, off)?;
        let pgno = u32::from_be_bytes([fh[0], fh[1], fh[2], fh[3]]);
        let commit = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
        latest.insert(pgno, off + WAL_FRAME_HEADER_SIZE as u64);
        if commit != 0 {
            npage = u64::from(commit);
        }
        off += fsz;
    }
    if npage == 0 {
        npage = db.metadata()?.len() / ps;
    }
    let mut crc = Crc64::new();
    let mut buf = vec![0u8; page_size as usize];
    for pgno in 1..=npage {
        match u32::try_from(pgno).ok().and_then(|p| latest.get(&p)) {
            Some(&at) => shadow.read_exact_at(&mut buf, at)?,
            None => read_full_at(db, &mut buf, (pgno - 1) * ps)?,
        }
        crc.update(&buf);
    }
    Ok(crc.sum())
}

/// CRC-64/ISO of a whole file.
pub(crate) fn file_checksum(path: &Path) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut crc = Crc64::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
    }
    Ok(crc.sum())
}

#[cfg(test)]
mod tests {
    use super::Crc64;

    #[test]
    fn crc64_iso_check_value() {
        // The CRC-64/GO-ISO catalogue check value for "123456789".
        let mut c = Crc64::new();
        c.update(b"123456789");
        assert_eq!(c.sum(), 0xB909_56C7_75A4_1001);
        let mut d = Crc64::new();
        d.update(b"1234");
        d.update(b"56789");
        assert_eq!(d.sum(), c.sum());
    }
}

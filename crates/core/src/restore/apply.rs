//! Applying a v0.3 snapshot and WAL frames to the output file: page sets, the frame
//! applier, transactions held until their commit (spilled to disk when large).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::replica_client::WalSegmentInfo;
use crate::wal::{db_page_size, FrameValidator, WalHeader, WAL_HEADER_SIZE};

use super::output::{
    read_error, read_exact_or_corrupt, read_full, write_at, OutputFile, READ_AHEAD_CHUNK,
};
use super::v03::segment_name;

/// Words of the dense part of a [`PageSet`]: pages below `64 * DENSE_WORDS` (2^22 pages, a
/// 16 GiB database of 4 KiB pages) are bits in a vector of at most 512 KiB; higher page
/// numbers, which a hostile frame can name without the data to back them, go to a sparse map,
/// so that memory follows the frames actually read and never the page numbers they claim.
pub(super) const DENSE_WORDS: usize = 1 << 16;

/// A growable set of page numbers (see [`DENSE_WORDS`]).
#[derive(Debug, Default)]
pub(super) struct PageSet {
    bits: Vec<u64>,
    sparse: BTreeMap<u32, u64>,
}

impl PageSet {
    pub(super) fn contains(&self, pgno: u32) -> bool {
        let (w, b) = (pgno as usize / 64, pgno % 64);
        let word = if w < DENSE_WORDS {
            self.bits.get(w).copied()
        } else {
            self.sparse.get(&(w as u32)).copied()
        };
        word.is_some_and(|word| word & (1 << b) != 0)
    }

    /// The pages in the set, ascending.
    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let dense = self.bits.iter().enumerate().map(|(w, &b)| (w as u32, b));
        let sparse = self.sparse.iter().map(|(&w, &b)| (w, b));
        dense.chain(sparse).flat_map(|(w, bits)| {
            (0..64u32)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }

    /// Insert; returns true if it was not present.
    pub(super) fn insert(&mut self, pgno: u32) -> bool {
        let (w, bit) = (pgno as usize / 64, 1u64 << (pgno % 64));
        let word = if w < DENSE_WORDS {
            if self.bits.len() <= w {
                self.bits.resize(w + 1, 0);
            }
            &mut self.bits[w]
        } else {
            self.sparse.entry(w as u32).or_insert(0)
        };
        let was = *word & bit != 0;
        *word |= bit;
        !was
    }
}

/// Writes the restored database so that every page is written once.
///
/// Litestream replays index after index through SQLite checkpoints: each writes every
/// committed frame's page in order and then sets the file to the size of the index's last
/// commit (cutting, or extending with zeros). The final content of page `p` is therefore the
/// newest version written by the newest index, unless a later index's size cut it off (then it
/// is zero), and the snapshot's page when no index wrote it and no index's size cut it.
/// Applying indexes newest first, skipping pages a newer index already decided, and filling
/// the rest from the snapshot gives exactly that file with one write per page (the snapshot's
/// cut-off pages are zeroed at the end). The snapshot is written by a second thread while the
/// segments are applied, coordinated through [`PageClaims`]. Every frame of every segment is
/// still read and validated (salt, checksum chain, whole transactions).
pub(super) struct Applier<'f> {
    file: &'f OutputFile,
    /// Shared with the snapshot writer: pages claimed here are never written by it.
    claims: &'f Mutex<PageClaims>,
    page_size: Option<u32>,
    index: Option<u32>,
    validator: Option<FrameValidator>,
    next_offset: u64,
    last_commit: Option<u32>,
    /// Segment and frame offset of that commit.
    last_commit_at: Option<(String, u64)>,
    frame: Vec<u8>,
    /// Pages whose final content a newer index decided.
    decided: PageSet,
    /// Pages written by the index being applied.
    written: PageSet,
    written_list: Vec<u32>,
    /// Smallest commit size of the newer indexes: pages above it were cut off.
    limit: Option<u32>,
    /// Size of the newest index with a commit: the final database size.
    final_pages: Option<u32>,
    /// Segment and frame offset of the commit that set `final_pages`.
    final_at: Option<(String, u64)>,
    /// Segment and offset of the first frame of a transaction still waiting for its commit.
    txn_start: Option<(String, u64)>,
    /// In buffered mode: the frames of that transaction, written at its commit.
    pending: Option<PendingTxn>,
    /// Set when an index ends inside a transaction.
    uncommitted_tail: &'f AtomicBool,
}

impl<'f> Applier<'f> {
    pub(super) fn new(
        file: &'f OutputFile,
        claims: &'f Mutex<PageClaims>,
        pending: Option<PendingTxn>,
        uncommitted_tail: &'f AtomicBool,
    ) -> Self {
        Applier {
            file,
            claims,
            page_size: None,
            index: None,
            validator: None,
            next_offset: 0,
            last_commit: None,
            last_commit_at: None,
            frame: Vec::new(),
            decided: PageSet::default(),
            written: PageSet::default(),
            written_list: Vec::new(),
            limit: None,
            final_pages: None,
            final_at: None,
            txn_start: None,
            pending,
            uncommitted_tail,
        }
    }

    pub(super) fn below_limit(&self, pgno: u32) -> bool {
        self.limit.is_none_or(|l| pgno <= l)
    }

    /// End of an index: pages it wrote above its own last commit size were cut off by it.
    pub(super) fn finish_index(&mut self) -> Result<()> {
        if let Some((segment, offset)) = self.txn_start.take() {
            self.uncommitted_tail.store(true, Ordering::Relaxed);
            if let Some(pending) = &mut self.pending {
                // Buffered mode: the unfinished transaction was never written; SQLite (and so
                // Litestream's restore) ignores it too.
                tracing::warn!(segment = %segment, offset, frames = pending.frames,
                    "ignoring a transaction without a commit frame at the end of its wal index");
                pending.clear()?;
                return self.finish_index();
            }
            // Its frames were already written: `execute` restores again in buffered mode.
            return Err(Error::corrupt(
                &segment,
                format!(
                    "wal index {:08x} ends inside a transaction (its frames from offset {offset} \
                     have no commit frame); restore an earlier -index",
                    self.index.unwrap_or(0)
                ),
            ));
        }
        if let Some(pages) = self.last_commit.take() {
            let limit = self.limit.map_or(pages, |l| l.min(pages));
            let page_size = self.page_size.unwrap_or(0) as usize;
            let zeros = vec![0u8; page_size];
            for &p in &self.written_list {
                if p > limit {
                    self.write_page(p, &zeros)?;
                }
            }
            self.limit = Some(limit);
            if self.final_pages.is_none() {
                self.final_pages = Some(pages);
                self.final_at = self.last_commit_at.take();
            }
        }
        for p in self.written_list.drain(..) {
            self.decided.insert(p);
        }
        self.written = PageSet::default();
        self.validator = None;
        self.next_offset = 0;
        Ok(())
    }

    /// Write one committed frame's page unless a newer index decided it or cut it off.
    pub(super) fn apply_page(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        if self.decided.contains(pgno) || !self.below_limit(pgno) {
            return Ok(());
        }
        if self.written.insert(pgno) {
            self.written_list.push(pgno);
            // Claim before writing, so the snapshot writer never writes after us.
            self.claims
                .lock()
                .map_err(|_| Error::io("restore page claims", io::Error::other("lock poisoned")))?
                .wal
                .insert(pgno);
        }
        self.write_page(pgno, page)
    }

    pub(super) fn write_page(&self, pgno: u32, data: &[u8]) -> Result<()> {
        let at = u64::from(pgno - 1) * data.len() as u64;
        self.file.write_all_at(data, at)
    }

    pub(super) fn apply(&mut self, seg: &WalSegmentInfo, mut reader: impl Read) -> Result<()> {
        let name = segment_name(seg);
        self.start_segment(seg, &name, &mut reader)?;
        let Some(mut validator) = self.validator.take() else {
            return Err(Error::corrupt(
                &name,
                "segment without a wal header before it",
            ));
        };
        let mut frame = std::mem::take(&mut self.frame);
        frame.resize(validator.header().frame_size(), 0);
        let result = self.read_frames(&name, &mut validator, &mut frame, &mut reader);
        self.frame = frame;
        self.validator = Some(validator);
        // A transaction may go on in the next segment of this index: Litestream v0.3.13 can
        // upload a shadow WAL it is still appending to, and its restore concatenates the
        // segments. Only an index that ends inside a transaction is refused.
        result
    }

    /// Start `seg`: finish the previous index if it is another one, check that the segment
    /// follows the previous one, and read the WAL header of an index's first segment.
    fn start_segment(
        &mut self,
        seg: &WalSegmentInfo,
        name: &str,
        mut reader: impl Read,
    ) -> Result<()> {
        if self.index != Some(seg.index) {
            self.finish_index()?;
            self.index = Some(seg.index);
        }
        if seg.offset != self.next_offset {
            return Err(Error::corrupt(
                name,
                format!(
                    "wal segment gap: segment starts at offset {} but the previous one ends at {}",
                    seg.offset, self.next_offset
                ),
            ));
        }
        if seg.offset == 0 {
            let mut hdr = [0u8; WAL_HEADER_SIZE];
            read_exact_or_corrupt(
                &mut reader,
                &mut hdr,
                name,
                "segment is shorter than a wal header",
            )?;
            let header = WalHeader::parse(&hdr).map_err(|r| Error::corrupt(name, r))?;
            match self.page_size {
                Some(p) if p != header.page_size => {
                    return Err(Error::corrupt(
                        name,
                        format!(
                            "wal page size {} does not match the page size {p} of newer indexes",
                            header.page_size
                        ),
                    ))
                }
                _ => self.page_size = Some(header.page_size),
            }
            self.validator = Some(FrameValidator::new(header));
            self.next_offset = WAL_HEADER_SIZE as u64;
        }
        Ok(())
    }

    /// Read, validate and apply the frames of one segment (`frame` is one frame long).
    fn read_frames(
        &mut self,
        name: &str,
        validator: &mut FrameValidator,
        frame: &mut [u8],
        mut reader: impl Read,
    ) -> Result<()> {
        let frame_size = frame.len();
        loop {
            let n = read_full(&mut reader, frame).map_err(|e| read_error(name, e))?;
            if n == 0 {
                return Ok(());
            }
            if n < frame_size {
                return Err(Error::corrupt(
                    name,
                    format!("truncated frame at offset {}", self.next_offset),
                ));
            }
            let fh = validator.check(frame).map_err(|r| {
                Error::corrupt(name, format!("frame at offset {}: {r}", self.next_offset))
            })?;
            if fh.commit_size != 0 && fh.pgno > fh.commit_size {
                // SQLite writes a commit's frames only for pages within its size.
                return Err(Error::corrupt(
                    name,
                    format!(
                        "commit frame at offset {} writes page {} beyond its database size of \
                         {} pages",
                        self.next_offset, fh.pgno, fh.commit_size
                    ),
                ));
            }
            let page = &frame[crate::wal::WAL_FRAME_HEADER_SIZE..];
            self.apply_frame(name, fh.pgno, fh.commit_size, page)?;
            self.next_offset += frame_size as u64;
        }
    }

    /// One valid frame at `self.next_offset`: write (or hold) its page; a commit frame ends a
    /// transaction (and writes the held pages).
    fn apply_frame(&mut self, name: &str, pgno: u32, commit_size: u32, page: &[u8]) -> Result<()> {
        match &mut self.pending {
            Some(pending) => pending.push(pgno, page)?,
            None => self.apply_page(pgno, page)?,
        }
        if commit_size != 0 {
            if let Some(mut pending) = self.pending.take() {
                let drained = pending.drain(|pgno, page| self.apply_page(pgno, page));
                self.pending = Some(pending);
                drained?;
            }
            self.last_commit = Some(commit_size);
            self.last_commit_at = Some((name.to_string(), self.next_offset));
            self.txn_start = None;
        } else if self.txn_start.is_none() {
            self.txn_start = Some((name.to_string(), self.next_offset));
        }
        Ok(())
    }

    /// After the segments and the snapshot are written: check that their page sizes agree,
    /// zero the snapshot's pages that a newer index's size cut off, and set the final size.
    pub(super) fn finish(
        self,
        name: &str,
        snapshot: &SnapshotWritten,
        claims: &PageClaims,
    ) -> Result<()> {
        if let Some(p) = self.page_size {
            if p != snapshot.page_size {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "database page size {} does not match the wal page size {p}",
                        snapshot.page_size
                    ),
                ));
            }
        }
        let page_size = snapshot.page_size as usize;
        if let (Some(limit), Some(final_pages)) = (self.limit, self.final_pages) {
            let zeros = vec![0u8; page_size];
            for p in claims.snapshot.iter() {
                if p > limit && p <= final_pages && !claims.wal.contains(p) {
                    self.write_page(p, &zeros)?;
                }
            }
        }
        let size = match self.final_pages {
            Some(p) => {
                self.check_final_size(p, snapshot.page_size, claims)?;
                u64::from(p) * page_size as u64
            }
            None => snapshot.bytes,
        };
        self.file.set_len(size)
    }

    /// Refuse a final size that the replica does not back with pages: every page of a
    /// database SQLite wrote is in the snapshot or in a frame of a later index (SQLite writes
    /// each page it adds), except the lock-byte page at 1 GiB, which it never writes. A
    /// commit claiming more (a hostile size would make a sparse file of up to 256 TiB) is
    /// malformed.
    pub(super) fn check_final_size(
        &self,
        pages: u32,
        page_size: u32,
        claims: &PageClaims,
    ) -> Result<()> {
        let in_db = |p: &u32| *p <= pages;
        let from_wal = claims.wal.iter().take_while(in_db).count() as u64;
        let from_snapshot = claims
            .snapshot
            .iter()
            .take_while(in_db)
            .filter(|p| !claims.wal.contains(*p))
            .count() as u64;
        let present = from_wal + from_snapshot;
        let lock_page = (1u64 << 30) / u64::from(page_size) + 1;
        let lock_page_missing = u64::from(pages) >= lock_page
            && !claims.wal.contains(lock_page as u32)
            && !claims.snapshot.contains(lock_page as u32);
        if present + u64::from(lock_page_missing) >= u64::from(pages) {
            return Ok(());
        }
        let (segment, offset) = self.final_at.clone().unwrap_or_default();
        Err(Error::corrupt(
            &segment,
            format!(
                "malformed: the commit frame at offset {offset} gives a database of {pages} \
                 pages ({} bytes), but the snapshot and wal segments hold only {present} of \
                 those pages",
                u64::from(pages) * u64::from(page_size)
            ),
        ))
    }
}

/// Frames held in memory per transaction in buffered mode; beyond this they go to a file.
pub(super) const PENDING_MEMORY: usize = 8 << 20;

/// The frames (page number and page) of the transaction being read, in order, kept until its
/// commit frame arrives: up to [`PENDING_MEMORY`] in memory, the rest in an unlinked temporary
/// file beside the output.
#[derive(Debug)]
pub(super) struct PendingTxn {
    dir: PathBuf,
    mem: Vec<u8>,
    spill: Option<File>,
    spilled: u64,
    frames: u64,
    record: usize,
}

impl PendingTxn {
    pub(super) fn new(dir: PathBuf) -> Self {
        PendingTxn {
            dir,
            mem: Vec::new(),
            spill: None,
            spilled: 0,
            frames: 0,
            record: 0,
        }
    }

    pub(super) fn push(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        self.record = 4 + page.len();
        self.frames += 1;
        if self.spilled == 0 && self.mem.len() + self.record <= PENDING_MEMORY {
            self.mem.extend_from_slice(&pgno.to_le_bytes());
            self.mem.extend_from_slice(page);
            return Ok(());
        }
        let file = match &self.spill {
            Some(f) => f,
            None => self.spill.insert(spill_file(&self.dir)?),
        };
        let mut rec = Vec::with_capacity(self.record);
        rec.extend_from_slice(&pgno.to_le_bytes());
        rec.extend_from_slice(page);
        file.write_all_at(&rec, self.spilled)
            .map_err(|e| Error::io("restore transaction buffer", e))?;
        self.spilled += rec.len() as u64;
        Ok(())
    }

    /// Hand every held frame, in order, to `f`; then forget them.
    pub(super) fn drain(&mut self, mut f: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<()> {
        let record = self.record.max(5);
        for rec in self.mem.chunks(record) {
            f(pgno_of(rec), &rec[4..])?;
        }
        if let Some(file) = &self.spill {
            let mut buf = vec![0u8; record * (READ_AHEAD_CHUNK / record).max(1)];
            let mut at = 0u64;
            while at < self.spilled {
                let n = buf.len().min((self.spilled - at) as usize);
                file.read_exact_at(&mut buf[..n], at)
                    .map_err(|e| Error::io("restore transaction buffer", e))?;
                for rec in buf[..n].chunks(record) {
                    f(pgno_of(rec), &rec[4..])?;
                }
                at += n as u64;
            }
        }
        self.clear()
    }

    pub(super) fn clear(&mut self) -> Result<()> {
        self.mem.clear();
        self.frames = 0;
        if self.spilled > 0 {
            self.spilled = 0;
            if let Some(file) = &self.spill {
                file.set_len(0)
                    .map_err(|e| Error::io("restore transaction buffer", e))?;
            }
        }
        Ok(())
    }
}

pub(super) fn pgno_of(rec: &[u8]) -> u32 {
    u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]])
}

/// A temporary file in `dir` that is already unlinked: it goes away with its handle.
pub(super) fn spill_file(dir: &Path) -> Result<File> {
    let path = dir.join(format!(
        ".litestream-restore-{:016x}.txn",
        rand::random::<u64>()
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

/// Who wrote which page, shared by the segment applier and the snapshot writer that run side
/// by side. The applier claims a page (under the lock) before it writes it; the snapshot writer
/// checks and writes under the lock, skipping claimed pages. Either way the newer content
/// lands last.
#[derive(Debug, Default)]
pub(super) struct PageClaims {
    /// Pages some WAL segment wrote (their final content, or zeros for cut-off pages).
    wal: PageSet,
    /// Pages the snapshot wrote.
    snapshot: PageSet,
}

/// What the snapshot writer found.
#[derive(Debug)]
pub(super) struct SnapshotWritten {
    page_size: u32,
    bytes: u64,
}

/// Write the snapshot's pages that no segment claimed, in runs of up to 1 MiB.
pub(super) fn write_snapshot(
    file: &OutputFile,
    claims: &Mutex<PageClaims>,
    name: &str,
    mut reader: impl Read,
    cancel: &AtomicBool,
) -> Result<SnapshotWritten> {
    let mut header = [0u8; 100];
    read_exact_or_corrupt(
        &mut reader,
        &mut header,
        name,
        "snapshot is shorter than a database header",
    )?;
    let page_size = db_page_size(&header).map_err(|e| match e {
        Error::Corrupt { reason, .. } => Error::corrupt(name, format!("snapshot: {reason}")),
        other => other,
    })?;
    let ps = page_size as usize;
    let pages_per_chunk = ((1 << 20) / ps).max(1);
    let mut chunk = vec![0u8; pages_per_chunk * ps];
    chunk[..100].copy_from_slice(&header);
    let mut filled = 100;
    let mut first: u32 = 1;
    let mut bytes: u64 = 0;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let n = read_full(&mut reader, &mut chunk[filled..]).map_err(|e| read_error(name, e))?;
        let len = filled + n;
        filled = 0;
        if len == 0 {
            break;
        }
        bytes += len as u64;
        let mut claims = claims
            .lock()
            .map_err(|_| Error::io("restore page claims", io::Error::other("lock poisoned")))?;
        // Runs of consecutive unclaimed pages, each written with one call.
        let mut run: Option<usize> = None;
        for (i, page) in chunk[..len].chunks(ps).enumerate() {
            let pgno = first.saturating_add(i as u32);
            let claimed = claims.wal.contains(pgno);
            if !claimed {
                claims.snapshot.insert(pgno);
            }
            match (run, claimed) {
                (None, false) => run = Some(i),
                (Some(start), true) => {
                    write_at(file, first, start, ps, &chunk[start * ps..i * ps])?;
                    run = None;
                }
                _ => {}
            }
            if page.len() < ps {
                break;
            }
        }
        if let Some(start) = run {
            write_at(file, first, start, ps, &chunk[start * ps..len])?;
        }
        drop(claims);
        if len < chunk.len() {
            break;
        }
        first = first.saturating_add(pages_per_chunk as u32);
    }
    Ok(SnapshotWritten { page_size, bytes })
}

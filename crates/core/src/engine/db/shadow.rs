//! Reading the real WAL into the shadow WAL: each WAL byte read once into one chunk buffer,
//! validated and appended; the wal-index bounds the committed end; the shadow WAL's local
//! retention.

use super::*;

pub(super) const PENDING_SPILL: usize = 8 << 20;
/// Reads of the `-shm` wal-index header before falling back to scanning the WAL.
pub(super) const SHM_READ_ATTEMPTS: usize = 8;

/// Bytes of WAL read per `read` call by [`copy_valid_frames`] (rounded down to whole frames).
pub(super) const COPY_CHUNK: usize = 512 << 10;

/// Read whole frames of `wal` from `from` (at most `limit` bytes when given) and hand every run
/// of valid frames to `sink`, split after each commit frame: `sink(frames, ends_with_commit)`.
/// Stops at the end of the file (a partial frame is not read), at `limit`, or before the first
/// frame that does not validate. Each WAL byte is read once, straight into one chunk buffer:
/// the frames are validated and handed on from there (no per-frame copies).
///
/// The one frame loop of both copies into the shadow WAL (`DbCore::copy_committed`, bounded
/// by the wal-index, and the scanning fallback of `DbCore::copy_to_shadow_raw`).
pub(super) fn copy_valid_frames(
    wal: &File,
    wal_path: &Path,
    from: u64,
    limit: Option<u64>,
    validator: &mut FrameValidator,
    mut sink: impl FnMut(&[u8], bool) -> Result<()>,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let fsz = validator.header().frame_size();
    let mut buf = vec![0u8; (COPY_CHUNK / fsz).max(1) * fsz];
    let mut off = from;
    let mut left = limit.unwrap_or(u64::MAX);
    loop {
        let want = (buf.len() as u64).min(left) as usize / fsz * fsz;
        if want == 0 {
            return Ok(());
        }
        let mut got = 0;
        while got < want {
            match wal.read_at(&mut buf[got..want], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(wal_path, e)),
            }
        }
        let whole = got / fsz * fsz;
        let mut run = 0;
        let mut at = 0;
        while at < whole {
            match validator.check(&buf[at..at + fsz]) {
                Ok(fh) => {
                    at += fsz;
                    if fh.commit_size != 0 {
                        sink(&buf[run..at], true)?;
                        run = at;
                    }
                }
                Err(reason) => {
                    tracing::trace!(%reason, offset = off + at as u64, "copy shadow: stop at invalid frame");
                    if run < at {
                        sink(&buf[run..at], false)?;
                    }
                    return Ok(());
                }
            }
        }
        if run < whole {
            sink(&buf[run..whole], false)?;
        }
        if whole < want {
            return Ok(());
        }
        off += whole as u64;
        left -= whole as u64;
    }
}

/// Frames validated but not yet known to be committed: in memory, spilled to a file if large.
pub(super) struct Pending {
    mem: Vec<u8>,
    spill: Option<(File, PathBuf, u64)>,
}

impl Pending {
    fn len(&self) -> u64 {
        self.mem.len() as u64 + self.spill.as_ref().map_or(0, |s| s.2)
    }
    fn push(&mut self, frame: &[u8], tmp: &Path) -> Result<()> {
        self.mem.extend_from_slice(frame);
        if self.mem.len() >= PENDING_SPILL {
            if self.spill.is_none() {
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(tmp)
                    .map_err(|e| io_err(tmp, e))?;
                self.spill = Some((f, tmp.to_path_buf(), 0));
            }
            if let Some((f, p, n)) = self.spill.as_mut() {
                f.write_all(&self.mem).map_err(|e| io_err(p, e))?;
                *n += self.mem.len() as u64;
            }
            self.mem.clear();
        }
        Ok(())
    }
    /// Append everything pending to `out` and reset.
    fn drain_into(&mut self, out: &mut File, out_path: &Path) -> Result<()> {
        if let Some((mut f, p, n)) = self.spill.take() {
            f.seek(SeekFrom::Start(0)).map_err(|e| io_err(&p, e))?;
            let copied = io::copy(&mut (&mut f).take(n), out).map_err(|e| io_err(out_path, e))?;
            drop(f);
            let _ = fs::remove_file(&p);
            if copied != n {
                return Err(io_err(
                    &p,
                    io::Error::new(io::ErrorKind::UnexpectedEof, "short spill file"),
                ));
            }
        }
        out.write_all(&self.mem).map_err(|e| io_err(out_path, e))?;
        self.mem.clear();
        Ok(())
    }
    fn discard(&mut self) {
        if let Some((_, p, _)) = self.spill.take() {
            let _ = fs::remove_file(p);
        }
        self.mem.clear();
    }
}

impl DbCore {
    /// Whether the real WAL holds a frame with its header's salts at `offset` (just past the
    /// copied, committed frames).
    pub(super) fn frame_after(&self, offset: u64) -> bool {
        use std::os::unix::fs::FileExt;
        let Ok(wal) = File::open(&self.wal_path) else {
            return false;
        };
        let mut hdr = [0u8; WAL_HEADER_SIZE];
        let mut fh = [0u8; WAL_FRAME_HEADER_SIZE];
        wal.read_exact_at(&mut hdr, 0).is_ok()
            && wal.read_exact_at(&mut fh, offset).is_ok()
            && fh[8..16] == hdr[16..24]
    }

    /// Create the WAL if it is missing or shorter than its header.
    pub(super) fn ensure_wal_exists(&self) -> Result<()> {
        if file_size(&self.wal_path)?.unwrap_or(0) >= WAL_HEADER_SIZE as u64 {
            return Ok(());
        }
        self.writer()?
            .execute(SEQ_UPSERT, [])
            .map_err(|e| self.sql_err(e))?;
        Ok(())
    }

    /// Copy committed, valid frames from the real WAL (from `shadow_size`) into the shadow
    /// file `shadow`. Returns the new shadow size.
    pub(super) fn copy_to_shadow(&self, shadow: &Path, shadow_size: u64) -> Result<u64> {
        let end = self.copy_to_shadow_raw(shadow, shadow_size)?;
        crate::metrics::db(&self.path.to_string_lossy())
            .total_wal_bytes
            .add(end.saturating_sub(shadow_size));
        Ok(end)
    }

    pub(super) fn copy_to_shadow_raw(&self, shadow: &Path, shadow_size: u64) -> Result<u64> {
        let hdr_bytes = read_at(shadow, 0, WAL_HEADER_SIZE)?
            .ok_or_else(|| Error::corrupt(shadow.display().to_string(), "short shadow wal"))?;
        let hdr = WalHeader::parse(&hdr_bytes)
            .map_err(|r| Error::corrupt(shadow.display().to_string(), r))?;
        let fsz = self.frame_size();
        let last = if shadow_size > WAL_HEADER_SIZE as u64 {
            let fh = read_at(shadow, shadow_size - fsz, WAL_FRAME_HEADER_SIZE)?
                .ok_or_else(|| Error::corrupt(shadow.display().to_string(), "short shadow wal"))?;
            let be = |i: usize| u32::from_be_bytes([fh[i], fh[i + 1], fh[i + 2], fh[i + 3]]);
            (be(16), be(20))
        } else {
            hdr.checksum
        };
        let mut validator = FrameValidator::resume(hdr, last);
        let wal = match File::open(&self.wal_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(shadow_size),
            Err(e) => return Err(io_err(&self.wal_path, e)),
        };
        let shm = self.conns.as_ref().and_then(|c| c.shm.as_ref());
        // The two copies of the wal-index header differ while a writer updates them (for
        // microseconds): look again rather than fall back to scanning.
        let committed_end = shm.and_then(|f| {
            (0..SHM_READ_ATTEMPTS).find_map(|attempt| {
                if attempt > 0 {
                    std::thread::yield_now();
                }
                shm_committed_end(f, &hdr_bytes, self.page_size)
            })
        });
        if let Some(end) = committed_end {
            if end >= shadow_size {
                return self.copy_committed(wal, shadow, shadow_size, end, validator);
            }
        }
        // Scan no further than the WAL's size now: a scan that followed an application
        // writing faster than it reads would never end (the rest waits for the next sync).
        let wal_len = wal.metadata().map_err(|e| io_err(&self.wal_path, e))?.len();
        let mut tmp_name = shadow.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut pending = Pending {
            mem: Vec::new(),
            spill: None,
        };
        let mut out: Option<File> = None;
        let mut size = shadow_size;
        let res = (|| -> Result<u64> {
            copy_valid_frames(
                &wal,
                &self.wal_path,
                shadow_size,
                Some(wal_len.saturating_sub(shadow_size)),
                &mut validator,
                |frames, commit| {
                    pending.push(frames, &tmp)?;
                    if !commit {
                        return Ok(());
                    }
                    if out.is_none() {
                        let f = OpenOptions::new()
                            .write(true)
                            .open(shadow)
                            .map_err(|e| io_err(shadow, e))?;
                        f.set_len(size).map_err(|e| io_err(shadow, e))?;
                        out = Some(f);
                    }
                    if let Some(f) = out.as_mut() {
                        f.seek(SeekFrom::Start(size))
                            .map_err(|e| io_err(shadow, e))?;
                        let n = pending.len();
                        pending.drain_into(f, shadow)?;
                        size += n;
                    }
                    Ok(())
                },
            )?;
            if let Some(f) = out.as_mut() {
                f.sync_data().map_err(|e| io_err(shadow, e))?;
            }
            Ok(size)
        })();
        pending.discard();
        res
    }

    pub(super) fn shm_path(&self) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push("-shm");
        PathBuf::from(s)
    }

    /// Copy the frames of `wal` in `[from, end)`, known committed from the wal-index (see
    /// [`shm_committed_end`]), straight into `shadow`, validating them on the way. Frames
    /// past `end` (an uncommitted transaction, however large) are not read at all. If a frame
    /// does not validate the shadow is cut back to the last commit frame before it.
    pub(super) fn copy_committed(
        &self,
        wal: File,
        shadow: &Path,
        from: u64,
        end: u64,
        mut validator: FrameValidator,
    ) -> Result<u64> {
        if end == from {
            return Ok(from);
        }
        let mut f = OpenOptions::new()
            .write(true)
            .open(shadow)
            .map_err(|e| io_err(shadow, e))?;
        f.set_len(from).map_err(|e| io_err(shadow, e))?;
        f.seek(SeekFrom::Start(from))
            .map_err(|e| io_err(shadow, e))?;
        let (mut size, mut committed) = (from, from);
        copy_valid_frames(
            &wal,
            &self.wal_path,
            from,
            Some(end - from),
            &mut validator,
            |frames, commit| {
                f.write_all(frames).map_err(|e| io_err(shadow, e))?;
                size += frames.len() as u64;
                if commit {
                    committed = size;
                }
                Ok(())
            },
        )?;
        if committed < size {
            f.set_len(committed).map_err(|e| io_err(shadow, e))?;
        }
        f.sync_data().map_err(|e| io_err(shadow, e))?;
        Ok(committed)
    }

    /// Trim the shadow file to its last commit frame (after a crash mid-append).
    pub(super) fn trim_to_commit(&self, shadow: &Path, size: u64) -> Result<u64> {
        let fsz = self.frame_size();
        let mut f = File::open(shadow).map_err(|e| io_err(shadow, e))?;
        let mut end = WAL_HEADER_SIZE as u64;
        let mut off = WAL_HEADER_SIZE as u64;
        let mut fh = [0u8; 8];
        while off + fsz <= size {
            f.seek(SeekFrom::Start(off))
                .map_err(|e| io_err(shadow, e))?;
            f.read_exact(&mut fh).map_err(|e| io_err(shadow, e))?;
            off += fsz;
            if fh[4..8] != [0, 0, 0, 0] {
                end = off;
            }
        }
        drop(f);
        if end < size {
            tracing::warn!(path = %shadow.display(), from = size, to = end,
                "trimming shadow wal to last commit");
            let f = OpenOptions::new()
                .write(true)
                .open(shadow)
                .map_err(|e| io_err(shadow, e))?;
            f.set_len(end).map_err(|e| io_err(shadow, e))?;
            f.sync_all().map_err(|e| io_err(shadow, e))?;
        }
        Ok(end)
    }

    /// Start a shadow file for `index` with the real WAL's header, then copy its frames.
    pub(super) fn start_shadow_index(&self, g: &Generation, index: u32) -> Result<u64> {
        let hdr = read_at(&self.wal_path, 0, WAL_HEADER_SIZE)?.ok_or_else(|| {
            Error::corrupt(
                self.wal_path.display().to_string(),
                "primary wal header: EOF",
            )
        })?;
        WalHeader::parse(&hdr)
            .map_err(|r| Error::corrupt(self.wal_path.display().to_string(), r))?;
        let dir = self.shadow_dir(g);
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let p = self.shadow_path(g, index);
        let mut f = File::create(&p).map_err(|e| io_err(&p, e))?;
        f.write_all(&hdr)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(&p, e))?;
        drop(f);
        sync_dir(&dir);
        self.copy_to_shadow(&p, WAL_HEADER_SIZE as u64)
    }

    /// Local shadow-WAL retention: keep what the slowest replica needs (minus one extra
    /// older file, as Litestream), but never more than `max_shadow_wal_bytes` of old files.
    pub(super) fn clean_shadow(
        &self,
        pos: &ShadowPos,
        replica_indexes: &[Option<(Generation, u32)>],
    ) {
        let g = &pos.generation;
        let Ok(indexes) = self.shadow_indexes(g) else {
            return;
        };
        let mut min: Option<u32> = None;
        for r in replica_indexes {
            let i = match r {
                Some((rg, i)) if rg == g => *i,
                _ => 0,
            };
            min = Some(min.map_or(i, |m| m.min(i)));
        }
        let keep_from = match min {
            Some(m) if m > 0 => m - 1,
            _ => 0,
        };
        let mut budget = self.opts.max_shadow_wal_bytes;
        let mut over = false;
        for &i in indexes.iter().rev() {
            if i + 1 >= pos.index {
                continue; // the current index and the one before are always kept
            }
            let p = self.shadow_path(g, i);
            let sz = file_size(&p).ok().flatten().unwrap_or(0);
            if !over && sz <= budget {
                budget -= sz;
            } else {
                over = true;
            }
            if i < keep_from || over {
                if over && i >= keep_from {
                    tracing::warn!(db = %self.path.display(), index = i,
                        "shadow wal retention bound reached, removing wal still needed by a lagging replica");
                }
                if let Err(e) = fs::remove_file(&p) {
                    tracing::warn!(path = %p.display(), error = %e, "clean: remove shadow wal");
                }
            }
        }
    }
}

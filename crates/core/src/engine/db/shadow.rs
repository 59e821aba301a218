//! Reading the real WAL into the shadow WAL: each WAL byte read once into one chunk buffer,
//! validated and appended; the wal-index bounds the committed end; the shadow WAL's local
//! retention.

use super::*;

pub(super) const PENDING_SPILL: usize = 8 << 20;
/// Reads of the `-shm` wal-index header before falling back to scanning the WAL.
pub(super) const SHM_READ_ATTEMPTS: usize = 8;

/// Bytes of WAL read per `read` call by [`copy_valid_frames`] (rounded down to whole frames).
pub(super) const COPY_CHUNK: usize = 512 << 10;

/// Read whole frames of `wal` from `from` (at most `limit` bytes when given) and hand the valid
/// frames to `sink` as `sink(frames, ends_with_commit)`: per chunk read, at most one run that
/// ends with the chunk's last commit frame, then at most one run of the frames after it (not
/// committed yet as far as this chunk shows). Stops at the end of the file (a partial frame is
/// not read), at `limit`, or before the first frame that does not validate. Each WAL byte is
/// read once, straight into one chunk buffer: the frames are validated and handed on from
/// there (no per-frame copies), and the sink writes a whole chunk at once (a write per commit
/// was one system call per application transaction).
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
        // End of the last commit frame validated in this chunk, and of the valid frames.
        let mut committed = 0;
        let mut at = 0;
        let mut invalid = false;
        while at < whole {
            match validator.check(&buf[at..at + fsz]) {
                Ok(fh) => {
                    at += fsz;
                    if fh.commit_size != 0 {
                        committed = at;
                    }
                }
                Err(reason) => {
                    tracing::trace!(%reason, offset = off + at as u64, "copy shadow: stop at invalid frame");
                    invalid = true;
                    break;
                }
            }
        }
        if committed > 0 {
            sink(&buf[..committed], true)?;
        }
        if committed < at {
            sink(&buf[committed..at], false)?;
        }
        if invalid || whole < want {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{encode_frame, encode_header, FrameHeader};

    const PAGE: u32 = 512;

    /// A WAL of `header` with `frames` frames continuing from `prev`, a commit every `every`
    /// frames; returns the bytes (after `raw_header`) and the last checksum.
    fn wal_bytes(
        header: &WalHeader,
        raw_header: &[u8],
        prev: (u32, u32),
        frames: u32,
        every: u32,
    ) -> (Vec<u8>, (u32, u32)) {
        let mut out = raw_header.to_vec();
        let mut sum = prev;
        for i in 0..frames {
            let commit = if (i + 1) % every == 0 { i + 1 } else { 0 };
            let page = vec![(i % 251) as u8; PAGE as usize];
            let (f, s) = encode_frame(header, sum, i + 1, commit, &page);
            out.extend_from_slice(&f);
            sum = s;
        }
        (out, sum)
    }

    fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> (File, PathBuf) {
        let p = dir.join(name);
        fs::write(&p, bytes).expect("write wal");
        (File::open(&p).expect("open wal"), p)
    }

    /// Every call of the sink, with the frames it got.
    fn copy_all(
        wal: &File,
        path: &Path,
        from: u64,
        limit: Option<u64>,
        v: &mut FrameValidator,
    ) -> Vec<(Vec<u8>, bool)> {
        let mut calls = Vec::new();
        copy_valid_frames(wal, path, from, limit, v, |b, c| {
            calls.push((b.to_vec(), c));
            Ok(())
        })
        .expect("copy");
        calls
    }

    /// The sink gets at most two runs per chunk read (not one per commit: a write system call
    /// per application transaction was the copy's main cost), the runs hold exactly the valid
    /// frames in order, a committed run ends with a commit frame, and the copy stops before a
    /// frame that does not validate.
    #[test]
    fn the_copy_hands_on_whole_chunks_and_stops_at_an_invalid_frame() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = encode_header(false, PAGE, 0, (7, 9));
        let h = WalHeader::parse(&raw).expect("header");
        let fsz = h.frame_size();
        // 3,001 frames: a commit every 2 frames, the last frame uncommitted.
        let (mut bytes, last) = wal_bytes(&h, &raw, h.checksum, 3001, 2);
        let valid_end = bytes.len();
        // Then a frame with a broken checksum, then a valid-looking frame after it.
        let (mut bad, _) = encode_frame(&h, last, 1, 1, &[1u8; PAGE as usize]);
        bad[WAL_FRAME_HEADER_SIZE + 3] ^= 0xff;
        bytes.extend_from_slice(&bad);
        let (good, _) = encode_frame(&h, last, 1, 1, &[1u8; PAGE as usize]);
        bytes.extend_from_slice(&good);
        let (wal, path) = write_file(dir.path(), "a-wal", &bytes);

        let mut v = FrameValidator::new(h);
        let calls = copy_all(&wal, &path, WAL_HEADER_SIZE as u64, None, &mut v);
        let chunks = (valid_end - WAL_HEADER_SIZE).div_ceil((COPY_CHUNK / fsz) * fsz);
        assert!(
            calls.len() <= 2 * chunks,
            "{} sink calls for {chunks} chunks of 1,500 commits",
            calls.len()
        );
        let joined: Vec<u8> = calls.iter().flat_map(|(b, _)| b.clone()).collect();
        assert_eq!(
            joined,
            bytes[WAL_HEADER_SIZE..valid_end],
            "exactly the valid frames"
        );
        for (b, commit) in &calls {
            assert_eq!(b.len() % fsz, 0);
            let lastf = FrameHeader::parse(&b[b.len() - fsz..]);
            assert_eq!(
                *commit,
                lastf.commit_size != 0,
                "a run's flag is its last frame's"
            );
        }
        let (tail, commit) = calls.last().expect("calls");
        assert!(
            !commit && tail.len() == fsz,
            "the uncommitted last frame comes alone"
        );
        assert_eq!(
            v.running_checksum(),
            last,
            "the chain stopped at the last valid frame"
        );
    }

    /// A copy in two parts (two syncs: the second resumes the checksum chain from the last
    /// frame the first one copied) gives the same frames as one pass; after a WAL restart
    /// (new salts) a validator of the new header accepts the new frames and rejects the old
    /// WAL's frames left past them.
    #[test]
    fn a_resumed_copy_continues_the_chain_across_syncs_and_a_wal_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = encode_header(true, PAGE, 0, (1, 2));
        let h = WalHeader::parse(&raw).expect("header");
        let fsz = h.frame_size() as u64;
        let (bytes, last) = wal_bytes(&h, &raw, h.checksum, 2000, 4);
        let (wal, path) = write_file(dir.path(), "b-wal", &bytes);
        let hdr = WAL_HEADER_SIZE as u64;

        let mut one = FrameValidator::new(h);
        let whole: Vec<u8> = copy_all(&wal, &path, hdr, None, &mut one)
            .into_iter()
            .flat_map(|(b, _)| b)
            .collect();
        assert_eq!(one.running_checksum(), last);

        let split = 777 * fsz;
        let mut first = FrameValidator::new(h);
        let mut two: Vec<u8> = copy_all(&wal, &path, hdr, Some(split), &mut first)
            .into_iter()
            .flat_map(|(b, _)| b)
            .collect();
        // The second sync knows only the last copied frame's checksum (from the shadow WAL).
        let fh = FrameHeader::parse(&two[two.len() - fsz as usize..]);
        let mut second = FrameValidator::resume(h, fh.checksum);
        two.extend(
            copy_all(&wal, &path, hdr + split, None, &mut second)
                .into_iter()
                .flat_map(|(b, _)| b),
        );
        assert_eq!(two, whole, "two syncs copy what one does");
        assert_eq!(second.running_checksum(), last);

        // The application restarts the WAL: a new header (salts), 10 new frames over the start
        // of the old ones.
        let raw2 = encode_header(true, PAGE, 1, (3, 4));
        let h2 = WalHeader::parse(&raw2).expect("header 2");
        let (mut restarted, _) = wal_bytes(&h2, &raw2, h2.checksum, 10, 5);
        let keep = restarted.len();
        restarted.extend_from_slice(&bytes[keep..]);
        let (wal2, path2) = write_file(dir.path(), "c-wal", &restarted);
        let mut v2 = FrameValidator::new(h2);
        let copied: Vec<u8> = copy_all(&wal2, &path2, hdr, None, &mut v2)
            .into_iter()
            .flat_map(|(b, _)| b)
            .collect();
        assert_eq!(
            copied,
            restarted[WAL_HEADER_SIZE..keep],
            "only the new WAL's frames"
        );
    }
}

//! Generation and position bookkeeping: the `generation` file, the shadow WAL indexes, and
//! the start-up and per-sync checks that decide between the current generation, a new index
//! and a new generation.

use super::*;

pub(super) struct VerifyInfo {
    generation: Option<Generation>,
    reason: Option<&'static str>,
    restart: bool,
    index: u32,
    shadow_size: u64,
    wal_size: u64,
}

impl DbCore {
    /// The current generation from the `generation` file (trusted only if exactly 16 hex).
    pub(crate) fn current_generation(&self) -> Option<Generation> {
        let s = fs::read_to_string(self.meta.join("generation")).ok()?;
        Generation::parse(s.trim())
    }

    pub(super) fn write_generation(&self, g: &Generation) -> Result<()> {
        let tmp = self.meta.join("generation.tmp");
        let dst = self.meta.join("generation");
        let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(format!("{g}\n").as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        fs::rename(&tmp, &dst).map_err(|e| io_err(&dst, e))?;
        sync_dir(&self.meta);
        Ok(())
    }

    pub(super) fn clear_generation(&self) {
        let _ = fs::remove_file(self.meta.join("generation"));
    }

    /// Clear the `generation` file if `g` is still the current generation, so that the next
    /// sync starts a new one (a replica is ahead of the local state).
    pub(crate) fn abandon_generation(&self, g: &Generation) {
        if self.current_generation().as_ref() == Some(g) {
            tracing::warn!(db = %self.path.display(), generation = %g, "abandoning generation");
            self.clear_generation();
        }
    }

    /// Shadow WAL indexes of a generation, ascending.
    pub(crate) fn shadow_indexes(&self, g: &Generation) -> Result<Vec<u32>> {
        let dir = self.shadow_dir(g);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir, e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| io_err(&dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_suffix(".wal") {
                if hex.len() == 8 {
                    if let Ok(i) = u32::from_str_radix(hex, 16) {
                        out.push(i);
                    }
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    pub(super) fn verify(&self) -> Result<VerifyInfo> {
        let mut info = VerifyInfo {
            generation: None,
            reason: None,
            restart: false,
            index: 0,
            shadow_size: 0,
            wal_size: 0,
        };
        let Some(g) = self.current_generation() else {
            info.reason = Some("no generation exists");
            return Ok(info);
        };
        info.generation = Some(g.clone());
        let wal_size = file_size(&self.wal_path)?.unwrap_or(0);
        info.wal_size = wal_size;
        let Some(&index) = self.shadow_indexes(&g)?.last() else {
            info.reason = Some("no shadow wal");
            return Ok(info);
        };
        info.index = index;
        if index >= MAX_INDEX {
            info.reason = Some("max index exceeded");
            return Ok(info);
        }
        let shadow = self.shadow_path(&g, index);
        let Some(raw) = file_size(&shadow)? else {
            info.reason = Some("no shadow wal");
            return Ok(info);
        };
        info.shadow_size = align_frame(raw, self.page_size);
        if info.shadow_size < WAL_HEADER_SIZE as u64 {
            info.reason = Some("short shadow wal");
            return Ok(info);
        }
        let real_hdr = read_at(&self.wal_path, 0, WAL_HEADER_SIZE)?;
        let shadow_hdr = read_at(&shadow, 0, WAL_HEADER_SIZE)?;
        info.restart = real_hdr != shadow_hdr;
        if info.restart && self.continuity {
            // The application restarted the WAL after we had copied all of it (see the
            // module docs): a new index, not a new generation.
            return Ok(info);
        }
        if info.restart && !self.continuity {
            // Litestream's start-up check (verifyHeadersMatch) clears the generation.
            tracing::warn!(db = %self.path.display(),
                "init: cannot determine last wal position, clearing generation");
            self.clear_generation();
            info.reason = Some("no generation exists");
            return Ok(info);
        }
        if info.shadow_size > align_frame(wal_size, self.page_size) {
            info.reason = Some("wal truncated by another process");
            return Ok(info);
        }
        if info.shadow_size > WAL_HEADER_SIZE as u64 {
            let fsz = self.frame_size();
            let off = info.shadow_size - fsz;
            let a = read_at(&self.wal_path, off, fsz as usize)?;
            let b = read_at(&shadow, off, fsz as usize)?;
            if a.is_none() || a != b {
                info.reason = Some("wal overwritten by another process");
                return Ok(info);
            }
        }
        Ok(info)
    }

    pub(super) fn create_generation(&mut self, reason: &str) -> Result<ShadowPos> {
        let g = Generation::random();
        let size = self.start_shadow_index(&g, 0)?;
        self.write_generation(&g)?;
        self.clean_generations(&g);
        tracing::info!(db = %self.path.display(), generation = %g, reason, "sync: new generation");
        Ok(ShadowPos {
            generation: g,
            index: 0,
            size,
        })
    }

    pub(super) fn clean_generations(&self, keep: &Generation) {
        let dir = self.generations_dir();
        let Ok(rd) = fs::read_dir(&dir) else { return };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy() != keep.as_str() {
                if let Err(err) = fs::remove_dir_all(e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "clean: remove generation");
                }
            }
        }
    }

    /// Verify and copy new frames into the shadow WAL (handling a WAL restart and the
    /// generation rules). Returns (position, changed, real WAL size before copy).
    pub(super) fn copy_frames(&mut self) -> Result<(ShadowPos, bool, u64)> {
        let info = self.verify()?;
        if let Some(reason) = info.reason {
            let pos = self.create_generation(reason)?;
            self.trimmed = true;
            return Ok((pos, true, info.wal_size));
        }
        let g = info
            .generation
            .clone()
            .ok_or_else(|| Error::InvalidArgument("no generation".into()))?;
        let shadow = self.shadow_path(&g, info.index);
        let mut size = info.shadow_size;
        if !self.trimmed {
            size = self.trim_to_commit(&shadow, size)?;
            self.trimmed = true;
        }
        let new_size = self.copy_to_shadow(&shadow, size)?;
        let mut changed = new_size != size;
        let mut pos = ShadowPos {
            generation: g.clone(),
            index: info.index,
            size: new_size,
        };
        if info.restart {
            let index = info.index + 1;
            let size = self.start_shadow_index(&g, index)?;
            tracing::debug!(db = %self.path.display(), index, "sync: new wal index");
            pos = ShadowPos {
                generation: g,
                index,
                size,
            };
            changed = true;
        }
        self.uncommitted = self.frame_after(pos.size);
        Ok((pos, changed, info.wal_size))
    }
}

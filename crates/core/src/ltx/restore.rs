//! Restore from an LTX plan: a streaming k-way merge of the plan's files that writes every
//! page once, straight into the output file.
//!
//! Each file is decoded front to back ([`LtxDecoder`]); for each page number the newest file
//! of the plan that holds it wins, older copies are decoded (their checksums still count)
//! but not written. Pages beyond the last file's commit size are dropped; every page from 1
//! to the commit size (except the lock page, left zero) must come from some file. Small files
//! are downloaded ahead with retries (within a memory budget), larger ones stream and are
//! reopened where they broke off on a retryable error. The output is a temporary file beside
//! the target, synced and linked into place only after every file's trailer verified, as for
//! the v0.3 restore ([`crate::restore`]).

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;
use tokio_util::io::SyncIoBridge;

use crate::error::{Error, Result};
use crate::replica_client::{ByteStream, ReplicaClient};
use crate::restore::{
    prepare_output, publish, OutputFile, ProgressTracker, ReopeningReader, RestoreOptions,
    PREFETCH_MAX,
};

use super::compact::merge_newest;
use super::decoder::{lock_pgno, LtxDecoder, HEADER_SIZE};
use super::keys::{format_txid, LtxFileInfo};

/// Memory for small files downloaded ahead of the merge.
const PREFETCH_BUDGET: u64 = 32 << 20;
/// Read buffer of a streamed file.
const STREAM_BUFFER: usize = 256 << 10;
/// Consecutive pages are written in runs of up to this many bytes.
const WRITE_RUN: usize = 1 << 20;

/// What an LTX restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxRestoreOutcome {
    /// TXID the database was restored to (the plan's last max TXID).
    pub txid: u64,
    /// Files merged.
    pub files: usize,
    /// Page size of the database.
    pub page_size: u32,
    /// Size of the restored database in bytes.
    pub db_size: u64,
}

/// A plan file's source: downloaded ahead, or a stream opened ahead and read as the merge
/// goes.
enum Source {
    Data(Vec<u8>),
    Stream(ByteStream),
}

/// Restore `plan` (oldest first, as [`super::plan::plan_from_levels`] returns it) from
/// `client` into `opts.output`; `opts.generation`/`opts.index` do not apply.
pub async fn restore_plan(
    client: Arc<dyn ReplicaClient>,
    plan: &[LtxFileInfo],
    opts: &RestoreOptions,
) -> Result<LtxRestoreOutcome> {
    let kind = client.kind();
    check_plan(kind, plan)?;
    let output = opts.output.clone();
    let (dir, tmp, file, mut guard) = prepare_output(&output)?;
    let started = Instant::now();
    let txid = plan.last().map_or(0, |f| f.max_txid);
    tracing::info!(
        files = plan.len(),
        txid = %format_txid(txid),
        path = %tmp.display(),
        "restoring ltx files"
    );
    let sources = prefetch(client.as_ref(), plan, opts).await?;
    let tracker = ProgressTracker::new(
        opts.progress.clone(),
        plan.iter().map(|f| f.size).sum::<u64>(),
    );
    let (handle, retry, files) = (Handle::current(), opts.retry, plan.to_vec());
    let merged = tokio::task::spawn_blocking(move || -> Result<(u32, u64)> {
        let mut readers: Vec<Box<dyn Read + Send>> = Vec::with_capacity(files.len());
        for (f, src) in files.iter().zip(sources) {
            readers.push(match src {
                Source::Data(d) => Box::new(std::io::Cursor::new(d)),
                Source::Stream(first) => {
                    let (c, h, key) = (client.clone(), handle.clone(), f.key(kind));
                    let first = Box::new(SyncIoBridge::new_with_handle(first, h.clone()));
                    let reopen = ReopeningReader::new(key.clone(), retry, move || {
                        let stream = h.block_on(c.open_object(&key))?;
                        Ok(Box::new(SyncIoBridge::new_with_handle(stream, h.clone()))
                            as Box<dyn Read + Send>)
                    });
                    Box::new(reopen.opened(first))
                }
            });
        }
        let mut decoders = Vec::with_capacity(files.len());
        for (f, r) in files.iter().zip(readers) {
            let cap = (f.size as usize).clamp(4096, STREAM_BUFFER);
            decoders.push(LtxDecoder::with_capacity(
                f.key(kind),
                tracker.reader(r),
                cap,
            )?);
        }
        let (page_size, size) = merge(&files, &mut decoders, &file)?;
        file.sync_all()?;
        tracker.finish();
        Ok((page_size, size))
    })
    .await;
    let (page_size, db_size) = match merged {
        Ok(r) => r?,
        Err(e) => {
            return Err(Error::io(
                tmp.display().to_string(),
                std::io::Error::other(format!("restore task failed: {e}")),
            ))
        }
    };
    tracing::info!(path = %output.display(), "renaming database from temporary location");
    publish(&tmp, &output)?;
    guard.armed = false;
    // The directory entry must be durable too; an error here is the command's error.
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir.display().to_string(), e))?;
    tracing::info!(txid = %format_txid(txid), elapsed = ?started.elapsed(), "restore complete");
    Ok(LtxRestoreOutcome {
        txid,
        files: plan.len(),
        page_size,
        db_size,
    })
}

/// The plan must start at a snapshot (TXID 1) and be contiguous.
fn check_plan(kind: &str, plan: &[LtxFileInfo]) -> Result<()> {
    let Some(first) = plan.first() else {
        return Err(Error::NoMatchingBackups);
    };
    if first.min_txid != 1 {
        return Err(Error::corrupt(
            first.key(kind),
            format!(
                "no snapshot: the restore plan starts at TXID {}, not at a full database",
                format_txid(first.min_txid)
            ),
        ));
    }
    for pair in plan.windows(2) {
        if pair[1].min_txid > pair[0].max_txid.saturating_add(1) {
            return Err(Error::corrupt(
                pair[1].key(kind),
                format!(
                    "non-contiguous ltx files: have up to {} but this file starts at {}",
                    format_txid(pair[0].max_txid),
                    format_txid(pair[1].min_txid)
                ),
            ));
        }
    }
    for f in plan {
        if f.size < HEADER_SIZE as u64 {
            return Err(Error::corrupt(
                f.key(kind),
                format!("{} bytes, smaller than an LTX header", f.size),
            ));
        }
    }
    Ok(())
}

/// Download the small files of `plan` ahead (bounded parallelism, retries, memory budget) and
/// open the others, all at once: a server's time to first byte (s3s-fs hashes a whole object
/// before it answers) then overlaps for every file instead of adding up file after file.
async fn prefetch(
    client: &dyn ReplicaClient,
    plan: &[LtxFileInfo],
    opts: &RestoreOptions,
) -> Result<Vec<Source>> {
    let mut budget = PREFETCH_BUDGET;
    let wanted: Vec<bool> = plan
        .iter()
        .map(|f| {
            let take = f.size <= PREFETCH_MAX && f.size <= budget;
            if take {
                budget -= f.size;
            }
            take
        })
        .collect();
    let kind = client.kind();
    let retry = opts.retry;
    futures::stream::iter(plan.iter().zip(wanted))
        .map(|(f, take)| async move {
            let key = f.key(kind);
            if !take {
                let stream = retry.run(&key, || client.open_object(&key)).await?;
                return Ok(Source::Stream(stream));
            }
            let data = retry
                .run(&key, || async {
                    let mut stream = client.open_object(&key).await?;
                    let mut buf = Vec::with_capacity(f.size as usize);
                    stream
                        .read_to_end(&mut buf)
                        .await
                        .map_err(|e| Error::Backend {
                            kind,
                            message: format!("reading {key}: {e}"),
                            retryable: true,
                            source: Some(Box::new(e)),
                        })?;
                    Ok(buf)
                })
                .await?;
            Ok(Source::Data(data))
        })
        .buffered(opts.parallelism.max(1))
        .try_collect()
        .await
}

/// Merge the decoders (oldest first) into `file`; returns (page size, database size).
fn merge<R: Read>(
    files: &[LtxFileInfo],
    decoders: &mut [LtxDecoder<R>],
    file: &OutputFile,
) -> Result<(u32, u64)> {
    let Some(first) = decoders.first() else {
        return Err(Error::NoMatchingBackups);
    };
    let page_size = first.header().page_size;
    let first_name = first.object().to_string();
    for (f, d) in files.iter().zip(decoders.iter()) {
        let h = d.header();
        if h.page_size != page_size {
            return Err(Error::corrupt(
                d.object(),
                format!(
                    "page size {} differs from the {page_size} of {first_name}",
                    h.page_size
                ),
            ));
        }
        if (h.min_txid, h.max_txid) != (f.min_txid, f.max_txid) {
            return Err(Error::corrupt(
                d.object(),
                format!(
                    "header covers TXIDs {}-{}, not those of its name",
                    format_txid(h.min_txid),
                    format_txid(h.max_txid)
                ),
            ));
        }
    }
    let commit = decoders.last().map_or(0, |d| d.header().commit);
    let lock = lock_pgno(page_size);
    let mut out = RunWriter::new(file, page_size as usize);
    let mut expected = 1u32;
    merge_newest(decoders, commit, |pgno, page| {
        if pgno != expected {
            return Err(missing_pages(expected, pgno - 1, files));
        }
        out.put(pgno, page)?;
        let next = pgno.saturating_add(1);
        expected = if next == lock { lock + 1 } else { next };
        Ok(())
    })?;
    out.flush()?;
    let last = if commit == lock { lock - 1 } else { commit };
    if commit > 0 && expected <= last {
        return Err(missing_pages(expected, last, files));
    }
    let size = u64::from(commit) * page_size as u64;
    file.set_len(size)?;
    Ok((page_size, size))
}

fn missing_pages(from: u32, to: u32, files: &[LtxFileInfo]) -> Error {
    let (min, max) = (
        files.first().map_or(0, |f| f.min_txid),
        files.last().map_or(0, |f| f.max_txid),
    );
    Error::corrupt(
        format!("ltx files {}-{}", format_txid(min), format_txid(max)),
        format!("pages {from}..={to} are in no file of the restore plan"),
    )
}

/// Collects consecutive pages into runs written with one `pwrite` each.
struct RunWriter<'a> {
    file: &'a OutputFile,
    page_size: usize,
    first: u32,
    buf: Vec<u8>,
}

impl<'a> RunWriter<'a> {
    fn new(file: &'a OutputFile, page_size: usize) -> Self {
        RunWriter {
            file,
            page_size,
            first: 0,
            buf: Vec::with_capacity(WRITE_RUN.max(page_size)),
        }
    }

    fn put(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        let next = self.first + (self.buf.len() / self.page_size) as u32;
        if !self.buf.is_empty() && (pgno != next || self.buf.len() + page.len() > WRITE_RUN) {
            self.flush()?;
        }
        if self.buf.is_empty() {
            self.first = pgno;
        }
        self.buf.extend_from_slice(page);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let at = u64::from(self.first - 1) * self.page_size as u64;
            self.file.write_all_at(&self.buf, at)?;
            self.buf.clear();
        }
        Ok(())
    }
}

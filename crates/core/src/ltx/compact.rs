//! Compaction: merge LTX files into one, as Litestream v0.5 builds its L1–L3 files.
//!
//! The inputs are decoded front to back together (`merge_newest`, the k-way merge the
//! restore uses too); for each page number the newest input that holds it wins, pages beyond
//! the last input's commit size are dropped, and the winners stream into an [`LtxEncoder`].
//! The output header follows spec §1.7: min TXID of the first input, max TXID, timestamp and
//! commit of the last (newest) one, WAL fields, salts and node ID 0.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Write};

use crate::error::{Error, Result};

use super::decoder::{LtxDecoder, LtxHeader};
use super::encoder::{LtxEncoder, LtxSummary};
use super::keys::format_txid;

/// Decode `decoders` (oldest first) together and call `emit` once per page number with the
/// newest copy, in ascending page order, skipping pages beyond `commit`. Every page of every
/// input is decoded, so each input's trailer checksum is verified by the time this returns.
pub(crate) fn merge_newest<R: Read>(
    decoders: &mut [LtxDecoder<R>],
    commit: u32,
    mut emit: impl FnMut(u32, &[u8]) -> Result<()>,
) -> Result<()> {
    let Some(first) = decoders.first() else {
        return Ok(());
    };
    let ps = first.header().page_size as usize;
    let mut bufs: Vec<Vec<u8>> = decoders.iter().map(|_| vec![0u8; ps]).collect();
    let mut heap: BinaryHeap<Reverse<(u32, Reverse<usize>)>> = BinaryHeap::new();
    for i in 0..decoders.len() {
        advance(decoders, &mut bufs, &mut heap, i)?;
    }
    while let Some(Reverse((pgno, Reverse(i)))) = heap.pop() {
        if pgno <= commit {
            emit(pgno, &bufs[i])?;
        }
        advance(decoders, &mut bufs, &mut heap, i)?;
        // Older copies of the same page: decode (for their checksums) and drop.
        while let Some(Reverse((p, Reverse(j)))) = heap.peek().copied() {
            if p != pgno {
                break;
            }
            heap.pop();
            advance(decoders, &mut bufs, &mut heap, j)?;
        }
    }
    Ok(())
}

fn advance<R: Read>(
    decoders: &mut [LtxDecoder<R>],
    bufs: &mut [Vec<u8>],
    heap: &mut BinaryHeap<Reverse<(u32, Reverse<usize>)>>,
    i: usize,
) -> Result<()> {
    if let Some(p) = decoders[i].next_page(&mut bufs[i])? {
        // Newest input first among equal page numbers: larger index, smaller Reverse.
        heap.push(Reverse((p, Reverse(i))));
    }
    Ok(())
}

/// The header of the compaction of `inputs` (oldest first); checks that they share a page
/// size and cover contiguous, ascending TXIDs.
pub fn compacted_header<R: Read>(inputs: &[LtxDecoder<R>]) -> Result<LtxHeader> {
    let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else {
        return Err(Error::InvalidArgument("compaction of no LTX files".into()));
    };
    let (f, l) = (first.header(), last.header());
    for pair in inputs.windows(2) {
        let (a, b) = (pair[0].header(), pair[1].header());
        if b.page_size != f.page_size {
            return Err(Error::corrupt(
                pair[1].object(),
                format!(
                    "page size {} differs from the {} of {}",
                    b.page_size,
                    f.page_size,
                    first.object()
                ),
            ));
        }
        if b.min_txid <= a.min_txid || b.min_txid > a.max_txid.saturating_add(1) {
            return Err(Error::corrupt(
                pair[1].object(),
                format!(
                    "non-contiguous ltx files: have up to {} but this file starts at {}",
                    format_txid(a.max_txid),
                    format_txid(b.min_txid)
                ),
            ));
        }
    }
    let max_txid = inputs
        .iter()
        .map(|d| d.header().max_txid)
        .max()
        .unwrap_or(0);
    Ok(LtxHeader::new(
        f.page_size,
        l.commit,
        f.min_txid,
        max_txid,
        l.timestamp_ms,
    ))
}

/// Merge `inputs` (oldest first) into one LTX file written to `out`; see the module docs.
/// `object` names the output in errors.
pub fn compact<R: Read, W: Write>(
    object: &str,
    inputs: &mut [LtxDecoder<R>],
    out: W,
) -> Result<(W, LtxSummary)> {
    let header = compacted_header(inputs)?;
    let mut enc = LtxEncoder::new(object, out, &header)?;
    merge_newest(inputs, header.commit, |pgno, page| {
        enc.write_page(pgno, page)
    })?;
    enc.finish()
}

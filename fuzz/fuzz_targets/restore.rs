//! Restore through the in-memory replica: a fixed one-page snapshot and the input as the WAL
//! (split into up to three segments by its first bytes), raw and LZ4-framed. Every run ends
//! in a restored file or an error; never a panic.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use litestream_core::lz4::compress_to_vec;
use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::MemoryClient;
use litestream_core::{Generation, Pos, ReplicaClient};

fn snapshot() -> Vec<u8> {
    let mut db = vec![0u8; 4096];
    db[..16].copy_from_slice(b"SQLite format 3\0");
    db[16..18].copy_from_slice(&4096u16.to_be_bytes());
    db
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (raw, rest) = (data[0] & 1 == 1, &data[3..]);
    let cut1 = (data[1] as usize * 16).min(rest.len());
    let cut2 = (cut1 + data[2] as usize * 64).min(rest.len());
    let parts = [&rest[..cut1], &rest[cut1..cut2], &rest[cut2..]];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("fuzz-restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    rt.block_on(async {
        let client = MemoryClient::new();
        let g = Generation::random();
        let stream =
            |b: Vec<u8>| -> litestream_core::ByteStream { Box::pin(std::io::Cursor::new(b)) };
        client
            .write_snapshot(&g, 0, stream(compress_to_vec(&snapshot())))
            .await
            .expect("snapshot");
        let mut offset = 0u64;
        for p in parts.iter().filter(|p| !p.is_empty()) {
            let body = if raw { p.to_vec() } else { compress_to_vec(p) };
            client
                .write_wal_segment(&Pos::new(g.clone(), 0, offset), stream(body))
                .await
                .expect("segment");
            offset += p.len() as u64;
        }
        let mut opts = RestoreOptions::new(dir.join("out.db"));
        opts.retry.max_attempts = 1;
        let _ = restore(Arc::new(client), &opts).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
});

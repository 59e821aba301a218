//! Storing LTX files on a replica under Litestream v0.5's key layout ([`super::keys`]).

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::replica_client::{ByteStream, ReplicaClient};

use super::decoder::LtxHeader;
use super::keys::{file_key, LtxFileInfo, MAX_LEVEL, SNAPSHOT_LEVEL};

/// The header timestamp as a time (milliseconds since the Unix epoch).
pub fn header_time(header: &LtxHeader) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(header.timestamp_ms) * 1_000_000).map_err(
        |e| {
            Error::InvalidArgument(format!(
                "LTX timestamp {} ms out of range: {e}",
                header.timestamp_ms
            ))
        },
    )
}

/// Store the LTX file whose header is `header`, read from `data`, at `level` of `client`:
/// key `ltx/<level>/<min>-<max>.ltx` (`<level %04x>/…` on s3), timestamp (file mtime, s3
/// `litestream-timestamp`) the header's, as Litestream v0.5 does. Level 9 holds snapshots
/// only (min TXID 1).
pub async fn upload_ltx_file(
    client: &dyn ReplicaClient,
    level: u8,
    header: &LtxHeader,
    data: ByteStream,
) -> Result<LtxFileInfo> {
    if level > MAX_LEVEL {
        return Err(Error::InvalidArgument(format!(
            "LTX level {level} above {MAX_LEVEL}"
        )));
    }
    if level == SNAPSHOT_LEVEL && !header.is_snapshot() {
        return Err(Error::InvalidArgument(format!(
            "level {SNAPSHOT_LEVEL} holds snapshots only, not TXIDs {}-{}",
            header.min_txid, header.max_txid
        )));
    }
    let created_at = header_time(header)?;
    let key = file_key(client.kind(), level, header.min_txid, header.max_txid);
    let size = client.write_object(&key, data, created_at).await?;
    tracing::debug!(%key, size, "uploaded ltx file");
    Ok(LtxFileInfo {
        level,
        min_txid: header.min_txid,
        max_txid: header.max_txid,
        size,
        created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::encoder::LtxEncoder;
    use crate::ltx::keys::list_ltx_files;
    use crate::ltx::testutil::page;
    use crate::memory::MemoryClient;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn uploads_under_the_level_key_with_the_header_time() {
        let client = MemoryClient::new();
        let h = LtxHeader::new(512, 1, 1, 4, 1_795_690_816_369);
        let mut enc = LtxEncoder::new("snap", Vec::new(), &h).unwrap();
        enc.write_page(1, &page(512, 1)).unwrap();
        let (bytes, sum) = enc.finish().unwrap();
        let info = upload_ltx_file(
            &client,
            9,
            &h,
            Box::pin(std::io::Cursor::new(bytes.clone())),
        )
        .await
        .unwrap();
        assert_eq!(info.size, sum.size);
        assert_eq!(
            list_ltx_files(&client, 9).await.unwrap(),
            vec![info.clone()]
        );
        assert_eq!(
            info.created_at.unix_timestamp_nanos(),
            1_795_690_816_369_000_000
        );
        let mut got = Vec::new();
        client
            .open_object("ltx/9/0000000000000001-0000000000000004.ltx")
            .await
            .unwrap()
            .read_to_end(&mut got)
            .await
            .unwrap();
        assert_eq!(got, bytes);
        let l0 = LtxHeader::new(512, 1, 5, 5, 1);
        let err = upload_ltx_file(&client, 9, &l0, Box::pin(std::io::Cursor::new(vec![])))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("snapshots only"), "{err}");
        let err = client
            .write_object(
                "../x",
                Box::pin(std::io::Cursor::new(vec![])),
                info.created_at,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid object key"), "{err}");
    }
}

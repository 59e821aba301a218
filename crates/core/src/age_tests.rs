use std::sync::Arc;

use age::secrecy::ExposeSecret;
use tokio::io::AsyncReadExt;

use super::*;
use crate::memory::MemoryClient;

fn keypair() -> (String, String) {
    let id = x25519::Identity::generate();
    let public = id.to_public().to_string();
    (id.to_string().expose_secret().to_string(), public)
}

fn keys(identities: &[&str], recipients: &[&str]) -> AgeKeys {
    let cfg = AgeConfig {
        identities: identities.iter().map(|s| s.to_string()).collect(),
        recipients: recipients.iter().map(|s| s.to_string()).collect(),
        identity_files: vec![],
    };
    AgeKeys::from_config(&cfg)
        .expect("parse")
        .expect("some keys")
}

fn stream(b: Vec<u8>) -> ByteStream {
    Box::pin(Cursor::new(b))
}

async fn read_all(mut s: ByteStream) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await?;
    Ok(v)
}

fn payload() -> Vec<u8> {
    let mut v = LZ4_MAGIC.to_vec();
    for i in 0..200_000u32 {
        v.extend_from_slice(format!("MARKER-{i}-").as_bytes());
    }
    v
}

#[tokio::test]
async fn round_trip_encrypts_at_rest() {
    let (sk, pk) = keypair();
    let mem = Arc::new(MemoryClient::new());
    let c = AgeClient::new(mem.clone(), keys(&[&sk], &[&pk]));
    let g = Generation::parse("0123456789abcdef").expect("gen");
    let data = payload();
    c.write_snapshot(&g, 1, stream(data.clone()))
        .await
        .expect("write");
    let raw = read_all(mem.open_snapshot(&g, 1).await.expect("raw"))
        .await
        .expect("read");
    assert!(raw.starts_with(b"age-encryption.org/v1\n-> X25519 "));
    assert!(
        !raw.windows(7).any(|w| w == b"MARKER-"),
        "plaintext at rest"
    );
    let back = read_all(c.open_snapshot(&g, 1).await.expect("open"))
        .await
        .expect("read");
    assert_eq!(back, data);

    let pos = Pos::new(g.clone(), 1, 0);
    c.write_wal_segment(&pos, stream(data.clone()))
        .await
        .expect("write wal");
    let back = read_all(c.open_wal_segment(&pos).await.expect("open"))
        .await
        .expect("read");
    assert_eq!(back, data);
}

#[tokio::test]
async fn wrong_identity_is_a_clear_error_naming_the_object() {
    let (_, pk) = keypair();
    let (other_sk, _) = keypair();
    let mem = Arc::new(MemoryClient::new());
    let g = Generation::parse("0123456789abcdef").expect("gen");
    AgeClient::new(mem.clone(), keys(&[], &[&pk]))
        .write_snapshot(&g, 2, stream(payload()))
        .await
        .expect("write");
    let c = AgeClient::new(mem.clone(), keys(&[&other_sk], &[]));
    let err = c.open_snapshot(&g, 2).await.err().expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("0123456789abcdef/00000002"), "{msg}");
    assert!(msg.contains("identit"), "{msg}");
    assert!(!msg.contains(&other_sk), "secret in error");

    let only_recipients = AgeClient::new(mem, keys(&[], &[&pk]));
    let err = only_recipients
        .open_snapshot(&g, 2)
        .await
        .err()
        .expect("fail");
    assert!(err.to_string().contains("no identities"), "{err}");
    assert!(matches!(err, Error::Unreadable(_)), "{err:?}");
}

#[tokio::test]
async fn plain_lz4_objects_are_read_as_is() {
    let (sk, _) = keypair();
    let mem = Arc::new(MemoryClient::new());
    let g = Generation::parse("0123456789abcdef").expect("gen");
    let data = payload();
    mem.write_snapshot(&g, 3, stream(data.clone()))
        .await
        .expect("write");
    let c = AgeClient::new(mem, keys(&[&sk], &[]));
    let back = read_all(c.open_snapshot(&g, 3).await.expect("open"))
        .await
        .expect("read");
    assert_eq!(back, data);
}

#[test]
fn secrets_never_in_debug_or_parse_errors() {
    let (sk, pk) = keypair();
    let cfg = AgeConfig {
        identities: vec![format!("# created by age-keygen\n{sk}\n")],
        recipients: vec![pk.clone()],
        identity_files: vec![],
    };
    assert!(!format!("{cfg:?}").contains(&sk));
    let k = AgeKeys::from_config(&cfg).expect("parse").expect("keys");
    assert!(k.can_decrypt() && k.encrypts());
    assert!(!format!("{k:?}").contains(&sk));
    let client = AgeClient::new(Arc::new(MemoryClient::new()), k);
    assert!(!format!("{client:?}").contains(&sk));

    let bad = format!("{}x", &sk[..sk.len() - 1]);
    let cfg = AgeConfig {
        identities: vec![bad.clone()],
        ..AgeConfig::default()
    };
    let err = AgeKeys::from_config(&cfg).expect_err("bad identity");
    assert!(!err.to_string().contains(&bad[10..]), "{err}");
    assert!(AgeKeys::from_config(&AgeConfig::default())
        .expect("empty")
        .is_none());
}

#[test]
fn identity_files_are_read() {
    let (sk, _) = keypair();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("key.txt");
    std::fs::write(&path, format!("# public key: x\n{sk}\n")).expect("write");
    let cfg = AgeConfig {
        identity_files: vec![path.display().to_string()],
        ..AgeConfig::default()
    };
    let k = AgeKeys::from_config(&cfg).expect("parse").expect("keys");
    assert!(k.can_decrypt() && !k.encrypts());
    std::fs::write(&path, "# nothing\n").expect("write");
    let err = AgeKeys::from_config(&cfg).expect_err("empty file");
    assert!(err.to_string().contains("holds no identity"), "{err}");
}

#[tokio::test]
async fn ltx_objects_are_refused_with_age() {
    let (sk, pk) = keypair();
    let c = AgeClient::new(Arc::new(MemoryClient::new()), keys(&[&sk], &[&pk]));
    let err = c
        .open_object("ltx/0/0000000000000001-0000000000000001.ltx")
        .await;
    let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("not supported for Litestream v0.5 (LTX)"),
        "{msg}"
    );
    assert!(c
        .list_objects("ltx/0")
        .await
        .expect("listing passes through")
        .is_empty());
}

#[tokio::test]
async fn a_truncated_object_fails_naming_it() {
    let (sk, pk) = keypair();
    let mem = Arc::new(MemoryClient::new());
    let c = AgeClient::new(mem.clone(), keys(&[&sk], &[&pk]));
    let g = Generation::parse("0123456789abcdef").expect("gen");
    c.write_snapshot(&g, 4, stream(payload()))
        .await
        .expect("write");
    let raw = read_all(mem.open_snapshot(&g, 4).await.expect("raw"))
        .await
        .expect("read");
    let cut = raw[..raw.len() - 100].to_vec();
    mem.write_snapshot(&g, 4, stream(cut))
        .await
        .expect("rewrite");
    let s = c.open_snapshot(&g, 4).await.expect("header is intact");
    let err = read_all(s).await.expect_err("truncated payload");
    assert!(
        err.to_string().contains("0123456789abcdef/00000004"),
        "{err}"
    );
}

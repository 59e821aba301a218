//! An application that writes to its own SQLite database and replicates it in-process to a
//! `file` replica with the embeddable engine.
//!
//! ```text
//! cargo run -p litestream-core --example embedded -- [DB_PATH] [REPLICA_DIR] [ROWS] [SNAPSHOT_MS]
//! ```
//!
//! With no arguments it uses a temporary directory and writes 100 rows. `ROWS = 0` writes
//! forever (the crash-safety test kills it with SIGKILL); after every few rows it waits until
//! they are durable on the replica and prints `durable <last id>`. `SNAPSHOT_MS` sets the
//! replica's `snapshot-interval` in milliseconds (default: none).
//!
//! age encryption of the replica, as Litestream v0.3.13's `age:` block: the environment
//! variable `EMBEDDED_AGE_RECIPIENT` (an `age1...` public key) encrypts, and
//! `EMBEDDED_AGE_IDENTITY_FILE` (a key file, as `identity-files:`) decrypts; recipients alone
//! write a replica this process cannot read back.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use litestream_core::config::AgeConfig;
use litestream_core::ReplicaClient;
use litestream_core::{AgeClient, AgeKeys};
use litestream_core::{DbOptions, ReplicaHandleConfig, ReplicaOptions, Replicator};
use litestream_file::FileClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tmp = tempfile::tempdir()?;
    let db_path = args
        .first()
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().join("app.db"));
    let replica_dir = args
        .get(1)
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().join("replica"));
    let rows: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let snapshot_ms: Option<u64> = args.get(3).map(|s| s.parse()).transpose()?;

    // The application's own connection.
    let conn = rusqlite::Connection::open(&db_path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
    )?;

    let mut client: Arc<dyn ReplicaClient> = Arc::new(FileClient::new(&replica_dir));
    let age = AgeConfig {
        recipients: std::env::var("EMBEDDED_AGE_RECIPIENT")
            .into_iter()
            .collect(),
        identity_files: std::env::var("EMBEDDED_AGE_IDENTITY_FILE")
            .into_iter()
            .collect(),
        ..AgeConfig::default()
    };
    if let Some(keys) = AgeKeys::from_config(&age).context("age")? {
        client = Arc::new(AgeClient::new(client, keys));
    }
    let replica = ReplicaHandleConfig {
        name: "file".into(),
        client,
        options: ReplicaOptions {
            sync_interval: Duration::from_millis(20),
            snapshot_interval: snapshot_ms.map(Duration::from_millis),
            ..Default::default()
        },
    };
    let opts = DbOptions {
        monitor_interval: Duration::from_millis(50),
        min_checkpoint_page_count: 64,
        ..Default::default()
    };
    let replicator = Replicator::start(&db_path, vec![replica], opts)
        .await
        .context("start replicator")?;

    let mut next: i64 = conn.query_row("SELECT IFNULL(MAX(id), 0) + 1 FROM events", [], |r| {
        r.get(0)
    })?;
    let mut written = 0u64;
    let mut out = std::io::stdout();
    loop {
        conn.execute(
            "INSERT INTO events (id, body) VALUES (?1, ?2)",
            rusqlite::params![next, format!("event {next} {}", "x".repeat(300))],
        )?;
        written += 1;
        if next % 5 == 0 || (rows > 0 && written == rows) {
            let pos = replicator.sync_and_wait(Duration::from_secs(30)).await?;
            writeln!(out, "durable {next} {pos}")?;
            out.flush()?;
        }
        next += 1;
        if rows > 0 && written >= rows {
            break;
        }
    }
    let pos = replicator.position();
    replicator.shutdown().await?;
    println!(
        "replicated {} rows of {} to {} (position {})",
        written,
        db_path.display(),
        replica_dir.display(),
        pos.map(|p| p.to_string()).unwrap_or_default()
    );
    Ok(())
}

//! One module per command, plus what several commands share: config loading, database
//! lookup and replica construction.

pub(crate) mod databases;
pub(crate) mod list;
pub(crate) mod ltx;
pub(crate) mod replicate;
pub(crate) mod restore;
pub(crate) mod version;

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use litestream_core::config::{self, Config, DbConfig, ReplicaConfig};
use litestream_core::ReplicaClient;

use crate::registry::{build_client, meta_dir};

/// Load the config file named by `-config` / `LITESTREAM_CONFIG` / the default path.
pub(crate) fn load_config(flag: Option<&str>, no_expand_env: bool) -> Result<Config> {
    let path = config::default_config_path(flag)?;
    let cfg = Config::load(&path, !no_expand_env)?;
    crate::logging::register_secrets(cfg.secrets());
    crate::logging::init(&cfg.logging)?;
    for key in cfg.unknown_keys() {
        match litestream_core::config_ltx::unsupported_v05_key(&key) {
            Some(what) => tracing::warn!(key = %key, feature = what, path = %path.display(),
                "Litestream v0.5 config key accepted but not supported here, ignored"),
            None => {
                tracing::warn!(key = %key, path = %path.display(), "unknown config key ignored")
            }
        }
    }
    Ok(cfg)
}

/// The database entry for `db_path` (made absolute) in `cfg`.
pub(crate) fn find_db<'c>(cfg: &'c Config, db_path: &str) -> Result<&'c DbConfig> {
    let abs = config::absolute_path(db_path)?;
    let abs = abs.to_string_lossy();
    cfg.db_by_path(&abs)
        .ok_or_else(|| anyhow!("database not found in config: {abs}"))
}

/// A named replica client.
pub(crate) struct NamedClient {
    pub(crate) name: String,
    pub(crate) client: Arc<dyn ReplicaClient>,
}

/// Build the clients of a database's replicas, optionally only the one named `only`.
pub(crate) async fn db_clients(db: &DbConfig, only: Option<&str>) -> Result<Vec<NamedClient>> {
    let mut out = Vec::new();
    let meta = meta_dir(&config::absolute_path(&db.path)?, db.meta_path.as_deref());
    for rc in db.all_replicas() {
        let rc = rc.resolve()?;
        let name = rc.display_name();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let client = build_client(&rc, Some(&meta))
            .await
            .with_context(|| format!("replica {name:?}"))?;
        out.push(NamedClient { name, client });
    }
    if let Some(o) = only {
        if out.is_empty() {
            bail!("replica {o:?} not found for database {:?}", db.path);
        }
    }
    Ok(out)
}

/// Build the client for a replica URL; its name is the backend type. `db` is the local
/// database the command is about (restore's `-o`), whose meta directory keeps SFTP host keys
/// trusted on first use.
pub(crate) async fn url_client(url: &str, db: Option<&str>) -> Result<NamedClient> {
    let rc = ReplicaConfig {
        url: Some(url.to_string()),
        ..Default::default()
    }
    .resolve()?;
    crate::logging::register_secrets(rc.secrets());
    let meta = match db {
        Some(d) => Some(meta_dir(&config::absolute_path(d)?, None)),
        None => None,
    };
    let client = build_client(&rc, meta.as_deref()).await?;
    Ok(NamedClient {
        name: rc.kind()?.to_string(),
        client,
    })
}

/// Render rows like Go's tabwriter (padding 2): every cell but the last is padded to the
/// widest cell of its column plus two spaces.
pub(crate) fn tabwrite(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] + 2 - cell.chars().count();
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_pads_like_go() {
        let rows = vec![
            vec![
                "name".to_string(),
                "generation".to_string(),
                "end".to_string(),
            ],
            vec!["file".to_string(), "abc".to_string(), "x".to_string()],
        ];
        assert_eq!(
            tabwrite(&rows),
            "name  generation  end\nfile  abc         x\n"
        );
    }
}

//! One module per command, plus what several commands share: config loading, database
//! lookup and replica construction.

pub(crate) mod databases;
pub(crate) mod list;
pub(crate) mod ltx;
pub(crate) mod replicate;
pub(crate) mod restore;
mod v05_keys;
pub(crate) mod version;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use litestream_core::config::{self, Config, DbConfig, ReplicaConfig};
use litestream_core::url::is_url;
use litestream_core::ReplicaClient;

use crate::flags::{Flag, Parsed};
use crate::registry::{build_client, meta_dir};

/// The commands that run in the async runtime (`version` and `help` are answered before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    Databases,
    Generations,
    Ltx,
    Replicate,
    Restore,
    Snapshots,
    Wal,
}

impl Name {
    /// The command called `name`, if there is one.
    pub(crate) fn from_arg(name: &str) -> Option<Name> {
        Some(match name {
            "databases" => Name::Databases,
            "generations" => Name::Generations,
            "ltx" => Name::Ltx,
            "replicate" => Name::Replicate,
            "restore" => Name::Restore,
            "snapshots" => Name::Snapshots,
            "wal" => Name::Wal,
            _ => return None,
        })
    }
}

/// A command with its arguments, parsed and checked once (flag syntax and values; no I/O).
#[derive(Debug)]
pub(crate) enum Command {
    Databases(databases::Args),
    Generations(list::ListArgs),
    Ltx(ltx::Args),
    Replicate(replicate::Args),
    Restore(restore::Args),
    Snapshots(list::ListArgs),
    Wal(list::WalArgs),
}

impl Command {
    /// Parse the arguments that follow the command's name.
    pub(crate) fn parse(name: Name, args: &[String]) -> Result<Command> {
        Ok(match name {
            Name::Databases => Command::Databases(databases::Args::parse(args)?),
            Name::Generations => Command::Generations(list::ListArgs::parse_generations(args)?),
            Name::Ltx => Command::Ltx(ltx::Args::parse(args)?),
            Name::Replicate => Command::Replicate(replicate::Args::parse(args)?),
            Name::Restore => Command::Restore(restore::Args::parse(args)?),
            Name::Snapshots => Command::Snapshots(list::ListArgs::parse_snapshots(args)?),
            Name::Wal => Command::Wal(list::WalArgs::parse(args)?),
        })
    }

    /// Run the command.
    pub(crate) async fn run(self) -> Result<ExitCode> {
        match self {
            Command::Databases(a) => databases::run(a),
            Command::Generations(a) => list::generations(a).await,
            Command::Ltx(a) => ltx::run(a).await,
            Command::Replicate(a) => replicate::run(a).await,
            Command::Restore(a) => restore::run(a).await,
            Command::Snapshots(a) => list::snapshots(a).await,
            Command::Wal(a) => list::wal(a).await,
        }
    }
}

/// `-config`, taken by every command that reads the config file.
pub(crate) const CONFIG: Flag = Flag::value("config", "Specifies the configuration file.");
/// `-no-expand-env`, taken with [`CONFIG`].
pub(crate) const NO_EXPAND_ENV: Flag = Flag::bool(
    "no-expand-env",
    "Disables environment variable expansion in configuration file.",
);

/// Which config file to read and how: `-config` and `-no-expand-env`.
#[derive(Debug, Clone)]
pub(crate) struct ConfigArgs {
    /// `-config` as given (`None`: `LITESTREAM_CONFIG` or the default path).
    path: Option<String>,
    /// False with `-no-expand-env`.
    expand_env: bool,
}

impl ConfigArgs {
    /// `-config` and `-no-expand-env` from parsed flags.
    pub(crate) fn from_flags(p: &Parsed) -> ConfigArgs {
        ConfigArgs {
            path: p.value(&CONFIG).map(str::to_string),
            expand_env: !p.is_set(&NO_EXPAND_ENV),
        }
    }

    /// True if `-config` was given (even empty): refused with a replica URL.
    pub(crate) fn given(&self) -> bool {
        self.path.is_some()
    }

    /// Load the config file named by `-config` / `LITESTREAM_CONFIG` / the default path, and
    /// switch logging to its settings.
    pub(crate) fn load(&self) -> Result<Config> {
        let path = config::default_config_path(self.path.as_deref())?;
        let cfg = Config::load(&path, self.expand_env)?;
        crate::logging::register_secrets(cfg.secrets());
        crate::logging::init(&cfg.logging)?;
        for key in cfg.unknown_keys() {
            match v05_keys::unsupported_v05_key(&key) {
                Some(what) => tracing::warn!(key = %key, feature = what, path = %path.display(),
                    "Litestream v0.5 config key accepted but not supported here, ignored"),
                None => {
                    tracing::warn!(key = %key, path = %path.display(), "unknown config key ignored")
                }
            }
        }
        Ok(cfg)
    }
}

/// The one positional argument of `restore` and the listing commands: a replica URL or the
/// path of a database in the config file.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A replica URL (no config file is read).
    Url(String),
    /// A database path, looked up in the config file.
    Db {
        /// The path as given.
        path: String,
        /// The config file to look it up in.
        config: ConfigArgs,
    },
}

impl Source {
    /// The single positional argument (`missing`: the error when there is none); `-config`
    /// with a replica URL is an error.
    pub(crate) fn parse(p: &Parsed, missing: &str) -> Result<Source> {
        let target = match p.args.as_slice() {
            [] => bail!("{missing}"),
            [one] => one.clone(),
            _ => bail!("too many arguments"),
        };
        let config = ConfigArgs::from_flags(p);
        if is_url(&target) {
            if config.given() {
                bail!("cannot specify a replica URL and the -config flag");
            }
            return Ok(Source::Url(target));
        }
        Ok(Source::Db {
            path: target,
            config,
        })
    }
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

#[cfg(test)]
mod parse_tests {
    use super::{Command, Name};

    fn err(name: Name, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Command::parse(name, &args)
            .expect_err("must be refused")
            .to_string()
    }

    /// Argument errors come out before any I/O, with v0.3.13's words and in its order.
    #[test]
    fn arguments_are_checked_at_the_edge_in_litestream_order() {
        let both = [
            "-index",
            "1",
            "-timestamp",
            "2024-01-01T00:00:00Z",
            "s3://b/p",
        ];
        assert_eq!(
            err(Name::Restore, &both),
            "cannot specify index & timestamp to restore"
        );
        assert_eq!(err(Name::Restore, &["s3://b/p"]), "output path required");
        assert_eq!(
            err(
                Name::Restore,
                &["-config", "x.yml", "-o", "o.db", "s3://b/p"]
            ),
            "cannot specify a replica URL and the -config flag"
        );
        assert_eq!(
            err(Name::Restore, &[]),
            "database path or replica URL required"
        );
        assert_eq!(
            err(Name::Replicate, &["/data/app.db"]),
            "must specify at least one replica URL for /data/app.db"
        );
        assert_eq!(
            err(Name::Wal, &["-generation", "xyz", "/data/app.db"]),
            "invalid generation name: \"xyz\""
        );
        assert_eq!(err(Name::Snapshots, &[]), "database path required");
        assert_eq!(err(Name::Databases, &["extra"]), "too many arguments");
        assert!(err(Name::Ltx, &["-level", "10", "s3://b/p"]).contains("between 0 and 9"));
        assert_eq!(
            err(Name::Generations, &["-x"]),
            "flag provided but not defined: -x"
        );
    }

    #[test]
    fn command_names_are_litestreams() {
        for name in [
            "databases",
            "generations",
            "ltx",
            "replicate",
            "restore",
            "snapshots",
            "wal",
        ] {
            assert!(Name::from_arg(name).is_some(), "{name}");
        }
        assert_eq!(Name::from_arg("version"), None);
        assert_eq!(Name::from_arg("restores"), None);
    }
}

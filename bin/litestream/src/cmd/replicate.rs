//! `litestream replicate`: replicate every database of the config file, or
//! `replicate DB_PATH REPLICA_URL...`; `-exec CMD` runs the application as a child process.
//! A thin layer over [`litestream_core::engine::Replicator`].

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use litestream_core::config::{self, DbConfig, ReplicaConfig};
use litestream_core::engine::{DbOptions, ReplicaHandleConfig, ReplicaOptions, Replicator};

use super::load_config;
use crate::flags::FlagSet;
use crate::registry::{build_client, meta_dir};

pub(crate) async fn run(args: &[String]) -> Result<ExitCode> {
    let fs = FlagSet::new("replicate", "[arguments] [DB_PATH REPLICA_URL [REPLICA_URL...]]")
        .value("config", "Specifies the configuration file.")
        .bool(
            "no-expand-env",
            "Disables environment variable expansion in configuration file.",
        )
        .value("exec", "Executes a subcommand. Litestream will exit when the child process exits. Useful for simple process management.");
    let p = fs.parse(args)?;

    let (dbs, exec, addr) = if !p.args.is_empty() {
        if p.get("config").is_some() {
            bail!("cannot specify a replica URL and the -config flag");
        }
        if p.args.len() < 2 {
            bail!("must specify at least one replica URL for {}", p.args[0]);
        }
        let db = DbConfig {
            path: config::absolute_path(&p.args[0])?
                .to_string_lossy()
                .into_owned(),
            replicas: p.args[1..]
                .iter()
                .map(|u| ReplicaConfig {
                    url: Some(u.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        (vec![db], p.get("exec").map(str::to_string), None)
    } else {
        let cfg = load_config(p.get("config"), p.is_set("no-expand-env"))?;
        let exec = p.get("exec").map(str::to_string).or(cfg.exec.clone());
        (cfg.dbs, exec, cfg.addr.filter(|a| !a.is_empty()))
    };
    tracing::info!(
        version = %super::version::version_string(),
        "litestream"
    );
    if dbs.is_empty() {
        tracing::error!("no databases specified in configuration");
    }

    // Metrics and health endpoint, when `addr` is set.
    let (stop_http, stop_http_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = &addr {
        let server = crate::http::Server::bind(addr).await?;
        tracing::info!(url = %crate::http::metrics_url(addr)?, "serving metrics on");
        tokio::spawn(server.run(stop_http_rx));
    }

    let mut replicators = Vec::new();
    for db in &dbs {
        let opts = DbOptions::from_config(db)?;
        let mut handles = Vec::new();
        for rc in db.all_replicas() {
            let rc = rc.resolve()?;
            let name = rc.display_name();
            if handles.iter().any(|h: &ReplicaHandleConfig| h.name == name) {
                bail!("duplicate replica name: {name:?}");
            }
            let meta = meta_dir(&config::absolute_path(&db.path)?, db.meta_path.as_deref());
            let client = build_client(&rc, Some(&meta))
                .await
                .with_context(|| format!("replica {name:?} of {}", db.path))?;
            handles.push(ReplicaHandleConfig {
                name,
                client,
                options: ReplicaOptions::from_config(&rc),
            });
        }
        let path = config::absolute_path(&db.path)?;
        tracing::info!(db = %path.display(), "initialized db");
        for h in &handles {
            tracing::info!(db = %path.display(), name = %h.name, r#type = h.client.kind(),
                sync_interval = ?h.options.sync_interval, "replicating to");
        }
        let r = Replicator::start(&path, handles, opts)
            .await
            .with_context(|| format!("cannot open db: {}", path.display()))?;
        replicators.push(r);
    }

    let mut child = match &exec {
        Some(cmd) => {
            let argv = shell_words(cmd)?;
            let Some((prog, rest)) = argv.split_first() else {
                bail!("cannot parse exec command: {cmd:?}");
            };
            Some(
                tokio::process::Command::new(prog)
                    .args(rest)
                    .spawn()
                    .with_context(|| format!("cannot exec: {cmd}"))?,
            )
        }
        None => None,
    };

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("install SIGINT handler")?;
    let mut code = ExitCode::SUCCESS;
    let signal = tokio::select! {
        _ = sigterm.recv() => Some(libc_sig::TERM),
        _ = sigint.recv() => Some(libc_sig::INT),
        st = async {
            match child.as_mut() {
                Some(c) => c.wait().await.ok(),
                None => std::future::pending().await,
            }
        } => {
            if let Some(st) = st {
                if !st.success() {
                    tracing::error!(status = %st, "subprocess exited with error");
                    code = ExitCode::from(1);
                }
            }
            child = None;
            None
        }
    };
    if let (Some(sig), Some(c)) = (signal, child.as_mut()) {
        tracing::info!("signal received, forwarding to subprocess");
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status();
        }
        if let Ok(st) = c.wait().await {
            if !st.success() {
                code = ExitCode::from(1);
            }
        }
    }
    if signal.is_some() {
        tracing::info!("signal received, litestream shutting down");
    }
    for r in replicators {
        if let Err(e) = r.shutdown().await {
            tracing::error!(error = %e, "shutdown error");
        }
    }
    for db in &dbs {
        litestream_core::metrics::unregister_db(&db.path);
    }
    let _ = stop_http.send(true);
    tracing::info!("litestream shut down");
    Ok(code)
}

/// Split a command line with shell quoting rules (single quotes, double quotes with
/// backslash escapes, backslashes), as Litestream's `shellwords.Parse`; no expansion.
fn shell_words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => bail!("invalid command line string"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => bail!("invalid command line string"),
                        },
                        Some(c) => cur.push(c),
                        None => bail!("invalid command line string"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => bail!("invalid command line string"),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

mod libc_sig {
    pub(super) const TERM: &str = "TERM";
    pub(super) const INT: &str = "INT";
}

//! `litestream replicate`: replicate every database of the config file, or
//! `replicate DB_PATH REPLICA_URL...`; `-exec CMD` runs the application as a child process.
//! A thin layer over [`litestream_core::engine::Replicator`].

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use litestream_core::config::{self, DbConfig, ReplicaConfig};
use litestream_core::engine::{
    DbOptions, ReplicaFormat, ReplicaHandleConfig, ReplicaOptions, Replicator,
};

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
        .value("exec", "Executes a subcommand. Litestream will exit when the child process exits. Useful for simple process management.")
        .value("format", "Format of new (empty) replica paths: v0.3 (default) or ltx (Litestream v0.5). A path that holds data keeps its format.");
    let p = fs.parse(args)?;
    let default_format = match p.get("format") {
        Some(f) => litestream_core::config_ltx::parse_format(f, "-format")?,
        None => ReplicaFormat::V3,
    };

    let (dbs, exec, addr, cfg) = if !p.args.is_empty() {
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
        (
            vec![db],
            p.get("exec").map(str::to_string),
            None,
            config::Config::default(),
        )
    } else {
        let cfg = load_config(p.get("config"), p.is_set("no-expand-env"))?;
        let exec = p.get("exec").map(str::to_string).or(cfg.exec.clone());
        let addr = cfg.addr.clone().filter(|a| !a.is_empty());
        (cfg.dbs.clone(), exec, addr, cfg)
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
        tracing::info!(url = %crate::http::metrics_url(addr)?, listen = %server.describe(),
            "serving metrics on");
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
            let options = ReplicaOptions::from_config(&rc)
                .with_ltx_config(&cfg, db, &rc, default_format)
                .with_context(|| format!("replica {name:?} of {}", db.path))?;
            if options.format == ReplicaFormat::Ltx && !client.supports_object_writes() {
                bail!(
                    "replica {name:?} of {}: the ltx format is not available for {} replicas yet",
                    db.path,
                    client.kind()
                );
            }
            handles.push(ReplicaHandleConfig {
                name,
                client,
                options,
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
        _ = sigterm.recv() => Some(libc::SIGTERM),
        _ = sigint.recv() => Some(libc::SIGINT),
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
        if let Some(pid) = c.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // A system call: a slim image has no `kill` program to run.
            // SAFETY: kill(2) takes plain integers; `pid` is our child, not yet reaped.
            if unsafe { libc::kill(pid, sig) } != 0 {
                let e = std::io::Error::last_os_error();
                tracing::error!(pid, error = %e, "cannot forward signal to subprocess");
            }
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
    // All at once: with many databases, one after the other takes minutes.
    let mut stopping = tokio::task::JoinSet::new();
    for r in replicators {
        stopping.spawn(r.shutdown());
    }
    while let Some(res) = stopping.join_next().await {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "shutdown error"),
            Err(e) => tracing::error!(error = %e, "shutdown task failed"),
        }
    }
    for db in &dbs {
        litestream_core::metrics::unregister_db(&db.path);
    }
    let _ = stop_http.send(true);
    tracing::info!("litestream shut down");
    Ok(code)
}

/// Split a command line as Litestream does (`shellwords.Parse` of go-shellwords v1.0.12,
/// without environment or backtick expansion):
///
/// - blanks (space, tab, CR, LF) separate words; `'...'` keeps everything literally;
///   `"..."` keeps blanks; a backslash outside single quotes takes the next character
///   literally (inside double quotes too: `"a\b"` is `ab`); `''` and `""` are empty words;
/// - an unquoted `;`, `&`, `|`, `<` or `>` ends the command: the rest is ignored (a word of
///   digits right before `>`, as in `2>`, too), as Litestream does; we log it;
/// - an unquoted `(` not right after `$`, or an unterminated quote or escape, is an error.
fn shell_words(s: &str) -> Result<Vec<String>> {
    #[derive(PartialEq)]
    enum Got {
        No,
        Single,
        Quoted,
    }
    let (mut args, mut buf) = (Vec::new(), String::new());
    let (mut escaped, mut dq, mut sq, mut bq, mut dollar) = (false, false, false, false, false);
    let mut got = Got::No;
    let mut rest: Option<&str> = None;
    for (i, r) in s.char_indices() {
        if escaped {
            buf.push(r);
            escaped = false;
            got = Got::Single;
            continue;
        }
        if r == '\\' {
            if sq {
                buf.push(r);
            } else {
                escaped = true;
            }
            continue;
        }
        if matches!(r, ' ' | '\t' | '\r' | '\n') {
            if sq || dq || bq || dollar {
                buf.push(r);
            } else if got != Got::No {
                args.push(std::mem::take(&mut buf));
                got = Got::No;
            }
            continue;
        }
        match r {
            '`' if !sq && !dq && !dollar => bq = !bq,
            ')' if !sq && !dq && !bq => dollar = !dollar,
            '(' if !sq && !dq && !bq => {
                if !dollar && buf.ends_with('$') {
                    dollar = true;
                    buf.push('(');
                    continue;
                }
                bail!("invalid command line string");
            }
            '"' if !sq && !dollar => {
                if dq {
                    got = Got::Quoted;
                }
                dq = !dq;
                continue;
            }
            '\'' if !dq && !dollar => {
                if sq {
                    got = Got::Quoted;
                }
                sq = !sq;
                continue;
            }
            ';' | '&' | '|' | '<' | '>' if !(sq || dq || bq || dollar) => {
                if r == '>' && buf.starts_with(|c: char| c.is_ascii_digit()) {
                    got = Got::No;
                }
                rest = Some(&s[i..]);
                break;
            }
            _ => {}
        }
        got = Got::Single;
        buf.push(r);
    }
    if got != Got::No {
        args.push(buf);
    }
    if escaped || sq || dq || bq || dollar {
        bail!("invalid command line string");
    }
    if let Some(rest) = rest {
        tracing::warn!(ignored = rest, "exec: the command ends at a shell operator, as in Litestream; use `sh -c '...'` for a shell");
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::shell_words;

    fn words(s: &str) -> Vec<String> {
        shell_words(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    /// Cases worked through go-shellwords v1.0.12's `Parse` (Litestream v0.3.13's splitter).
    #[test]
    fn splits_like_go_shellwords() {
        let cases: &[(&str, &[&str])] = &[
            ("app  --port 8080", &["app", "--port", "8080"]),
            (
                "sh -c 'echo \"a b\"; exit 3'",
                &["sh", "-c", "echo \"a b\"; exit 3"],
            ),
            ("a \"b c\" d", &["a", "b c", "d"]),
            ("a '' \"\" b", &["a", "", "", "b"]),
            ("a\\ b", &["a b"]),
            ("\"a\\nb\\\"c\"", &["anb\"c"]),
            ("'a\\b'", &["a\\b"]),
            ("x\ty\nz", &["x", "y", "z"]),
            ("echo hi; rm -rf /", &["echo", "hi"]),
            ("app > out.log", &["app"]),
            ("app 2>/dev/null", &["app"]),
            ("a|b", &["a"]),
            ("echo $(date) x", &["echo", "$(date)", "x"]),
            ("echo `date`", &["echo", "`date`"]),
            ("", &[]),
        ];
        for (line, want) in cases {
            assert_eq!(words(line), *want, "{line:?}");
        }
    }

    #[test]
    fn rejects_what_go_shellwords_rejects() {
        for line in ["'open", "\"open", "trailing\\", "f(x)", "`open", "a $(b"] {
            assert!(shell_words(line).is_err(), "{line:?} must be an error");
        }
    }
}

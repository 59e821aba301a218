//! `litestream replicate`: replicate every database of the config file, or
//! `replicate DB_PATH REPLICA_URL...`; `-exec CMD` runs the application as a child process.
//! A thin layer over [`litestream_core::Replicator`].

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use litestream_core::config::{self, Config, DbConfig, ReplicaConfig};
use litestream_core::{DbOptions, ReplicaFormat, ReplicaHandleConfig, ReplicaOptions, Replicator};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use super::{ConfigArgs, CONFIG, NO_EXPAND_ENV};
use crate::flags::{Flag, FlagSet};
use crate::registry::{build_client, meta_dir};

const EXEC: Flag = Flag::value(
    "exec",
    "Executes a subcommand. Litestream will exit when the child process exits. Useful for \
     simple process management.",
);
const FORMAT: Flag = Flag::value(
    "format",
    "Format of new (empty) replica paths: v0.3 (default) or ltx (Litestream v0.5). A path that \
     holds data keeps its format.",
);

/// `replicate`'s arguments.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    config: ConfigArgs,
    /// `-exec`: the application to run as a child process.
    exec: Option<String>,
    /// `-format`: the format of new (empty) replica paths.
    format: ReplicaFormat,
    /// `DB_PATH REPLICA_URL...`, replicating one database without a config file.
    db_and_urls: Option<(String, Vec<String>)>,
}

impl Args {
    pub(crate) fn parse(args: &[String]) -> Result<Args> {
        let synopsis = "[arguments] [DB_PATH REPLICA_URL [REPLICA_URL...]]";
        let flags = [CONFIG, NO_EXPAND_ENV, EXEC, FORMAT];
        let p = FlagSet::new("replicate", synopsis, &flags).parse(args)?;
        let format = match p.value(&FORMAT) {
            Some(f) => ReplicaFormat::parse(f).ok_or_else(|| {
                anyhow!("-format: unknown replica format {f:?} (expected \"v0.3\" or \"ltx\")")
            })?,
            None => ReplicaFormat::V3,
        };
        let config = ConfigArgs::from_flags(&p);
        let db_and_urls = match p.args.split_first() {
            None => None,
            Some(_) if config.given() => {
                bail!("cannot specify a replica URL and the -config flag")
            }
            Some((db, [])) => bail!("must specify at least one replica URL for {db}"),
            Some((db, urls)) => Some((db.clone(), urls.to_vec())),
        };
        Ok(Args {
            config,
            exec: p.value(&EXEC).map(str::to_string),
            format,
            db_and_urls,
        })
    }
}

/// What to replicate: the databases, the child to run and the metrics address, from the
/// command line or the config file.
struct Plan {
    dbs: Vec<DbConfig>,
    exec: Option<String>,
    addr: Option<String>,
    cfg: Config,
}

impl Plan {
    fn new(args: &Args) -> Result<Plan> {
        if let Some((db, urls)) = &args.db_and_urls {
            let db = DbConfig {
                path: config::absolute_path(db)?.to_string_lossy().into_owned(),
                replicas: urls
                    .iter()
                    .map(|u| ReplicaConfig {
                        url: Some(u.clone()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            return Ok(Plan {
                dbs: vec![db],
                exec: args.exec.clone(),
                addr: None,
                cfg: Config::default(),
            });
        }
        let cfg = args.config.load()?;
        Ok(Plan {
            dbs: cfg.dbs.clone(),
            exec: args.exec.clone().or(cfg.exec.clone()),
            addr: cfg.addr.clone().filter(|a| !a.is_empty()),
            cfg,
        })
    }
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let plan = Plan::new(&args)?;
    tracing::info!(
        version = %super::version::version_string(),
        "litestream"
    );
    if plan.dbs.is_empty() {
        tracing::error!("no databases specified in configuration");
    }
    // Stops the metrics server when replication ends, on an error return too.
    let shutdown = CancellationToken::new();
    let _stop_on_return = shutdown.clone().drop_guard();
    if let Some(addr) = &plan.addr {
        serve_metrics(addr, shutdown.clone()).await?;
    }
    let mut replicators = Vec::new();
    for db in &plan.dbs {
        replicators.push(start_db(db, &plan.cfg, args.format).await?);
    }
    let child = spawn_exec(plan.exec.as_deref())?;
    let code = wait_for_stop(child).await?;
    stop_all(replicators).await;
    for db in &plan.dbs {
        litestream_core::metrics::unregister_db(&db.path);
    }
    shutdown.cancel();
    tracing::info!("litestream shut down");
    Ok(code)
}

/// Start the metrics and health endpoint on `addr` until `shutdown` is cancelled.
async fn serve_metrics(addr: &str, shutdown: CancellationToken) -> Result<()> {
    let server = crate::http::Server::bind(addr).await?;
    tracing::info!(url = %crate::http::metrics_url(addr)?, listen = %server.describe(),
        "serving metrics on");
    tokio::spawn(server.run(shutdown));
    Ok(())
}

/// The replicas of `db`, each with its client and options.
async fn replica_handles(
    db: &DbConfig,
    cfg: &Config,
    default_format: ReplicaFormat,
) -> Result<Vec<ReplicaHandleConfig>> {
    let mut handles: Vec<ReplicaHandleConfig> = Vec::new();
    for rc in db.all_replicas() {
        let rc = rc.resolve()?;
        let name = rc.display_name();
        if handles.iter().any(|h| h.name == name) {
            bail!("duplicate replica name: {name:?}");
        }
        let meta = meta_dir(&config::absolute_path(&db.path)?, db.meta_path.as_deref());
        let client = build_client(&rc, Some(&meta))
            .await
            .with_context(|| format!("replica {name:?} of {}", db.path))?;
        let options = ReplicaOptions::from_config(&rc)
            .with_ltx_config(cfg, db, &rc, default_format)
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
    Ok(handles)
}

/// Start replicating one database.
async fn start_db(
    db: &DbConfig,
    cfg: &Config,
    default_format: ReplicaFormat,
) -> Result<Replicator> {
    let opts = DbOptions::from_config(db)?;
    let handles = replica_handles(db, cfg, default_format).await?;
    let path = config::absolute_path(&db.path)?;
    tracing::info!(db = %path.display(), "initialized db");
    for h in &handles {
        tracing::info!(db = %path.display(), name = %h.name, r#type = h.client.kind(),
            sync_interval = ?h.options.sync_interval, "replicating to");
    }
    Replicator::start(&path, handles, opts)
        .await
        .with_context(|| format!("cannot open db: {}", path.display()))
}

/// Start `-exec`'s command (split as Litestream splits it), if any.
fn spawn_exec(exec: Option<&str>) -> Result<Option<Child>> {
    let Some(cmd) = exec else {
        return Ok(None);
    };
    let argv = shell_words(cmd)?;
    let Some((prog, rest)) = argv.split_first() else {
        bail!("cannot parse exec command: {cmd:?}");
    };
    let child = tokio::process::Command::new(prog)
        .args(rest)
        .spawn()
        .with_context(|| format!("cannot exec: {cmd}"))?;
    Ok(Some(child))
}

/// Wait for SIGTERM, SIGINT or the child's exit; a signal is forwarded to the child, which is
/// then waited for. The exit code is 1 if the child failed.
async fn wait_for_stop(mut child: Option<Child>) -> Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let exited = async {
        match child.as_mut() {
            Some(c) => c.wait().await.ok(),
            None => std::future::pending().await,
        }
    };
    let sig = tokio::select! {
        _ = sigterm.recv() => libc::SIGTERM,
        _ = sigint.recv() => libc::SIGINT,
        st = exited => {
            if let Some(st) = st.filter(|st| !st.success()) {
                tracing::error!(status = %st, "subprocess exited with error");
                return Ok(ExitCode::from(1));
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut code = ExitCode::SUCCESS;
    if let Some(c) = child.as_mut() {
        tracing::info!("signal received, forwarding to subprocess");
        if !forward_signal(c, sig).await {
            code = ExitCode::from(1);
        }
    }
    tracing::info!("signal received, litestream shutting down");
    Ok(code)
}

/// Send `sig` to `child` and wait for it; false if it exited with an error.
async fn forward_signal(child: &mut Child, sig: libc::c_int) -> bool {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // A system call: a slim image has no `kill` program to run.
        // SAFETY: kill(2) takes plain integers; `pid` is our child, not yet reaped.
        if unsafe { libc::kill(pid, sig) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::error!(pid, error = %e, "cannot forward signal to subprocess");
        }
    }
    !matches!(child.wait().await, Ok(st) if !st.success())
}

/// Shut every replicator down, all at once: with many databases, one after the other takes
/// minutes.
async fn stop_all(replicators: Vec<Replicator>) {
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

//! `litestream databases`: the databases of the config file and their replicas.

use std::process::ExitCode;

use anyhow::{bail, Result};

use super::{tabwrite, ConfigArgs, CONFIG, NO_EXPAND_ENV};
use crate::flags::FlagSet;

/// `databases`' arguments: which config file to read.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    config: ConfigArgs,
}

impl Args {
    pub(crate) fn parse(args: &[String]) -> Result<Args> {
        let p = FlagSet::new("databases", "[arguments]", &[CONFIG, NO_EXPAND_ENV]).parse(args)?;
        if !p.args.is_empty() {
            bail!("too many arguments");
        }
        Ok(Args {
            config: ConfigArgs::from_flags(&p),
        })
    }
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let cfg = args.config.load()?;
    let mut rows = vec![vec!["path".to_string(), "replicas".to_string()]];
    for db in &cfg.dbs {
        let names: Vec<String> = db
            .all_replicas()
            .iter()
            .map(|r| {
                r.resolve()
                    .map(|r| r.display_name())
                    .unwrap_or_else(|_| r.display_name())
            })
            .collect();
        rows.push(vec![db.path.clone(), names.join(",")]);
    }
    print!("{}", tabwrite(&rows));
    Ok(ExitCode::SUCCESS)
}

//! `litestream databases`: the databases of the config file and their replicas.

use std::process::ExitCode;

use anyhow::{bail, Result};

use super::{load_config, tabwrite};
use crate::flags::FlagSet;

pub(crate) async fn run(args: &[String]) -> Result<ExitCode> {
    let fs = FlagSet::new("databases", "[arguments]")
        .value("config", "Specifies the configuration file.")
        .bool(
            "no-expand-env",
            "Disables environment variable expansion in configuration file.",
        );
    let p = fs.parse(args)?;
    if !p.args.is_empty() {
        bail!("too many arguments");
    }
    let cfg = load_config(p.get("config"), p.is_set("no-expand-env"))?;
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

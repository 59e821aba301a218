//! `litestream version`.

use std::process::ExitCode;

/// The Litestream release whose format and CLI this binary follows.
pub(crate) const COMPATIBLE_WITH: &str = "v0.3.13";

/// The version this binary reports: Litestream's, with our own as build metadata.
pub(crate) fn version_string() -> String {
    format!("{COMPATIBLE_WITH}+rs.{}", env!("CARGO_PKG_VERSION"))
}

pub(crate) fn run() -> ExitCode {
    println!("{}", version_string());
    ExitCode::SUCCESS
}

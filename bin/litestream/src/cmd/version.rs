//! `litestream version`.

use std::process::ExitCode;

/// The Litestream release whose format and CLI this binary follows.
pub(crate) const COMPATIBLE_WITH: &str = "v0.3.13";

pub(crate) fn run() -> ExitCode {
    println!("{COMPATIBLE_WITH}+rs.{}", env!("CARGO_PKG_VERSION"));
    ExitCode::SUCCESS
}

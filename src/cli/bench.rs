//! `gilpool bench`.

use std::process::ExitCode;

/// Options of `gilpool bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {}

pub(crate) fn main(_args: BenchArgs) -> ExitCode {
    eprintln!("gilpool bench: not available in this build");
    ExitCode::from(2)
}

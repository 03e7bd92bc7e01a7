//! `gilpool run`.

use std::process::ExitCode;

/// Options of `gilpool run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {}

pub(crate) fn main(_args: RunArgs) -> ExitCode {
    eprintln!("gilpool run: not available in this build");
    ExitCode::from(2)
}

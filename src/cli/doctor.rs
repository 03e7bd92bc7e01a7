//! `gilpool doctor`: what Python this build embeds and what it supports.

use gilpool::{Engine, Mode};
use std::process::ExitCode;

/// Options of `gilpool doctor`.
#[derive(Debug, clap::Args)]
pub(crate) struct DoctorArgs {}

pub(crate) fn main(_args: DoctorArgs) -> ExitCode {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("cores:               {cores}");
    println!(
        "own-GIL support:     {}",
        if Mode::SubInterpreters.is_supported() {
            "yes (built for CPython >= 3.12)"
        } else {
            "no (built for CPython < 3.12): SingleGil only"
        }
    );
    match Engine::builder().workers(1).build() {
        Ok(engine) => {
            println!("python:              {}", engine.python_version());
            println!("sys.executable:      {}", engine.python_executable());
            println!("Mode::Auto runs as:  {}", engine.mode());
            for w in engine.warnings() {
                println!("warning:             {w}");
            }
            engine.shutdown();
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("engine:              FAILED: {e}");
            ExitCode::from(2)
        }
    }
}

//! The `gilpool` command line: `demo`, `run`, `bench`, `doctor`.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Run CPU-bound Python functions in parallel on own-GIL subinterpreters.
#[derive(Debug, Parser)]
#[command(name = "gilpool", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bundled CPU-bound workload through 1 worker and all workers
    /// in each available mode, and print the speedups.
    Demo(cli::demo::DemoArgs),
    /// Run a Python function over JSON Lines input, in parallel, in order.
    Run(cli::run::RunArgs),
    /// Compare gilpool with sequential Python, threads, process pools and
    /// the stdlib interpreters module on the same workload.
    Bench(cli::bench::BenchArgs),
    /// Report the Python this build uses and what it supports.
    Doctor(cli::doctor::DoctorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(a) => cli::demo::main(a),
        Command::Run(a) => cli::run::main(a),
        Command::Bench(a) => cli::bench::main(a),
        Command::Doctor(a) => cli::doctor::main(a),
    }
}

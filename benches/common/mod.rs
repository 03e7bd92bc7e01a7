//! Helpers shared by the bench binaries (`mod common;` in each).
#![allow(dead_code)]

use gilpool::{Engine, EngineBuilder, Mode};
use std::path::PathBuf;

/// The bundled Python modules (`python/`).
pub(crate) fn workloads() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// An engine of `workers` in `mode` that imports the bundled modules.
pub(crate) fn builder(mode: Mode, workers: usize) -> EngineBuilder {
    Engine::builder()
        .mode(mode)
        .workers(workers)
        .sys_path(workloads())
}

/// The fault suite's Python fixtures (`tests/fixtures/faults`).
pub(crate) fn fault_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faults")
}

/// Every mode this build supports, `SubInterpreters` first.
pub(crate) fn modes() -> Vec<Mode> {
    let mut out = Vec::new();
    if Mode::SubInterpreters.is_supported() {
        out.push(Mode::SubInterpreters);
    }
    out.push(Mode::SingleGil);
    out
}

/// A duration for a table: `12.3 µs` below a millisecond, `1.23 ms` above.
pub(crate) fn fmt_duration(d: std::time::Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

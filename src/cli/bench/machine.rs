//! The machine and the Python under test: CPU model, load average, and a
//! speed probe of every core.

use super::Plan;
use std::process::{Command, Stdio};

/// The machine and the Python under test.
#[derive(Debug, Default)]
pub(super) struct Machine {
    pub(super) python: String,
    pub(super) executable: String,
    pub(super) cpus: usize,
    pub(super) cpu_model: String,
    pub(super) load_before: String,
    pub(super) load_after: String,
    /// Python runtime initialisation (once per process, in no row).
    pub(super) runtime_start_s: f64,
    /// µs per `heavy()` call on each core, all cores busy at once, at the
    /// start and at the end of the run.
    pub(super) probe_before: Vec<Option<f64>>,
    pub(super) probe_after: Vec<Option<f64>>,
}

/// Calls per core in [`speed_probe`].
const PROBE_CALLS: usize = 200;

/// How fast each core runs Python right now: one `python` child per core,
/// pinned there (it inherits the spawning thread's affinity) and all
/// running at once, times `PROBE_CALLS` calls of `heavy()`. On this kind of
/// shared VM a core can run far slower than the guest's load average
/// shows (another tenant on the host), which skews every parallel figure.
pub(super) fn speed_probe(plan: &Plan, executable: &str) -> Vec<Option<f64>> {
    let code = format!(
        "import time, gilpool_workloads as W\nW.heavy()\nt = time.perf_counter()\n\
         for _ in range({PROBE_CALLS}): W.heavy()\nprint((time.perf_counter() - t) / {PROBE_CALLS} * 1e6)"
    );
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let threads: Vec<_> = cores
        .into_iter()
        .map(|core| {
            let (exe, code, dir) = (executable.to_string(), code.clone(), plan.dir.clone());
            std::thread::spawn(move || {
                if !core_affinity::set_for_current(core) {
                    return None;
                }
                let out = Command::new(exe)
                    .args(["-c", &code])
                    .env("PYTHONPATH", dir)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().ok().flatten())
        .collect()
}

pub(super) fn fmt_probe(probe: &[Option<f64>]) -> String {
    if probe.is_empty() {
        return "not measured".into();
    }
    probe
        .iter()
        .enumerate()
        .map(|(i, v)| format!("cpu{i} {}", v.map_or("?".into(), |v| format!("{v:.0}"))))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

//! Resident memory per worker: `VmRSS` of this process before and after
//! building an engine with N workers (and after each worker imported
//! `gilpool_workloads` and ran a few calls), per mode, printed as a table.
//! For comparison, the RSS and PSS of one fresh `python` process that
//! imported the same module: what each worker of a process pool costs.
//!
//! `cargo bench --bench memory` (a few seconds). Not a criterion bench:
//! criterion measures time.

use gilpool::{Engine, Mode};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn workloads() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// A `kB` field of a `/proc/<pid>/status`-style file, in KiB.
fn kib_field(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib() -> u64 {
    kib_field("/proc/self/status", "VmRSS:").unwrap_or(0)
}

fn mib(kib: i64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

struct Row {
    mode: Mode,
    workers: usize,
    built: i64,
    loaded: i64,
    retained: i64,
}

fn measure(mode: Mode, workers: usize) -> Row {
    let before = rss_kib() as i64;
    let engine = Engine::builder()
        .mode(mode)
        .workers(workers)
        .sys_path(workloads())
        .build()
        .expect("engine starts");
    let built = rss_kib() as i64;
    let inc = engine
        .handler("gilpool_workloads", "inc")
        .load()
        .expect("inc loads");
    // Enough tasks that every worker imports the module and runs it.
    let n = 2000 * workers as i64;
    let sum: i64 = inc
        .map::<_, _, i64>((0..n).map(|i| (i,)))
        .map(|r| r.expect("inc"))
        .sum();
    assert_eq!(sum, n * (n + 1) / 2);
    let loaded = rss_kib() as i64;
    drop(inc);
    engine.shutdown();
    let after = rss_kib() as i64;
    Row {
        mode,
        workers,
        built: built - before,
        loaded: loaded - before,
        retained: after - before,
    }
}

/// RSS and PSS (KiB) of a fresh `python` that imported `gilpool_workloads`.
fn python_process(executable: &str) -> Option<(u64, u64)> {
    let code = "import sys; sys.path.insert(0, sys.argv[1]); import gilpool_workloads; \
                gilpool_workloads.inc(1); print('ready', flush=True); sys.stdin.read()";
    let mut child = Command::new(executable)
        .args(["-c", code])
        .arg(workloads())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let pid = child.id();
    let rss = kib_field(&format!("/proc/{pid}/status"), "VmRSS:");
    let pss = kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
    // Closing stdin ends the child's read, and the child.
    drop(child.stdin.take());
    let _ = child.wait();
    Some((rss?, pss.unwrap_or(0)))
}

/// Child mode: `--child <mode> <workers>` measures one configuration in a
/// fresh process (so no row reuses memory an earlier engine freed) and
/// prints `built loaded retained runtime` in KiB.
fn child(mode: &str, workers: usize) {
    let mode = if mode == "sub" {
        Mode::SubInterpreters
    } else {
        Mode::SingleGil
    };
    let start = rss_kib() as i64;
    start_runtime();
    let runtime = rss_kib() as i64 - start;
    let r = measure(mode, workers);
    println!("{} {} {} {}", r.built, r.loaded, r.retained, runtime);
}

/// Starts the Python runtime (not a worker's cost) with a one-worker
/// SingleGil engine; returns the executable and version.
fn start_runtime() -> (String, String) {
    let first = Engine::builder()
        .mode(Mode::SingleGil)
        .workers(1)
        .sys_path(workloads())
        .build()
        .expect("engine starts");
    let out = (
        first.python_executable().to_string(),
        first.python_version().to_string(),
    );
    first.shutdown();
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let workers = args.get(i + 2).and_then(|w| w.parse().ok()).unwrap_or(1);
        child(args.get(i + 1).map_or("single", String::as_str), workers);
        return;
    }
    let (executable, version) = start_runtime();
    let me = std::env::current_exe().expect("own path");
    let mut modes = Vec::new();
    if Mode::SubInterpreters.is_supported() {
        modes.push(Mode::SubInterpreters);
    }
    modes.push(Mode::SingleGil);
    let mut rows = Vec::new();
    let mut runtime = None;
    for &mode in &modes {
        for workers in [1usize, 2, 4] {
            let key = if mode == Mode::SubInterpreters {
                "sub"
            } else {
                "single"
            };
            let out = Command::new(&me)
                .args(["--child", key, &workers.to_string()])
                .output()
                .expect("child runs");
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<i64> = text
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if !out.status.success() || v.len() != 4 {
                println!(
                    "{mode} x{workers}: child failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            runtime.get_or_insert(v[3]);
            rows.push(Row {
                mode,
                workers,
                built: v[0],
                loaded: v[1],
                retained: v[2],
            });
        }
    }
    println!("RSS per worker (Python {version}; VmRSS deltas of a fresh process per row, MiB)");
    println!();
    if let Some(r) = runtime {
        println!("Python runtime (main interpreter + prelude, before any worker): {} MiB, once per process", mib(r));
        println!();
    }
    println!("| mode | workers | after build | per worker | after import + 2000 calls/worker | per worker | left after shutdown |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for r in &rows {
        let w = r.workers as i64;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.workers,
            mib(r.built),
            mib(r.built / w),
            mib(r.loaded),
            mib(r.loaded / w),
            mib(r.retained)
        );
    }
    println!();
    match python_process(&executable) {
        Some((rss, pss)) => println!(
            "one `python` process that imported gilpool_workloads ({executable}): RSS {} MiB, PSS {} MiB",
            mib(rss as i64),
            mib(pss as i64)
        ),
        None => println!("one `python` process: could not measure ({executable})"),
    }
}

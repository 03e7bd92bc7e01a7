//! Resident memory per worker: `VmRSS` of this process before and after
//! building an engine with N workers (and after each worker imported
//! `gilpool_workloads` and ran a few calls), per mode, printed as a table.
//! For comparison, the RSS and PSS of one fresh `python` process that
//! imported the same module: what each worker of a process pool costs.
//!
//! Then **engine cycles**: RSS growth over [`CYCLES`] builds and shutdowns
//! of a 2-worker engine in one process, against CPython's own loss over
//! the same number of bare create/end cycles of 2 own-GIL subinterpreters
//! (`gilpool_ffi::SubInterpreter`, each on a thread of its own, as an
//! engine's workers make them). Each row is a fresh process that starts
//! the runtime and runs one warm-up cycle before its first sample.
//!
//! `cargo bench --bench memory` (both tables, about a minute);
//! `cargo bench --bench memory -- workers` or `-- cycles` for one. Not a
//! criterion bench: criterion measures time.

use gilpool::{Engine, Mode};
use gilpool_ffi::{Runtime, RuntimeConfig, SubInterpreter};
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
    engine.wait_ready().expect("every worker starts");
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

/// Build-and-shutdown cycles per row of the cycles table (default; the
/// environment variable `GILPOOL_BENCH_CYCLES` sets another count).
const CYCLES: usize = 100;

fn cycles() -> usize {
    std::env::var("GILPOOL_BENCH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CYCLES)
}

/// What one cycle does (a row of the cycles table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cycle {
    /// Two bare own-GIL subinterpreters, each created and ended on a
    /// thread of its own: CPython's own loss.
    Bare,
    /// The same, each importing `gilpool_workloads` and calling `inc` 50
    /// times before it ends: CPython's own loss for that Python work.
    BareTasks,
    /// A 2-worker SubInterpreters engine built and shut down.
    SubEngine,
    /// The same, loading `inc` and running 100 calls before shutdown.
    SubEngineTasks,
    /// A 2-worker SingleGil engine built and shut down (no interpreter is
    /// created or ended: CPython's own loss is none).
    SingleEngine,
    /// The same, with `inc` and 100 calls.
    SingleEngineTasks,
}

impl Cycle {
    const ALL: [Cycle; 6] = [
        Cycle::Bare,
        Cycle::BareTasks,
        Cycle::SubEngine,
        Cycle::SubEngineTasks,
        Cycle::SingleEngine,
        Cycle::SingleEngineTasks,
    ];

    fn key(self) -> &'static str {
        match self {
            Cycle::Bare => "bare",
            Cycle::BareTasks => "bare-tasks",
            Cycle::SubEngine => "sub",
            Cycle::SubEngineTasks => "sub-tasks",
            Cycle::SingleEngine => "single",
            Cycle::SingleEngineTasks => "single-tasks",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Cycle::Bare => "2 bare subinterpreters created and ended (CPython alone)",
            Cycle::BareTasks => "2 bare subinterpreters, each importing gilpool_workloads + 50 calls (CPython alone)",
            Cycle::SubEngine => "SubInterpreters engine, 2 workers: build + shutdown",
            Cycle::SubEngineTasks => {
                "SubInterpreters engine, 2 workers: build + 100 calls + shutdown"
            }
            Cycle::SingleEngine => "SingleGil engine, 2 workers: build + shutdown",
            Cycle::SingleEngineTasks => "SingleGil engine, 2 workers: build + 100 calls + shutdown",
        }
    }

    fn needs_subinterpreters(self) -> bool {
        !matches!(self, Cycle::SingleEngine | Cycle::SingleEngineTasks)
    }

    fn run_once(self, runtime: &'static Runtime) {
        match self {
            Cycle::Bare | Cycle::BareTasks => {
                let work = self == Cycle::BareTasks;
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        std::thread::spawn(move || {
                            let sub =
                                SubInterpreter::new(runtime).expect("a subinterpreter starts");
                            if work {
                                gilpool_ffi::attach(&sub, bare_calls);
                            }
                            sub.end()
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .for_each(|t| t.join().expect("the thread ends"));
            }
            Cycle::SubEngine | Cycle::SubEngineTasks => {
                engine_cycle(Mode::SubInterpreters, self == Cycle::SubEngineTasks)
            }
            Cycle::SingleEngine | Cycle::SingleEngineTasks => {
                engine_cycle(Mode::SingleGil, self == Cycle::SingleEngineTasks)
            }
        }
    }
}

/// What an engine's worker does for the 100-call rows, done by hand:
/// import `gilpool_workloads`, call `inc` 50 times.
fn bare_calls(py: gilpool_ffi::Python<'_>) {
    let dir = workloads().to_string_lossy().into_owned();
    py.prepend_sys_path(&[dir]).expect("sys.path");
    let inc = py
        .import("gilpool_workloads")
        .and_then(|m| m.getattr("inc"))
        .expect("inc");
    for i in 0..50 {
        inc.call1(&py.int(i).expect("an int")).expect("inc runs");
    }
}

fn engine_cycle(mode: Mode, tasks: bool) {
    let engine = Engine::builder()
        .mode(mode)
        .workers(2)
        .pin(false)
        .sys_path(workloads())
        .build()
        .expect("engine starts");
    engine.wait_ready().expect("every worker starts");
    if tasks {
        let inc = engine.load("gilpool_workloads", "inc").expect("inc loads");
        let futures: Vec<_> = (0..100i64)
            .map(|i| inc.submit::<_, i64>((i,)).expect("submits"))
            .collect();
        for (i, f) in futures.into_iter().enumerate() {
            assert_eq!(f.wait().expect("inc"), i as i64 + 1);
        }
    }
    let report = engine.shutdown();
    assert!(report.drained, "{report:?}");
}

/// Child mode: `--cycles <key>`: starts the runtime, runs one warm-up
/// cycle, then [`CYCLES`] cycles; prints `before after` RSS in KiB.
fn cycles_child(key: &str) {
    let cycle = *Cycle::ALL
        .iter()
        .find(|c| c.key() == key)
        .expect("a known cycle");
    let runtime = Runtime::get_or_init(&RuntimeConfig::default()).expect("the runtime starts");
    cycle.run_once(runtime);
    let before = rss_kib();
    for _ in 0..cycles() {
        cycle.run_once(runtime);
    }
    let after = rss_kib();
    println!("{before} {after}");
}

fn cycles_table(me: &std::path::Path, version: &str) {
    let n = cycles();
    println!();
    println!(
        "Engine cycles (Python {version}): RSS growth over {n} cycles in one process, after one warm-up cycle (a fresh process per row)"
    );
    println!();
    println!("| cycle | RSS before | RSS after | growth MiB | per cycle KiB |");
    println!("|---|--:|--:|--:|--:|");
    let mut growth_of = Vec::new();
    for cycle in Cycle::ALL {
        if cycle.needs_subinterpreters() && !Mode::SubInterpreters.is_supported() {
            continue;
        }
        let out = Command::new(me)
            .args(["--cycles", cycle.key()])
            .output()
            .expect("child runs");
        let v: Vec<i64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if !out.status.success() || v.len() != 2 {
            println!(
                "| {}: child failed: {} | | | | |",
                cycle.describe(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            continue;
        }
        let growth = v[1] - v[0];
        growth_of.push((cycle, growth));
        println!(
            "| {} | {} | {} | {} | {:.0} |",
            cycle.describe(),
            mib(v[0]),
            mib(v[1]),
            mib(growth),
            growth as f64 / n as f64
        );
    }
    let get = |c: Cycle| growth_of.iter().find(|(k, _)| *k == c).map(|(_, g)| *g);
    println!();
    for (engine, baseline) in [
        (Cycle::SubEngine, Cycle::Bare),
        (Cycle::SubEngineTasks, Cycle::BareTasks),
    ] {
        if let (Some(e), Some(b)) = (get(engine), get(baseline)) {
            println!(
                "{}: {:.0} KiB per cycle against CPython's own {:.0} KiB: {}",
                engine.describe(),
                e as f64 / n as f64,
                b as f64 / n as f64,
                if e <= b {
                    "within CPython's loss"
                } else {
                    "MORE than CPython's loss"
                }
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let workers = args.get(i + 2).and_then(|w| w.parse().ok()).unwrap_or(1);
        child(args.get(i + 1).map_or("single", String::as_str), workers);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--cycles") {
        cycles_child(args.get(i + 1).map_or("bare", String::as_str));
        return;
    }
    let only_workers = args.iter().any(|a| a == "workers");
    let only_cycles = args.iter().any(|a| a == "cycles");
    let (executable, version) = start_runtime();
    let me = std::env::current_exe().expect("own path");
    if only_cycles {
        cycles_table(&me, &version);
        return;
    }
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
    if !only_workers {
        cycles_table(&me, &version);
    }
}

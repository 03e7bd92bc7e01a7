//! The SVD pipeline end to end (`examples/svd_pipeline.rs`: 1,000 100×100
//! matrices, `generate` then `compute_svd_rank`, batch 32, prefetch 3,
//! matrices handed over as `Held`): gilpool with 1 and 2 main-lane workers
//! (SubInterpreters mode, auto-routed) against one Python thread,
//! `ThreadPoolExecutor` and `ProcessPoolExecutor` on the same two stages
//! (`python/svd_baselines.py`, run by the venv's own Python in the same
//! bench run); then a mixed run: the pipeline on the main lane while a
//! pure-Python handler (`heavy`, 2,000 tasks) runs on the sub lane, against
//! each run alone.
//!
//! `GILPOOL_SITE=<venv>/lib/python3.X/site-packages cargo bench --bench pipeline`
//! (or `VIRTUAL_ENV=<venv>`); the venv must hold numpy, for the Python this
//! build embeds. `OPENBLAS_NUM_THREADS` is 1 unless set (for gilpool and the
//! peers alike). Prints a Markdown table; nothing is asserted.

#[path = "../examples/svd_pipeline.rs"]
#[allow(dead_code)]
mod svd;

use gilpool::{Engine, Mode};
use std::path::Path;
use std::time::{Duration, Instant};

const HEAVY_TASKS: i64 = 2000;

fn heavy_alone(engine: &Engine) -> Duration {
    let heavy = engine.load("gilpool_workloads", "heavy").unwrap();
    let start = Instant::now();
    let futs: Vec<_> = (0..HEAVY_TASKS)
        .map(|_| heavy.submit::<_, i64>(()).unwrap())
        .collect();
    for f in futs {
        f.wait().unwrap();
    }
    start.elapsed()
}

/// The engine of the mixed run: 2 sub-lane workers, 1 main-lane worker,
/// the bundled modules and the venv's site-packages on `sys.path`.
fn mixed_engine(site: &Path) -> Engine {
    Engine::builder()
        .mode(Mode::SubInterpreters)
        .workers(2)
        .main_workers(1)
        .sys_path(concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
        .sys_path(site)
        .build()
        .unwrap()
}

fn main() {
    // One BLAS thread per worker everywhere: numpy's OpenBLAS otherwise
    // starts a thread per core in every process and worker, and the peers
    // spend their time spinning against each other on 2 cores.
    if std::env::var_os("OPENBLAS_NUM_THREADS").is_none() {
        std::env::set_var("OPENBLAS_NUM_THREADS", "1");
    }
    let Some(site) = svd::site_packages() else {
        println!("skipped: set GILPOOL_SITE or VIRTUAL_ENV to a virtualenv with numpy");
        return;
    };
    if !Mode::SubInterpreters.is_supported() {
        println!("skipped: this build (Python < 3.12) has no sub lane beside the main lane");
        return;
    }
    let n = svd::MATRICES;
    let expected = svd::reference(&site, n).unwrap();
    let mut rows: Vec<(String, f64)> = Vec::new();
    for workers in [1, 2] {
        let (ranks, took) = svd::pipeline(Mode::SubInterpreters, workers, &site, n).unwrap();
        assert_eq!(ranks, expected);
        rows.push((
            format!("gilpool, {workers} main worker(s)"),
            took.as_secs_f64(),
        ));
    }
    let python = site.join("../../../bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/svd_baselines.py");
    let out = std::process::Command::new(&python)
        .args([script, &n.to_string(), "2"])
        .output()
        .expect("the venv's python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for part in text
        .trim()
        .trim_matches(|c| c == '{' || c == '}')
        .split(", \"")
    {
        if let Some((k, v)) = part.rsplit_once(": ") {
            rows.push((
                k.trim_matches('"').to_string(),
                v.parse().unwrap_or(f64::NAN),
            ));
        }
    }
    let base = rows
        .iter()
        .find(|r| r.0 == "one thread")
        .map_or(f64::NAN, |r| r.1);
    println!("SVD pipeline, {n} matrices (Python {}):\n", {
        let e = Engine::builder()
            .mode(Mode::SingleGil)
            .workers(1)
            .build()
            .unwrap();
        let v = e.python_version().to_string();
        e.shutdown();
        v
    });
    println!("| run | seconds | speed-up vs one thread |");
    println!("|---|---|---|");
    for (name, secs) in &rows {
        println!("| {name} | {secs:.3} | {:.2}x |", base / secs);
    }
    // The mixed run: both lanes of one engine at once.
    let engine = mixed_engine(&site);
    let heavy_only = heavy_alone(&engine);
    engine.shutdown();
    let (_, svd_only) = svd::pipeline(Mode::SubInterpreters, 1, &site, n).unwrap();
    let engine = mixed_engine(&site);
    let generate = engine
        .handler("svd", "generate")
        .vectorized(true)
        .batch_size(32)
        .prefetch_depth(3)
        .load()
        .unwrap();
    let rank = engine
        .handler("svd", "compute_svd_rank")
        .vectorized(true)
        .batch_size(32)
        .prefetch_depth(3)
        .load()
        .unwrap();
    let start = Instant::now();
    let (heavy_took, svd_took) = std::thread::scope(|s| {
        let h = s.spawn(|| heavy_alone(&engine));
        let t0 = Instant::now();
        let ms: Vec<_> = (0..n as i64)
            .map(|seed| generate.submit_held((seed,)).unwrap())
            .collect();
        let rs: Vec<_> = ms
            .into_iter()
            .map(|m| rank.submit::<_, i64>((m.wait().unwrap(),)).unwrap())
            .collect();
        let ranks: Vec<i64> = rs.into_iter().map(|r| r.wait().unwrap()).collect();
        assert_eq!(ranks, expected);
        let svd_took = t0.elapsed();
        (h.join().unwrap(), svd_took)
    });
    let both = start.elapsed();
    engine.shutdown();
    println!("\nMixed run: {HEAVY_TASKS} `heavy` tasks on the sub lane (2 workers) and the pipeline on the main lane (1 worker), one engine:\n");
    println!("| run | heavy (s) | pipeline (s) | wall (s) |");
    println!("|---|---|---|---|");
    println!(
        "| each alone | {:.3} | {:.3} | {:.3} (sum) |",
        heavy_only.as_secs_f64(),
        svd_only.as_secs_f64(),
        (heavy_only + svd_only).as_secs_f64()
    );
    println!(
        "| both at once | {:.3} | {:.3} | {:.3} |",
        heavy_took.as_secs_f64(),
        svd_took.as_secs_f64(),
        both.as_secs_f64()
    );
}

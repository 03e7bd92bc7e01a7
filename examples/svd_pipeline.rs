//! The reference engine's SVD pipeline: `generate` makes 1,000 100×100
//! numpy matrices, `compute_svd_rank` computes each one's rank; both are
//! vectorized handlers with `batch_size(32)` and `prefetch_depth(3)`, and
//! the matrices go from the first to the second as [`Held`] Python objects
//! — never converted to Rust values. numpy refuses own-GIL
//! subinterpreters, so in `Mode::SubInterpreters` both handlers are routed
//! to the main lane automatically (one warning says so); in
//! `Mode::SingleGil` everything runs on the main interpreter anyway. The
//! ranks are checked against numpy's own, computed in a plain loop.
//!
//! ```sh
//! python3.13 -m venv /tmp/np && /tmp/np/bin/pip install numpy
//! VIRTUAL_ENV=/tmp/np cargo run --release --example svd_pipeline
//! ```
//!
//! `VIRTUAL_ENV` (or `GILPOOL_SITE`, a `site-packages` directory) says where
//! numpy is; the venv must be of the Python this build embeds.

use gilpool::{Engine, Held, Mode, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Matrices in the pipeline.
pub(crate) const MATRICES: usize = 1000;

/// The `site-packages` directory to find numpy in, from `GILPOOL_SITE` or
/// the `VIRTUAL_ENV`'s `lib/python3.X/site-packages`.
pub(crate) fn site_packages() -> Option<PathBuf> {
    if let Some(site) = std::env::var_os("GILPOOL_SITE") {
        return Some(PathBuf::from(site));
    }
    let venv = PathBuf::from(std::env::var_os("VIRTUAL_ENV")?);
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
}

/// Runs the pipeline over `n` seeds; returns the ranks (in seed order) and
/// the time it took.
pub(crate) fn pipeline(
    mode: Mode,
    main_workers: usize,
    site: &std::path::Path,
    n: usize,
) -> Result<(Vec<i64>, Duration)> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
    let engine = Engine::builder()
        .mode(mode)
        .main_workers(main_workers)
        .workers(main_workers)
        .sys_path(python)
        .sys_path(site)
        .build()?;
    let generate = engine
        .handler("svd", "generate")
        .vectorized(true)
        .batch_size(32)
        .prefetch_depth(3)
        .load()?;
    let rank = engine
        .handler("svd", "compute_svd_rank")
        .vectorized(true)
        .batch_size(32)
        .prefetch_depth(3)
        .load()?;
    let start = Instant::now();
    let matrices: Vec<_> = (0..n as i64)
        .map(|seed| generate.submit_held((seed,)))
        .collect::<Result<_>>()?;
    let mut ranks = Vec::with_capacity(n);
    let mut pending = Vec::with_capacity(n);
    for m in matrices {
        let held: Held = m.wait()?;
        pending.push(rank.submit::<_, i64>((held,))?);
    }
    for p in pending {
        ranks.push(p.wait()?);
    }
    let took = start.elapsed();
    engine.shutdown();
    Ok((ranks, took))
}

/// numpy's own ranks for seeds `0..n`, in one plain loop on the main
/// interpreter.
pub(crate) fn reference(site: &std::path::Path, n: usize) -> Result<Vec<i64>> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
    let engine = Engine::builder()
        .mode(Mode::SingleGil)
        .workers(1)
        .sys_path(python)
        .sys_path(site)
        .build()?;
    let f = engine.load("svd", "reference")?;
    let out = f.invoke((n as i64,));
    engine.shutdown();
    out
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let Some(site) = site_packages() else {
        eprintln!(
            "svd_pipeline: set VIRTUAL_ENV to a virtualenv with numpy (or GILPOOL_SITE to its site-packages)"
        );
        std::process::exit(2);
    };
    let expected = reference(&site, MATRICES)?;
    let mut modes = vec![Mode::SingleGil];
    if Mode::SubInterpreters.is_supported() {
        modes.insert(0, Mode::SubInterpreters);
    }
    for mode in modes {
        for workers in [1, 2] {
            let (ranks, took) = pipeline(mode, workers, &site, MATRICES)?;
            assert_eq!(ranks, expected, "ranks differ from numpy's own");
            println!(
                "{mode}, {workers} main worker(s): {MATRICES} matrices, ranks equal numpy's ({} of rank 90), {:.3} s",
                ranks.iter().filter(|&&r| r == 90).count(),
                took.as_secs_f64()
            );
        }
    }
    Ok(())
}

//! Unbatched submit, 1 worker against 2, as a distribution: one burst is
//! 1,024 single tasks (`batch_size` 1, `gilpool_workloads.inc`) submitted
//! with `Handler::submit` from one thread, then waited for; each row times
//! BURSTS bursts on a fresh engine and prints their mean and percentiles.
//! The 1- and 2-worker engines alternate ROUNDS times per mode (one engine
//! alive at a time), and each round's 2-worker figures are divided by the
//! 1-worker ones of the same round.
//!
//! `criterion`'s `unbatched/` rows in `hotpath` estimate a mean (the slope
//! of many iterations), which a few slow bursts move; this table shows how
//! much of a 2-worker row's difference is its typical burst and how much
//! its tail.
//!
//! `cargo bench --bench unbatched` (about 15 s). Nothing is asserted.

mod common;

use common::modes;
use gilpool::Mode;
use std::time::Instant;

const TASKS: i64 = 1024;
const BURSTS: usize = 400;
const ROUNDS: usize = 3;

/// Burst times of one engine, in µs, sorted.
fn bursts(mode: Mode, workers: usize) -> Vec<f64> {
    let engine = common::builder(mode, workers)
        .build()
        .expect("the engine builds");
    engine.wait_ready().expect("every worker starts");
    let h = engine
        .handler("gilpool_workloads", "inc")
        .batch_size(1)
        .load()
        .expect("inc loads");
    let mut times: Vec<f64> = (0..BURSTS + BURSTS / 10)
        .map(|_| {
            let t = Instant::now();
            let futs: Vec<_> = (0..TASKS)
                .map(|i| h.submit::<_, i64>((i,)).expect("submit"))
                .collect();
            let sum: i64 = futs.into_iter().map(|f| f.wait().expect("inc")).sum();
            assert_eq!(sum, TASKS * (TASKS + 1) / 2);
            t.elapsed().as_secs_f64() * 1e6
        })
        // The first tenth warms up.
        .skip(BURSTS / 10)
        .collect();
    engine.shutdown();
    times.sort_by(f64::total_cmp);
    times
}

/// Mean, p50, p90, p99 and max of sorted times.
fn stats(t: &[f64]) -> [f64; 5] {
    let at = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    let mean = t.iter().sum::<f64>() / t.len() as f64;
    [mean, at(0.5), at(0.9), at(0.99), t[t.len() - 1]]
}

fn main() {
    println!("| mode | round | workers | mean µs | p50 µs | p90 µs | p99 µs | max µs |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    let mut ratios = Vec::new();
    for mode in modes() {
        for round in 1..=ROUNDS {
            let one = stats(&bursts(mode, 1));
            let two = stats(&bursts(mode, 2));
            for (w, s) in [(1, one), (2, two)] {
                println!(
                    "| {mode} | {round} | {w} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                    s[0], s[1], s[2], s[3], s[4]
                );
            }
            ratios.push((
                mode,
                round,
                two[0] / one[0],
                two[1] / one[1],
                two[3] / one[3],
            ));
        }
    }
    println!();
    println!("| mode | round | 2 workers / 1: mean | p50 | p99 |");
    println!("|---|--:|--:|--:|--:|");
    for (mode, round, mean, p50, p99) in ratios {
        println!("| {mode} | {round} | {mean:.3} | {p50:.3} | {p99:.3} |");
    }
}

//! Criterion benches of the per-task hot path, each pair in one run:
//!
//! - `metrics/<mode>/<path>/{on,off}`: the same calls with
//!   `EngineBuilder::metrics(true)` and `(false)`, 2 workers: `invoke`,
//!   `submit` + `wait`, and 1024 `inc` through `map` in chunks of 1 and in
//!   the default guided chunks (the `map` rows report throughput);
//! - `unbatched/<mode>/submit_all_then_wait/<workers>`: one thread submits
//!   1024 single tasks (`batch_size` 1) with `Handler::submit`, then waits
//!   for all of them, to 1 and to 2 workers.
//!
//! `cargo bench --bench hotpath` (about a minute and a half). Compare the
//! rows of a pair within one run: the host moves absolute figures.

mod common;

use common::modes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gilpool::{Engine, MapChunks, Mode};
use std::hint::black_box;
use std::time::Duration;

const TASKS: i64 = 1024;

fn engine(mode: Mode, workers: usize, metrics: bool) -> Engine {
    let engine = common::builder(mode, workers)
        .metrics(metrics)
        .build()
        .expect("engine starts");
    engine.wait_ready().expect("every worker starts");
    engine
}

fn onoff(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// The same paths with per-task timing on and off.
fn metrics(c: &mut Criterion) {
    for mode in modes() {
        // Both engines stay up, so the two rows of a pair differ only in
        // the switch.
        let engines = [engine(mode, 2, true), engine(mode, 2, false)];
        let mut g = c.benchmark_group(format!("metrics/{mode}"));
        let mut i = 0i64;
        for (e, on) in engines.iter().zip([true, false]) {
            let inc = e.load("gilpool_workloads", "inc").expect("inc loads");
            g.bench_function(BenchmarkId::new("invoke", onoff(on)), |b| {
                b.iter(|| {
                    i += 1;
                    inc.invoke::<_, i64>((black_box(i),)).expect("inc")
                })
            });
            g.bench_function(BenchmarkId::new("submit_wait", onoff(on)), |b| {
                b.iter(|| {
                    i += 1;
                    inc.submit::<_, i64>((black_box(i),))
                        .expect("submit")
                        .wait()
                        .expect("inc")
                })
            });
        }
        g.throughput(Throughput::Elements(TASKS as u64));
        for (name, batch, chunks) in [
            ("map_chunks_of_1", 1usize, MapChunks::Batch),
            ("map_guided", 64, MapChunks::Guided),
        ] {
            for (e, on) in engines.iter().zip([true, false]) {
                let h = e
                    .handler("gilpool_workloads", "inc")
                    .batch_size(batch)
                    .map_chunks(chunks)
                    .load()
                    .expect("inc loads");
                g.bench_function(BenchmarkId::new(name, onoff(on)), |b| {
                    b.iter(|| {
                        let mut sum = 0i64;
                        for r in h.map::<_, _, i64>((0..TASKS).map(|i| (i,))) {
                            sum += r.expect("inc");
                        }
                        assert_eq!(sum, TASKS * (TASKS + 1) / 2);
                    })
                });
            }
        }
        g.finish();
        for e in engines {
            e.shutdown();
        }
    }
}

/// One submitting thread, single tasks, to 1 and 2 workers.
fn unbatched(c: &mut Criterion) {
    for mode in modes() {
        let engines = [engine(mode, 1, true), engine(mode, 2, true)];
        let mut g = c.benchmark_group(format!("unbatched/{mode}"));
        g.throughput(Throughput::Elements(TASKS as u64));
        for (e, workers) in engines.iter().zip([1usize, 2]) {
            let h = e
                .handler("gilpool_workloads", "inc")
                .batch_size(1)
                .load()
                .expect("inc loads");
            g.bench_function(BenchmarkId::new("submit_all_then_wait", workers), |b| {
                b.iter(|| {
                    let futs: Vec<_> = (0..TASKS)
                        .map(|i| h.submit::<_, i64>((i,)).expect("submit"))
                        .collect();
                    let sum: i64 = futs.into_iter().map(|f| f.wait().expect("inc")).sum();
                    assert_eq!(sum, TASKS * (TASKS + 1) / 2);
                })
            });
        }
        g.finish();
        for e in engines {
            e.shutdown();
        }
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = metrics, unbatched
}
criterion_main!(benches);

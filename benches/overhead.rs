//! Criterion benches of gilpool's fixed costs, per mode this build supports:
//!
//! - `invoke/<mode>`: one call of `gilpool_workloads.inc(i)` through the
//!   engine (`invoke`, and `submit` + `wait`) against the same function
//!   called on the bench thread itself through gilpool's FFI layer
//!   (`raw/attach_call_detach`, and `raw/call_attached`, the call alone);
//! - `per_task/<mode>`: 1024 tasks through `Handler::map`, batch 64 and
//!   unbatched (reported per task as throughput);
//! - `startup/<mode>`: `EngineBuilder::build` for 1 and 2 workers
//!   (`build_workers`: until it returns, one worker up; `all_ready_workers`:
//!   until `Engine::wait_ready`, every worker up; the Python runtime itself
//!   is started once, before).
//!
//! `cargo bench --bench overhead` (about a minute); RSS per worker is in
//! `benches/memory.rs`.

mod common;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use gilpool::{Engine, MapChunks, Mode};
use gilpool_ffi::{MainThreadState, PyException, Python, Runtime, Stash};
use std::hint::black_box;
use std::time::{Duration, Instant};

const WORKERS: usize = 2;
const MAP_TASKS: i64 = 1024;

fn engine(mode: Mode, workers: usize) -> Engine {
    common::builder(mode, workers)
        .build()
        .expect("engine starts")
}

/// `inc(i)` through a stashed function object, on the attached thread.
fn call_inc(py: Python<'_>, func: &Stash, i: i64) -> Result<i64, PyException> {
    let f = func.bind(py);
    let arg = py.int(i)?;
    Ok(f.call(&[arg], None)?.extract_i64()?.unwrap_or(-1))
}

/// The floor: `inc(i)` on this thread, in the main interpreter, with no
/// scheduler in between.
fn raw(c: &mut Criterion) {
    // The runtime must be up; an engine's build starts it.
    engine(Mode::SingleGil, 1).shutdown();
    let runtime = Runtime::get().expect("runtime is running");
    let state = MainThreadState::new(runtime);
    let dir = std::fs::canonicalize(common::workloads()).expect("python/ exists");
    let func = gilpool_ffi::attach(&state, |py| {
        py.prepend_sys_path(&[dir.to_string_lossy().into_owned()])?;
        Ok::<_, PyException>(py.import("gilpool_workloads")?.getattr("inc")?.stash())
    })
    .expect("gilpool_workloads.inc imports");
    let mut g = c.benchmark_group("invoke/raw");
    let mut i = 0i64;
    g.bench_function("attach_call_detach", |b| {
        b.iter(|| {
            i += 1;
            gilpool_ffi::attach(&state, |py| call_inc(py, &func, black_box(i)).expect("inc"))
        })
    });
    g.bench_function("call_attached", |b| {
        gilpool_ffi::attach(&state, |py| {
            b.iter(|| {
                i += 1;
                call_inc(py, &func, black_box(i)).expect("inc")
            })
        })
    });
    g.finish();
    gilpool_ffi::attach(&state, |py| func.release(py));
}

/// One call through the engine, `WORKERS` workers.
fn invoke(c: &mut Criterion) {
    for mode in common::modes() {
        let engine = engine(mode, WORKERS);
        let inc = engine.load("gilpool_workloads", "inc").expect("inc loads");
        let queued = engine
            .handler("gilpool_workloads", "inc")
            .caller_runs(false)
            .load()
            .expect("inc loads");
        let mut g = c.benchmark_group(format!("invoke/{mode}"));
        let mut i = 0i64;
        // On an idle engine the call runs on this thread (caller-runs).
        g.bench_function("invoke", |b| {
            b.iter(|| {
                i += 1;
                inc.invoke::<_, i64>((black_box(i),)).expect("inc")
            })
        });
        // The same call through the queue and a worker.
        g.bench_function("invoke_queued", |b| {
            b.iter(|| {
                i += 1;
                queued.invoke::<_, i64>((black_box(i),)).expect("inc")
            })
        });
        g.bench_function("submit_wait", |b| {
            b.iter(|| {
                i += 1;
                inc.submit::<_, i64>((black_box(i),))
                    .expect("submit")
                    .wait()
                    .expect("inc")
            })
        });
        g.finish();
        drop((inc, queued));
        engine.shutdown();
    }
}

/// `MAP_TASKS` tasks through `map`: fixed chunks of 64 (batched), one task
/// per input (unbatched), and the default guided chunks.
fn per_task(c: &mut Criterion) {
    for mode in common::modes() {
        let engine = engine(mode, WORKERS);
        let mut g = c.benchmark_group(format!("per_task/{mode}"));
        g.throughput(Throughput::Elements(MAP_TASKS as u64));
        for (name, batch, chunks) in [
            ("map_chunks_of", 64usize, MapChunks::Batch),
            ("map_chunks_of", 1, MapChunks::Batch),
            ("map_guided", 64, MapChunks::Guided),
        ] {
            let h = engine
                .handler("gilpool_workloads", "inc")
                .batch_size(batch)
                .map_chunks(chunks)
                .load()
                .expect("inc loads");
            g.bench_with_input(BenchmarkId::new(name, batch), &batch, |b, _| {
                b.iter(|| {
                    let mut sum = 0i64;
                    for r in h.map::<_, _, i64>((0..MAP_TASKS).map(|i| (i,))) {
                        sum += r.expect("inc");
                    }
                    assert_eq!(sum, MAP_TASKS * (MAP_TASKS + 1) / 2);
                })
            });
        }
        g.finish();
        engine.shutdown();
    }
}

/// Engine build (workers created, interpreters ready) per worker count.
/// Shut-down is outside the timed span.
fn startup(c: &mut Criterion) {
    for mode in common::modes() {
        let mut g = c.benchmark_group(format!("startup/{mode}"));
        // Each own-GIL interpreter cycle leaks about 1.5 MB (CPython), so
        // keep the iteration count low.
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        // `build_workers`: until `build` returns (one worker up);
        // `all_ready_workers`: until every worker is (`wait_ready`).
        for (name, all) in [("build_workers", false), ("all_ready_workers", true)] {
            for workers in [1usize, 2] {
                g.bench_with_input(BenchmarkId::new(name, workers), &workers, |b, &w| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let t = Instant::now();
                            let e = engine(mode, w);
                            if all {
                                e.wait_ready().expect("every worker starts");
                            }
                            total += t.elapsed();
                            e.shutdown();
                        }
                        total
                    })
                });
            }
        }
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = raw, invoke, per_task, startup
}
criterion_main!(benches);

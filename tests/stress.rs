//! Scheduler stress: a million tiny tasks from several threads, exactly-once
//! completion of unbatched submits across shutdown, and work stealing under
//! a skewed load.
//!
//! These tests load both cores, so they take a process-wide lock and run one
//! at a time. Timings are printed, never asserted.

mod common;

use common::resolve;

use gilpool::{Engine, FromPython, Handler, TaskFuture};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// This binary's fixtures (`skew`).
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sched");
/// How long a future may take before the test calls it hung.
const GENEROUS: Duration = Duration::from_secs(30);
const THREADS: usize = 4;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs CPU-heavy tests one at a time (a failed test must not block the rest).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn engine() -> Engine {
    common::builder(gilpool::Mode::Auto)
        .sys_path(FIXTURES)
        .build()
        .expect("the engine builds")
}

/// Submits `inc(i)` for every `i` in `range`, keeping at most `window`
/// futures outstanding; checks each result against its own input. Returns
/// (completions, sum of results).
fn run_range(inc: &Handler, range: std::ops::Range<i64>, window: usize) -> (usize, i64) {
    let mut pending: VecDeque<(i64, TaskFuture<i64>)> = VecDeque::with_capacity(window);
    let (mut done, mut sum) = (0usize, 0i64);
    let mut check = |(i, fut): (i64, TaskFuture<i64>)| {
        let v = resolve(fut, GENEROUS).unwrap_or_else(|e| panic!("inc({i}) failed: {e}"));
        assert_eq!(v, i + 1, "inc({i}) got another task's result");
        done += 1;
        sum += v;
    };
    for i in range {
        if pending.len() == window {
            check(pending.pop_front().unwrap());
        }
        pending.push_back((i, inc.submit((i,)).unwrap()));
    }
    pending.into_iter().for_each(&mut check);
    (done, sum)
}

#[test]
fn a_million_tiny_tasks_from_four_threads_complete_exactly_once() {
    const TOTAL: i64 = 1_000_000;
    let _serial = serial();
    let engine = engine();
    let inc = engine
        .handler("gilpool_workloads", "inc")
        .batch_size(64)
        .load()
        .unwrap();
    let completions = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let per = TOTAL / THREADS as i64;
    let sums: Vec<i64> = (0..THREADS as i64)
        .map(|t| {
            let (inc, completions) = (inc.clone(), completions.clone());
            thread::spawn(move || {
                let (done, sum) = run_range(&inc, t * per..(t + 1) * per, 2048);
                completions.fetch_add(done, Ordering::SeqCst);
                sum
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let elapsed = start.elapsed();
    assert_eq!(completions.load(Ordering::SeqCst), TOTAL as usize);
    assert_eq!(sums.iter().sum::<i64>(), TOTAL * (TOTAL + 1) / 2);
    assert_eq!(inc.staged(), (0, 0));
    println!(
        "1M inc tasks, 4 submitters, batch 64: {:.2} s ({:.2} us/task)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / TOTAL as f64
    );
    engine.shutdown();
    assert_eq!(inc.in_flight(), 0);
}

#[test]
fn unbatched_submits_from_four_threads_complete_exactly_once_by_shutdown() {
    const TOTAL: usize = 10_000;
    let _serial = serial();
    let engine = engine();
    let inc = engine.load("gilpool_workloads", "inc").unwrap();
    // How many times each task's callback ran.
    let hits: Arc<Vec<AtomicU8>> = Arc::new((0..TOTAL).map(|_| AtomicU8::new(0)).collect());
    let per = TOTAL / THREADS;
    let futures: Vec<(usize, TaskFuture<i64>)> = (0..THREADS)
        .map(|t| {
            let (inc, hits) = (inc.clone(), hits.clone());
            thread::spawn(move || {
                (t * per..(t + 1) * per)
                    .map(|i| {
                        let hits = hits.clone();
                        let fut = inc
                            .submit_with(
                                move || Ok((i as i64,)),
                                move |obj| {
                                    hits[i].fetch_add(1, Ordering::SeqCst);
                                    i64::from_python(&obj)
                                },
                            )
                            .unwrap();
                        (i, fut)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(futures.len(), TOTAL);
    engine.shutdown();

    let pending = futures.iter().filter(|(_, f)| !f.is_ready()).count();
    assert_eq!(pending, 0, "{pending} futures still pending after shutdown");
    for (i, fut) in futures {
        assert_eq!(resolve(fut, GENEROUS).unwrap(), i as i64 + 1, "task {i}");
    }
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(
            h.load(Ordering::SeqCst),
            1,
            "task {i}'s callback ran {} times",
            h.load(Ordering::SeqCst)
        );
    }
    assert_eq!(inc.in_flight(), 0);
}

/// One long task that ends only when the test creates a file, then 10,000
/// `cpu_spin_us(100)` tasks (batched by `short_batch`), on 2 workers. Every
/// short task must finish while the long one still waits: short work that
/// landed behind it (in its worker's deque, moved there with a batch from
/// the injector) can only be run by the other worker stealing it. This is
/// causal, not timed: without stealing the short tasks never finish, the
/// long task gives up after its limit and the test fails. Returns the short
/// tasks run per worker thread and the time the short work took (printed,
/// never asserted).
fn skewed_run(short_batch: usize) -> (BTreeMap<String, usize>, Duration) {
    const SHORT: usize = 10_000;
    let engine = engine();
    let long = engine.load("skew", "wait_file").unwrap();
    let short = engine
        .handler("skew", "cpu_spin_us")
        .batch_size(short_batch)
        .load()
        .unwrap();
    let release =
        std::env::temp_dir().join(format!("gilpool-skew-{}-{short_batch}", std::process::id()));
    let _ = std::fs::remove_file(&release);
    let start = Instant::now();
    let path = release.to_string_lossy().into_owned();
    let long_fut = long
        .submit::<_, i64>((path, GENEROUS.as_secs_f64()))
        .unwrap();
    let short_futs: Vec<_> = (0..SHORT)
        .map(|_| {
            short
                .submit_with(
                    || Ok((100,)),
                    |obj| {
                        i64::from_python(&obj)?;
                        Ok(thread::current().name().unwrap_or("?").to_string())
                    },
                )
                .unwrap()
        })
        .collect();
    let mut per_worker = BTreeMap::new();
    for f in short_futs {
        *per_worker.entry(resolve(f, GENEROUS).unwrap()).or_default() += 1;
    }
    let shorts_done = start.elapsed();
    std::fs::write(&release, b"go").unwrap();
    assert_eq!(
        resolve(long_fut, GENEROUS).unwrap(),
        1,
        "batch {short_batch}: the long task gave up waiting: short work waited behind it"
    );
    let _ = std::fs::remove_file(&release);
    engine.shutdown();
    (per_worker, shorts_done)
}

#[test]
fn idle_workers_steal_around_a_long_task() {
    let _serial = serial();
    for batch in [1, 8] {
        let (per_worker, took) = skewed_run(batch);
        assert_eq!(per_worker.values().sum::<usize>(), 10_000);
        println!(
            "skew (short batch {batch}): 10,000 short tasks done in {:.3} s while the long task waited; per worker {per_worker:?}",
            took.as_secs_f64()
        );
    }
}

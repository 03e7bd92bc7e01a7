//! A long-running service: metrics checked against known workloads, and
//! interpreter recycling by task count, by memory and after a task broke
//! the import system. Facts only, never timings.

mod common;

use gilpool::{EngineBuilder, Mode, Placement};
use std::collections::BTreeSet;
use std::time::Duration;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/service");
const GENEROUS: Duration = Duration::from_secs(60);
const BREAK_CHILD_ENV: &str = "GILPOOL_BREAK_IMPORTS_CHILD";

fn builder(mode: Mode) -> EngineBuilder {
    common::builder(mode).sys_path(FIXTURES)
}

#[test]
fn metrics_count_a_known_workload() {
    for mode in common::modes() {
        let engine = builder(mode).build().unwrap();
        let inc = engine.load("service_fixture", "inc").unwrap();
        let fail = engine.load("service_fixture", "fail").unwrap();
        let futs: Vec<_> = (0..1000i64)
            .map(|i| inc.submit::<_, i64>((i,)).unwrap())
            .collect();
        for f in futs {
            common::resolve(f, GENEROUS).unwrap();
        }
        for i in 0..10i64 {
            assert!(fail.invoke::<_, i64>((i,)).unwrap_err().is_python());
        }
        let m = engine.metrics();
        let h = m.handlers.iter().find(|h| h.function == "inc").unwrap();
        assert_eq!(
            (h.submitted, h.completed, h.failed, h.in_flight),
            (1000, 1000, 0, 0)
        );
        assert_eq!(h.run_time.count, 1000);
        assert_eq!(h.queue_wait.count, 1000);
        assert!(h.run_time.p50 <= h.run_time.p99 && h.run_time.p99 <= h.run_time.max);
        let f = m.handlers.iter().find(|h| h.function == "fail").unwrap();
        assert_eq!((f.submitted, f.completed, f.failed), (10, 0, 10));
        let lane = if mode == Mode::SubInterpreters {
            Placement::Sub
        } else {
            Placement::Main
        };
        let workers: Vec<_> = m.workers.iter().filter(|w| w.lane == lane).collect();
        assert_eq!(workers.len(), 2);
        assert_eq!(workers.iter().map(|w| w.tasks).sum::<u64>(), 1010);
        // Each call is one job of a worker's, or a caller's run in its
        // interpreter.
        assert!(workers.iter().map(|w| w.batches + w.lent).sum::<u64>() >= 1010);
        assert!(workers
            .iter()
            .all(|w| w.recycles == 0 && w.quarantines == 0));
        engine.shutdown();
    }
}

#[test]
fn metrics_off_keeps_the_counters_and_times_nothing() {
    for mode in common::modes() {
        let engine = builder(mode).metrics(false).build().unwrap();
        let inc = engine.load("service_fixture", "inc").unwrap();
        let futs: Vec<_> = (0..200i64)
            .map(|i| inc.submit::<_, i64>((i,)).unwrap())
            .collect();
        for f in futs {
            common::resolve(f, GENEROUS).unwrap();
        }
        let mapped: i64 = inc
            .map::<_, _, i64>((0..300i64).map(|i| (i,)))
            .map(|r| r.unwrap())
            .sum();
        assert_eq!(mapped, (1..=300).sum::<i64>());
        let m = engine.metrics();
        let h = m.handlers.iter().find(|h| h.function == "inc").unwrap();
        assert_eq!((h.completed, h.failed, h.in_flight), (h.submitted, 0, 0));
        assert!(h.submitted >= 201, "{}", h.submitted);
        assert_eq!((h.run_time.count, h.queue_wait.count), (0, 0));
        let tasks: u64 = m.workers.iter().map(|w| w.tasks).sum();
        assert_eq!(tasks, 500);
        assert!(m
            .workers
            .iter()
            .all(|w| w.busy.is_zero() && w.attached.is_zero()));
        engine.shutdown();
    }
}

/// Both workers are held by gates while a long task and 1,000 short ones
/// queue in the injector; the worker that takes the long task also moves
/// some short ones into its own deque (crossbeam moves a batch), and the
/// long task ends only once every short one has finished, so those can
/// only have been stolen by the other worker: steals >= 1, causally.
#[test]
fn a_skewed_load_is_stolen() {
    for mode in common::modes() {
        let engine = builder(mode).build().unwrap();
        let wait = engine.load("service_fixture", "wait_file").unwrap();
        let inc = engine.load("service_fixture", "inc").unwrap();
        let dir = std::env::temp_dir().join(format!("gilpool-steal-{}-{mode}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gate = dir.join("gate");
        let release = dir.join("release");
        let _ = std::fs::remove_file(&gate);
        let _ = std::fs::remove_file(&release);
        let limit = GENEROUS.as_secs_f64();
        let p = |f: &std::path::Path| f.to_string_lossy().into_owned();
        let gates: Vec<_> = (0..2)
            .map(|_| wait.submit::<_, i64>((p(&gate), limit)).unwrap())
            .collect();
        // Both gates are taken before anything else is queued: only then
        // is the injector filled.
        while engine
            .metrics()
            .workers
            .iter()
            .map(|w| w.tasks)
            .sum::<u64>()
            < 2
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let long = wait.submit::<_, i64>((p(&release), limit)).unwrap();
        let shorts: Vec<_> = (0..1000i64)
            .map(|i| inc.submit::<_, i64>((i,)).unwrap())
            .collect();
        std::fs::write(&gate, b"go").unwrap();
        for f in gates {
            assert_eq!(common::resolve(f, GENEROUS).unwrap(), 1);
        }
        for (i, f) in shorts.into_iter().enumerate() {
            assert_eq!(common::resolve(f, GENEROUS).unwrap(), i as i64 + 1);
        }
        std::fs::write(&release, b"go").unwrap();
        assert_eq!(
            common::resolve(long, GENEROUS).unwrap(),
            1,
            "short work waited behind the long task"
        );
        let steals: u64 = engine.metrics().workers.iter().map(|w| w.steals).sum();
        assert!(steals >= 1, "no steal recorded ({mode})");
        engine.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn interpreters_recycle_by_task_count() {
    if !Mode::SubInterpreters.is_supported() {
        println!("skipped: this build (Python < 3.12) has no subinterpreters to recycle");
        return;
    }
    let engine = builder(Mode::SubInterpreters)
        .workers(1)
        .max_tasks_per_worker(10)
        .build()
        .unwrap();
    let token = engine.load("service_fixture", "token").unwrap();
    let tokens: Vec<String> = (0..25).map(|_| token.invoke(()).unwrap()).collect();
    let distinct: BTreeSet<&String> = tokens.iter().collect();
    assert_eq!(distinct.len(), 3, "{tokens:?}");
    assert!(tokens[..10].iter().all(|t| *t == tokens[0]));
    assert!(tokens[10..20].iter().all(|t| *t == tokens[10]));
    let m = engine.metrics();
    assert_eq!(m.workers[0].recycles, 2);
    assert_eq!(m.workers[0].generation, 2);
    engine.shutdown();
}

#[test]
fn interpreters_recycle_by_memory() {
    if !Mode::SubInterpreters.is_supported() {
        println!("skipped: this build (Python < 3.12) has no subinterpreters to recycle");
        return;
    }
    // The bound: what a fresh interpreter with the fixture holds, plus room.
    let probe = builder(Mode::SubInterpreters).workers(1).build().unwrap();
    let blocks = probe.load("service_fixture", "blocks").unwrap();
    let base: i64 = blocks.invoke(()).unwrap();
    probe.shutdown();
    let engine = builder(Mode::SubInterpreters)
        .workers(1)
        .max_allocated_blocks(base as usize + 50_000)
        .build()
        .unwrap();
    let token = engine.load("service_fixture", "token").unwrap();
    let hoard = engine.load("service_fixture", "hoard").unwrap();
    let hoarded = engine.load("service_fixture", "hoarded").unwrap();
    let before: String = token.invoke(()).unwrap();
    assert_eq!(hoard.invoke::<_, i64>((10,)).unwrap(), 10);
    assert_eq!(
        token.invoke::<_, String>(()).unwrap(),
        before,
        "small use: kept"
    );
    assert_eq!(hoard.invoke::<_, i64>((200_000,)).unwrap(), 200_010);
    // The job that crossed the bound was the last in that interpreter.
    assert_eq!(hoarded.invoke::<_, i64>(()).unwrap(), 0);
    assert_ne!(token.invoke::<_, String>(()).unwrap(), before);
    assert_eq!(engine.metrics().workers[0].recycles, 1);
    engine.shutdown();
}

#[test]
fn a_task_that_clears_sys_modules_breaks_nothing_for_later_tasks() {
    // In a child process: every engine of a process shares the main
    // interpreter, and for a moment the task leaves it without modules, so
    // a test building an engine beside it could see that.
    if std::env::var_os(BREAK_CHILD_ENV).is_none() {
        common::run_self(
            "a_task_that_clears_sys_modules_breaks_nothing_for_later_tasks",
            Some((BREAK_CHILD_ENV, "1")),
        )
        .assert_success("child: a task cleared sys.modules");
        return;
    }
    for mode in common::modes() {
        let engine = builder(mode).workers(1).build().unwrap();
        let token = engine.load("service_fixture", "token").unwrap();
        let breaker = engine.load("service_fixture", "break_imports").unwrap();
        // Calls that change nothing first, on the calling thread and on the
        // worker, so the check after each has seen its interpreter intact
        // (and may skip its lookups until `sys.modules` changes).
        for _ in 0..3 {
            let _: String = token.invoke(()).unwrap();
            let _: String = common::resolve(token.submit(()).unwrap(), GENEROUS).unwrap();
        }
        let before: String = token.invoke(()).unwrap();
        assert_eq!(breaker.invoke::<_, i64>(()).unwrap(), 1);
        // Loading a new handler imports on the worker: it must still work.
        let inc = engine.load("service_fixture", "inc").unwrap();
        assert_eq!(inc.invoke::<_, i64>((1,)).unwrap(), 2);
        let after: String = token.invoke(()).unwrap();
        if mode == Mode::SubInterpreters {
            assert_ne!(before, after, "the broken interpreter was recycled");
        }
        let w = engine.warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("service_fixture:break_imports")),
            "{w:?}"
        );
        // The same on the worker, after calls that left it intact.
        for _ in 0..3 {
            let _: String = common::resolve(token.submit(()).unwrap(), GENEROUS).unwrap();
        }
        let warned = engine.warnings().len();
        let broke = breaker.submit::<_, i64>(()).unwrap();
        assert_eq!(common::resolve(broke, GENEROUS).unwrap(), 1);
        assert_eq!(inc.invoke::<_, i64>((1,)).unwrap(), 2);
        let w = engine.warnings();
        assert!(
            w[warned..]
                .iter()
                .any(|w| w.contains("a task of service_fixture:break_imports")),
            "{w:?}"
        );
        engine.shutdown();
        // Later engines still build (the main interpreter was repaired).
        let again = builder(mode).workers(1).build().unwrap();
        assert_eq!(
            again
                .load("service_fixture", "inc")
                .unwrap()
                .invoke::<_, i64>((2,))
                .unwrap(),
            3
        );
        again.shutdown();
    }
}

//! Subinterpreters that used datetime, json, re, decimal and hashlib end and
//! the process exits 0 (pitfall 1 in DESIGN.md). Each case re-runs this test
//! binary as a child process and checks its exit status, so a crash in
//! `Py_EndInterpreter` or `Py_FinalizeEx` fails the test instead of the run.
//!
//! The workers of one engine create their interpreters one at a time, on
//! their own threads; the last case builds engines of many workers over
//! and over, so creations run beside the stdlib imports of workers already
//! up.

mod common;

use common::builder;
use gilpool::{Mode, Value};

const CHILD_ENV: &str = "GILPOOL_EXIT_CHILD";

/// The child's body: every worker imports and uses the stdlib modules, then
/// the engine shuts down and Python is finalised.
fn child(finalize: bool, workers: usize) {
    let engine = builder(Mode::Auto).workers(workers).build().unwrap();
    let stdlib = engine.load("gilpool_workloads", "use_stdlib").unwrap();
    let spin = engine.load("gilpool_workloads", "spin").unwrap();
    // Enough tasks, with some blocking work, that every worker runs some.
    let futures: Vec<_> = (0..200)
        .map(|i| stdlib.submit::<_, Value>((i,)).unwrap())
        .collect();
    let spins: Vec<_> = (0..workers * 4)
        .map(|_| spin.submit::<_, Value>((5,)).unwrap())
        .collect();
    for f in futures.into_iter() {
        f.wait().unwrap();
    }
    for f in spins {
        f.wait().unwrap();
    }
    engine.shutdown();
    if finalize {
        gilpool::finalize().unwrap();
    }
}

fn run_child(case: &str) {
    for round in 0..3 {
        common::run_self(case, Some((CHILD_ENV, "1")))
            .assert_success(&format!("round {round}: child {case}"));
    }
}

#[test]
fn stdlib_in_every_subinterpreter_then_finalize_exits_zero() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child(true, 4);
    }
    run_child("stdlib_in_every_subinterpreter_then_finalize_exits_zero");
}

#[test]
fn stdlib_in_every_subinterpreter_without_finalize_exits_zero() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child(false, 2);
    }
    run_child("stdlib_in_every_subinterpreter_without_finalize_exits_zero");
}

/// Workers per engine in the many-workers case: more than the cores here,
/// so creations run beside other workers' imports whatever the scheduler
/// does.
const MANY: usize = 8;

/// Builds and shuts down `rounds` engines of [`MANY`] workers. Each worker's
/// initializer imports and uses datetime, decimal, hashlib, json and re as
/// soon as its interpreter exists, while other workers may still be
/// creating theirs; then every worker's results are checked against the
/// main interpreter's.
fn many_workers_child(rounds: usize) {
    let reference = builder(Mode::SingleGil).workers(1).build().unwrap();
    let expected: Vec<Value> = reference
        .load("gilpool_workloads", "use_stdlib")
        .unwrap()
        .map((0..64).map(|i| (i,)))
        .collect::<Result<_, _>>()
        .unwrap();
    reference.shutdown();
    for round in 0..rounds {
        let engine = builder(Mode::Auto)
            .workers(MANY)
            .initializer(
                "gilpool_workloads",
                "use_stdlib",
                [Value::from(round as i64)],
            )
            .build()
            .unwrap_or_else(|e| panic!("round {round}: {MANY} workers: {e}"));
        let got: Vec<Value> = engine
            .load("gilpool_workloads", "use_stdlib")
            .unwrap()
            .map((0..64).map(|i| (i,)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            got, expected,
            "round {round}: results differ from the main interpreter's"
        );
        let report = engine.shutdown();
        assert!(
            report.drained && report.abandoned == 0,
            "round {round}: {report:?}"
        );
    }
    gilpool::finalize().unwrap();
}

#[test]
fn many_workers_created_together_use_the_stdlib_and_exit_zero() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // ci/valgrind.sh runs the child directly, with fewer rounds.
        let rounds = std::env::var("GILPOOL_EXIT_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(6);
        return many_workers_child(rounds);
    }
    run_child("many_workers_created_together_use_the_stdlib_and_exit_zero");
}

/// Python files for the thread-exit cases (`slow_exit.py`).
const EXIT_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/exit");

/// The names of this process's threads that are alive: a thread that has
/// returned and is past its exit's destructors has no memory map left,
/// even while its `/proc` entry lingers for a moment.
fn live_thread_names() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("status")),
        ) else {
            continue; // gone while we looked
        };
        if status.lines().any(|l| l.starts_with("VmRSS:")) {
            names.push(comm.trim().to_string());
        }
    }
    names
}

/// `finalize` returns only once the runtime thread is gone: its exit runs
/// the thread-exit destructors of the C libraries Python used on it
/// (OpenSSL's, after the prelude's `import hashlib`), and a process that
/// exits right after `finalize` must not run the same libraries' `atexit`
/// clean-up beside them (that race aborted `gilpool run` after its
/// summary). The prelude makes the runtime thread's exit 300 ms slower.
fn runtime_thread_child() {
    let prelude = gilpool::DEFAULT_PRELUDE
        .iter()
        .copied()
        .chain(["slow_exit_on_import"]);
    let engine = builder(Mode::Auto)
        .sys_path(EXIT_FIXTURES)
        .prelude(prelude)
        .build()
        .unwrap();
    let inc = engine.load("gilpool_workloads", "inc").unwrap();
    assert_eq!(inc.invoke::<_, i64>((1,)).unwrap(), 2);
    engine.shutdown();
    assert!(live_thread_names().iter().any(|n| n == "gilpool-main"));
    gilpool::finalize().unwrap();
    let names = live_thread_names();
    assert!(
        !names.iter().any(|n| n == "gilpool-main"),
        "the runtime thread outlived finalize: {names:?}"
    );
}

#[test]
fn finalize_returns_once_the_runtime_thread_is_gone() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return runtime_thread_child();
    }
    run_child("finalize_returns_once_the_runtime_thread_is_gone");
}

/// `shutdown` returns only once its workers' threads are gone, and `build`
/// once the thread that ran the main lane's initializers is: each thread's
/// exit is made 300 ms slower (the initializer, then one task on each of
/// the two workers at once). Shared-GIL workers, which can use `ctypes`.
fn worker_threads_child() {
    let engine = builder(Mode::SingleGil)
        .sys_path(EXIT_FIXTURES)
        .initializer("slow_exit", "slow_exit", [gilpool::Value::from(300i64)])
        .build()
        .unwrap();
    let names = live_thread_names();
    assert!(
        !names.iter().any(|n| n.starts_with("gilpool-main-in")),
        "the initializers' thread outlived the build: {names:?}"
    );
    let slow = engine
        .handler("slow_exit", "slow_exit_together")
        .batch_size(1)
        .load()
        .unwrap();
    let a = slow.submit::<_, i64>((300,)).unwrap();
    let b = slow.submit::<_, i64>((300,)).unwrap();
    let (a, b) = (a.wait().unwrap(), b.wait().unwrap());
    assert_ne!(a, b, "both tasks ran on one thread");
    let before = live_thread_names();
    let workers = |names: &[String]| {
        names
            .iter()
            .filter(|n| n.starts_with("gilpool-main-") && !n.starts_with("gilpool-main-in"))
            .count()
    };
    assert_eq!(workers(&before), 2, "{before:?}");
    let report = engine.shutdown();
    assert!(report.drained && report.abandoned == 0, "{report:?}");
    let after = live_thread_names();
    assert_eq!(
        workers(&after),
        0,
        "worker threads outlived shutdown: {after:?}"
    );
}

#[test]
fn shutdown_returns_once_the_worker_threads_are_gone() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return worker_threads_child();
    }
    run_child("shutdown_returns_once_the_worker_threads_are_gone");
}

/// On CPython < 3.11 `finalize` waits for threads of the main interpreter
/// that have a thread state but have not started running (a `_thread`
/// thread whose bootstrap runs once finalisation began aborts the
/// process there), and past its deadline refuses, naming why. A thread
/// state made with `ctypes` and run by no thread stands for one; once it
/// is deleted, `finalize` runs. From 3.11 on CPython copes with such
/// threads itself, and `finalize` does not wait.
fn starting_thread_child() {
    let engine = builder(Mode::SingleGil)
        .workers(1)
        .sys_path(EXIT_FIXTURES)
        .build()
        .unwrap();
    let old = engine.python_version().minor < 11;
    let address = engine
        .load("stray_state", "make")
        .unwrap()
        .invoke::<_, i64>(())
        .unwrap();
    let engine = if old {
        engine.shutdown();
        let e = gilpool::finalize_timeout(std::time::Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("had not finished starting"), "{e}");
        builder(Mode::SingleGil)
            .workers(1)
            .sys_path(EXIT_FIXTURES)
            .build()
            .unwrap()
    } else {
        engine
    };
    let delete = engine.load("stray_state", "delete").unwrap();
    assert_eq!(delete.invoke::<_, i64>((address,)).unwrap(), 0);
    engine.shutdown();
    gilpool::finalize_timeout(std::time::Duration::from_millis(200)).unwrap();
}

#[test]
fn finalize_waits_for_main_interpreter_threads_still_starting() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return starting_thread_child();
    }
    run_child("finalize_waits_for_main_interpreter_threads_still_starting");
}

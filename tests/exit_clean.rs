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

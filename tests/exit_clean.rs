//! Subinterpreters that used datetime, json, re, decimal and hashlib end and
//! the process exits 0 (pitfall 1 in DESIGN.md). Each case re-runs this test
//! binary as a child process and checks its exit status, so a crash in
//! `Py_EndInterpreter` or `Py_FinalizeEx` fails the test instead of the run.

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

//! The fault suite: tasks that panic, loop, block, swallow interrupts, leave
//! threads behind or fork fail only themselves, in bounded time, and every
//! future resolves exactly once; the host never aborts or hangs.
//!
//! Every case runs as a child process (this test binary re-run with
//! `--exact`), once per mode this build supports, and the parent checks its
//! exit status: an abort, a crash or a hang (the child is killed after
//! `common::HANG_LIMIT`, far beyond anything a passing case needs) fails
//! the case instead of the test run. Nothing here asserts a duration:
//! deadlines are set, never measured.

mod common;

use gilpool::{
    EngineBuilder, FromPython, IntoPython, Mode, Object, Python, Result, TaskFuture, Value,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/faults");
const CHILD_ENV: &str = "GILPOOL_FAULT_MODE";
/// How long the tests wait for any one future before calling it hung.
const GENEROUS: Duration = Duration::from_secs(60);

fn builder(mode: Mode) -> EngineBuilder {
    common::builder(mode).sys_path(FIXTURES)
}

fn resolve<R>(fut: TaskFuture<R>) -> Result<R> {
    common::resolve(fut, GENEROUS)
}

/// Runs `body` in a child process per mode; in the child, runs it.
fn in_child(case: &str, body: fn(Mode)) {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        let mode = match mode.as_str() {
            "single-gil" => Mode::SingleGil,
            _ => Mode::SubInterpreters,
        };
        body(mode);
        let _ = std::fs::remove_dir_all(flag_dir());
        return;
    }
    for mode in common::modes() {
        let name = if mode == Mode::SingleGil {
            "single-gil"
        } else {
            "sub"
        };
        common::run_self(case, Some((CHILD_ENV, name)))
            .assert_success(&format!("case {case} ({mode})"));
    }
}

/// This process's folder of flag files (removed when its case passes).
fn flag_dir() -> PathBuf {
    std::env::temp_dir().join(format!("gilpool-faults-{}", std::process::id()))
}

/// A fresh path for a fixture's "started" flag file.
fn flag(name: &str) -> PathBuf {
    let dir = flag_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// Blocks until a fixture wrote `path` (its task is running).
fn wait_flag(path: &std::path::Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < GENEROUS, "the task never started");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn path_arg(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// An argument whose conversion to Python panics.
struct BoomIn;
impl IntoPython for BoomIn {
    fn into_python<'py>(self, _py: Python<'py>) -> Result<Object<'py>> {
        panic!("boom converting an argument")
    }
}

/// An argument whose conversion panics when it holds `None`.
struct BoomIf(Option<i64>);
impl IntoPython for BoomIf {
    fn into_python<'py>(self, py: Python<'py>) -> Result<Object<'py>> {
        match self.0 {
            Some(v) => v.into_python(py),
            None => panic!("boom converting an argument"),
        }
    }
}

/// A result type whose conversion from Python panics.
#[derive(Debug)]
struct BoomOut;
impl FromPython for BoomOut {
    fn from_python(_obj: &Object<'_>) -> Result<Self> {
        panic!("boom converting a result")
    }
}

fn assert_panic<T: std::fmt::Debug>(r: Result<T>, phase: &str) {
    let e = r.expect_err("a panicking conversion must fail its task");
    assert!(e.is_panic(), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(phase) && msg.contains("boom"), "{msg}");
}

#[test]
fn panics_in_user_code_fail_only_their_task_and_workers_survive() {
    in_child(
        "panics_in_user_code_fail_only_their_task_and_workers_survive",
        |mode| {
            let engine = builder(mode).build().unwrap();
            let ident = engine.load("hostile", "ident").unwrap();
            let vec = engine
                .handler("hostile", "idents")
                .vectorized(true)
                .batch_size(4)
                .load()
                .unwrap();
            // Three panics per worker in each phase: with a dead worker per
            // panic, the pool would be gone long before the end.
            for _ in 0..3 * engine.workers() {
                assert_panic(
                    resolve(ident.submit::<_, i64>((BoomIn,)).unwrap()),
                    "argument conversion",
                );
                assert_panic(
                    resolve(ident.submit::<_, BoomOut>((1,)).unwrap()),
                    "result conversion",
                );
                assert_panic(ident.invoke::<_, BoomOut>((1,)), "result conversion");
                assert_panic(
                    ident.invoke_with((1,), |_obj| -> Result<i64> { panic!("boom in a callback") }),
                    "callback",
                );
                assert_panic(
                    resolve(
                        ident
                            .submit_with(
                                || -> Result<(i64,)> { panic!("boom in a commit") },
                                |o| i64::from_python(&o),
                            )
                            .unwrap(),
                    ),
                    "commit",
                );
                assert_panic(
                    resolve(vec.submit::<_, i64>((BoomIn,)).unwrap()),
                    "argument conversion",
                );
            }
            let mapped: Vec<Result<i64>> = ident.map((0..8).map(|_| (BoomIn,))).collect();
            assert_eq!(mapped.len(), 8);
            mapped
                .into_iter()
                .for_each(|r| assert_panic(r, "argument conversion"));
            // Panics among inputs that convert: each is its own input's
            // error, and the others keep their results, in order.
            let boom = |i: i64| i % 3 == 1;
            let mapped: Vec<Result<i64>> = ident
                .map((0..30i64).map(|i| (BoomIf((!boom(i)).then_some(i)),)))
                .collect();
            assert_eq!(mapped.len(), 30);
            for (i, r) in (0..30i64).zip(mapped) {
                if boom(i) {
                    assert_panic(r, "argument conversion");
                } else {
                    assert_eq!(r.unwrap(), i);
                }
            }
            let mapped: Vec<Result<BoomOut>> = ident.map((0..8i64).map(|i| (i,))).collect();
            mapped
                .into_iter()
                .for_each(|r| assert_panic(r, "result conversion"));
            // The pool keeps its size and serves: every worker runs tasks.
            let futs: Vec<_> = (0..64i64)
                .map(|i| ident.submit::<_, i64>((i,)).unwrap())
                .collect();
            for (i, f) in futs.into_iter().enumerate() {
                assert_eq!(resolve(f).unwrap(), i as i64);
            }
            assert_eq!(engine.workers(), 2);
            let again = engine.load("hostile", "mark").unwrap();
            again.invoke::<_, i64>(()).unwrap();
            let report = engine.shutdown();
            assert!(report.drained, "{report:?}");
            assert_eq!(report.abandoned, 0);
        },
    );
}

#[test]
fn a_running_task_past_its_deadline_is_interrupted_and_the_worker_goes_on() {
    in_child(
        "a_running_task_past_its_deadline_is_interrupted_and_the_worker_goes_on",
        |mode| {
            let engine = builder(mode).workers(1).build().unwrap();
            let token = engine.load("hostile", "token").unwrap();
            let before: String = token.invoke(()).unwrap();
            // Long enough that an idle worker has begun the task well before
            // (a loaded host can delay that start; a task still queued at its
            // deadline never runs, and this test is about a running one).
            let spin = engine
                .handler("hostile", "spin_flagged")
                .timeout(Duration::from_millis(1500))
                .load()
                .unwrap();
            for round in 0..2 {
                let started = flag(&format!("deadline-{round}"));
                let fut = spin.submit::<_, Value>((path_arg(&started),)).unwrap();
                wait_flag(&started);
                let e = resolve(fut).unwrap_err();
                assert!(e.is_timeout(), "{e}");
                assert!(e.to_string().contains("interrupted"), "{e}");
            }
            // Same interpreter, same thread: nothing was replaced.
            let after: String = token.invoke(()).unwrap();
            assert_eq!(before, after);
            let plain = engine.load("hostile", "spin").unwrap();
            assert_eq!(plain.invoke::<_, i64>((7,)).unwrap(), 7);
            assert!(
                engine.warnings().iter().all(|w| !w.contains("quarantined")),
                "{:?}",
                engine.warnings()
            );
            engine.shutdown();
        },
    );
}

#[test]
fn tasks_past_their_deadline_or_cancelled_before_they_start_never_run() {
    in_child(
        "tasks_past_their_deadline_or_cancelled_before_they_start_never_run",
        |mode| {
            let engine = builder(mode).workers(1).build().unwrap();
            let sleep = engine.load("hostile", "sleep").unwrap();
            let mark = engine.load("hostile", "mark").unwrap();
            let marks = engine.load("hostile", "marks").unwrap();
            // One worker, busy for 0.5 s: the tasks behind it cannot start
            // before their 50 ms deadline.
            let blocker = sleep.submit::<_, f64>((0.5,)).unwrap();
            let expired = mark
                .submit_deadline::<_, i64>((), Duration::from_millis(50))
                .unwrap();
            let cancelled = mark.submit::<_, i64>(()).unwrap();
            assert!(cancelled.cancel());
            let e = resolve(cancelled).unwrap_err();
            assert!(e.is_cancelled(), "{e}");
            let e = resolve(expired).unwrap_err();
            assert!(e.is_timeout(), "{e}");
            assert!(e.to_string().contains("before it started"), "{e}");
            assert_eq!(resolve(blocker).unwrap(), 0.5);
            assert_eq!(marks.invoke::<_, i64>(()).unwrap(), 0, "a stopped task ran");
            // A finished task cannot be cancelled.
            let done = mark.submit::<_, i64>(()).unwrap();
            while !done.is_ready() {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(!done.cancel());
            assert_eq!(resolve(done).unwrap(), 1);
            engine.shutdown();
        },
    );
}

#[test]
fn cancelling_a_running_task_interrupts_it_in_its_own_interpreter_only() {
    in_child(
        "cancelling_a_running_task_interrupts_it_in_its_own_interpreter_only",
        |mode| {
            let engine = builder(mode).build().unwrap();
            let spin = engine.load("hostile", "spin_flagged").unwrap();
            let sleep = engine.load("hostile", "sleep").unwrap();
            // A neighbour runs Python the whole time: it must not see the
            // interrupt meant for the cancelled task.
            let neighbour = sleep.submit::<_, f64>((0.3,)).unwrap();
            let started = flag("cancel");
            let fut = spin.submit::<_, Value>((path_arg(&started),)).unwrap();
            wait_flag(&started);
            assert!(fut.cancel());
            let e = resolve(fut).unwrap_err();
            assert!(e.is_cancelled(), "{e}");
            assert!(e.to_string().contains("interrupted"), "{e}");
            assert_eq!(resolve(neighbour).unwrap(), 0.3);
            let plain = engine.load("hostile", "spin").unwrap();
            let futs: Vec<_> = (1..=8i64)
                .map(|i| plain.submit::<_, i64>((i,)).unwrap())
                .collect();
            for (i, f) in futs.into_iter().enumerate() {
                assert_eq!(resolve(f).unwrap(), i as i64 + 1);
            }
            engine.shutdown();
        },
    );
}

/// A task that does not stop: its future resolves with a timeout, its
/// worker is quarantined and replaced, and the pool serves at full size.
fn quarantine_case(mode: Mode, function: &str, extra: Option<f64>) {
    let engine = builder(mode)
        .workers(1)
        .interrupt_grace(Duration::from_millis(300))
        .shutdown_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let token = engine.load("hostile", "token").unwrap();
    let before: String = token.invoke(()).unwrap();
    // Long enough that the idle worker has begun the task before it (see
    // above); the fixture then swallows or outlasts every interrupt.
    let stuck = engine
        .handler("hostile", function)
        .timeout(Duration::from_millis(1000))
        .load()
        .unwrap();
    let started = flag(function);
    let fut = match extra {
        Some(secs) => stuck.submit::<_, Value>((path_arg(&started), secs)),
        None => stuck.submit::<_, Value>((path_arg(&started),)),
    }
    .unwrap();
    // Queued behind it, on the only worker: handed to the replacement.
    let behind = token.submit::<_, String>(()).unwrap();
    wait_flag(&started);
    let e = resolve(fut).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(e.to_string().contains("quarantined"), "{e}");
    let after = resolve(behind).unwrap();
    if mode == Mode::SubInterpreters {
        assert_ne!(before, after, "the replacement has a fresh interpreter");
    }
    let plain = engine.load("hostile", "spin").unwrap();
    for i in 1..=4i64 {
        assert_eq!(plain.invoke::<_, i64>((i,)).unwrap(), i);
    }
    assert_eq!(engine.workers(), 1);
    assert!(
        engine.warnings().iter().any(|w| w.contains("quarantined")),
        "{:?}",
        engine.warnings()
    );
    let report = engine.shutdown();
    assert!(report.drained, "{report:?}");
}

#[test]
fn a_task_that_swallows_interrupts_is_quarantined_and_replaced() {
    in_child(
        "a_task_that_swallows_interrupts_is_quarantined_and_replaced",
        |mode| quarantine_case(mode, "stubborn_flagged", None),
    );
}

#[test]
fn a_task_blocked_in_c_is_quarantined_and_replaced() {
    in_child("a_task_blocked_in_c_is_quarantined_and_replaced", |mode| {
        quarantine_case(mode, "sleep_flagged", Some(3600.0))
    });
}

#[test]
fn shutdown_now_cancels_everything_queued_and_interrupts_what_runs() {
    in_child(
        "shutdown_now_cancels_everything_queued_and_interrupts_what_runs",
        |mode| {
            let engine = builder(mode).workers(1).build().unwrap();
            let spin = engine.load("hostile", "spin_flagged").unwrap();
            let mark = engine
                .handler("hostile", "mark")
                .batch_size(4)
                .prefetch_depth(2)
                .load()
                .unwrap();
            let started = flag("now");
            let running = spin.submit::<_, Value>((path_arg(&started),)).unwrap();
            wait_flag(&started);
            // Batches in the prefetch window, the injector and the batcher.
            let queued: Vec<_> = (0..50)
                .map(|_| mark.submit::<_, i64>(()).unwrap())
                .collect();
            let report = engine.shutdown_now();
            let e = resolve(running).unwrap_err();
            assert!(e.is_cancelled(), "{e}");
            for f in queued {
                let e = resolve(f).unwrap_err();
                assert!(e.is_cancelled(), "{e}");
            }
            assert!(!report.drained);
            assert!(report.interrupted >= 1, "{report:?}");
            assert_eq!(report.cancelled, 51, "{report:?}");
        },
    );
}

#[test]
fn shutdown_with_a_task_that_never_ends_is_bounded() {
    in_child("shutdown_with_a_task_that_never_ends_is_bounded", |mode| {
        let engine = builder(mode).workers(1).build().unwrap();
        let spin = engine.load("hostile", "spin_flagged").unwrap();
        let started = flag("bounded");
        let fut = spin.submit::<_, Value>((path_arg(&started),)).unwrap();
        wait_flag(&started);
        let report = engine.shutdown_timeout(Duration::from_millis(300));
        assert!(!report.drained);
        assert_eq!(report.interrupted, 1, "{report:?}");
        assert_eq!(report.abandoned, 0, "{report:?}");
        let e = resolve(fut).unwrap_err();
        assert!(e.is_cancelled(), "{e}");
    });
}

#[test]
fn dropping_an_engine_with_a_task_blocked_in_c_is_bounded() {
    in_child(
        "dropping_an_engine_with_a_task_blocked_in_c_is_bounded",
        |mode| {
            let engine = builder(mode)
                .workers(1)
                .shutdown_timeout(Duration::from_millis(200))
                .interrupt_grace(Duration::from_millis(200))
                .build()
                .unwrap();
            let sleep = engine.load("hostile", "sleep_flagged").unwrap();
            let started = flag("drop");
            let fut = sleep
                .submit::<_, Value>((path_arg(&started), 3600.0))
                .unwrap();
            wait_flag(&started);
            drop(engine);
            let e = resolve(fut).unwrap_err();
            assert!(e.is_cancelled(), "{e}");
            assert!(e.to_string().contains("abandoned"), "{e}");
        },
    );
}

#[test]
fn a_raw_thread_left_behind_never_aborts_the_process() {
    in_child(
        "a_raw_thread_left_behind_never_aborts_the_process",
        |mode| {
            let engine = builder(mode)
                .shutdown_timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            let raw = engine.load("hostile", "raw_thread").unwrap();
            let futs: Vec<_> = (0..4).map(|_| raw.submit::<_, i64>(()).unwrap()).collect();
            for f in futs {
                assert_eq!(resolve(f).unwrap(), 1);
            }
            let warnings_before = engine.warnings().len();
            let report = engine.shutdown();
            if mode == Mode::SubInterpreters {
                // Ending an interpreter with a thread alive aborts the process:
                // each such interpreter is abandoned instead.
                assert!(report.abandoned >= 1, "{report:?}");
                assert!(gilpool::finalize().unwrap_err().is_init());
            } else {
                assert_eq!(report.abandoned, 0, "{report:?}");
                assert_eq!(warnings_before, 0);
                gilpool::finalize_timeout(Duration::from_millis(500)).unwrap();
            }
        },
    );
}

/// An initializer that never returns fails the build, in bounded time,
/// with an error naming it and the timeout: interrupted when it stops on
/// the interrupt, abandoned with its thread when it does not (`stops`
/// false). The process goes on serving.
fn init_case(mode: Mode, function: &str, args: Vec<Value>, stops: bool) {
    // One that stops gets a grace no loaded host can run out of; one that
    // does not is given up on soon.
    let grace = if stops {
        GENEROUS
    } else {
        Duration::from_millis(300)
    };
    let e = builder(mode)
        .workers(2)
        .init_timeout(Duration::from_millis(300))
        .interrupt_grace(grace)
        .initializer("hostile", function, args)
        .build()
        .unwrap_err();
    assert!(e.is_init(), "{e}");
    let msg = e.to_string();
    let named = format!("initializer hostile:{function} ran past the start-up timeout of 300ms");
    assert!(msg.contains(&named), "{msg}");
    let how = if stops {
        "and was interrupted (Python raised KeyboardInterrupt"
    } else {
        "did not stop when interrupted"
    };
    assert!(msg.contains(how), "{msg}");
    let engine = builder(mode).workers(1).build().unwrap();
    let ident = engine.load("hostile", "ident").unwrap();
    assert_eq!(ident.invoke::<_, i64>((7,)).unwrap(), 7);
    engine.shutdown();
}

#[test]
fn an_initializer_that_loops_is_interrupted_at_the_start_up_timeout() {
    in_child(
        "an_initializer_that_loops_is_interrupted_at_the_start_up_timeout",
        |mode| init_case(mode, "spin", vec![], true),
    );
}

#[test]
fn an_initializer_that_swallows_interrupts_is_abandoned() {
    in_child(
        "an_initializer_that_swallows_interrupts_is_abandoned",
        |mode| init_case(mode, "stubborn", vec![], false),
    );
}

#[test]
fn an_initializer_blocked_in_c_is_abandoned() {
    in_child("an_initializer_blocked_in_c_is_abandoned", |mode| {
        init_case(mode, "sleep", vec![Value::from(3600.0)], false)
    });
}

#[test]
fn a_worker_whose_initializer_is_abandoned_after_the_build_is_a_warning() {
    in_child(
        "a_worker_whose_initializer_is_abandoned_after_the_build_is_a_warning",
        |mode| {
            // Own interpreters only: the main lane runs its initializers once.
            if mode != Mode::SubInterpreters {
                return;
            }
            let first = flag("init-first");
            let engine = builder(mode)
                .workers(2)
                .init_timeout(Duration::from_millis(300))
                .interrupt_grace(Duration::from_millis(300))
                .initializer(
                    "hostile",
                    "stubborn_unless_first",
                    [Value::from(path_arg(&first))],
                )
                .build()
                .unwrap();
            // The interpreter that returned serves; the other was given up.
            let ident = engine.load("hostile", "ident").unwrap();
            assert_eq!(ident.invoke::<_, i64>((3,)).unwrap(), 3);
            let e = engine.wait_ready().unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("1 worker(s) failed to start")
                    && msg.contains("did not stop when interrupted"),
                "{msg}"
            );
            assert!(
                engine
                    .warnings()
                    .iter()
                    .any(|w| w.contains("stubborn_unless_first") && w.contains("abandoned")),
                "{:?}",
                engine.warnings()
            );
            let futs: Vec<_> = (0..20i64)
                .map(|i| ident.submit::<_, i64>((i,)).unwrap())
                .collect();
            for (i, f) in futs.into_iter().enumerate() {
                assert_eq!(resolve(f).unwrap(), i as i64);
            }
            let report = engine.shutdown();
            assert!(report.drained, "{report:?}");
        },
    );
}

#[test]
fn shutdown_interrupts_an_initializer_still_running() {
    in_child("shutdown_interrupts_an_initializer_still_running", |mode| {
        // Own interpreters only: the main lane runs its initializers once.
        if mode != Mode::SubInterpreters {
            return;
        }
        let (first, started, stopped) = (flag("first"), flag("started"), flag("stopped"));
        let engine = builder(mode)
            .workers(2)
            // The interrupt lands long before a loaded host could run out
            // of this grace (nothing is to be abandoned).
            .interrupt_grace(GENEROUS)
            .initializer(
                "hostile",
                "spin_unless_first",
                [&first, &started, &stopped].map(|p| Value::from(path_arg(p))),
            )
            .build()
            .unwrap();
        let ident = engine.load("hostile", "ident").unwrap();
        assert_eq!(ident.invoke::<_, i64>((5,)).unwrap(), 5);
        // The other worker is inside its initializer, far from its
        // 120 s start-up timeout.
        wait_flag(&started);
        let report = engine.shutdown();
        assert!(report.drained, "{report:?}");
        assert_eq!(report.abandoned, 0, "{report:?}");
        assert!(stopped.exists(), "the initializer was not interrupted");
    });
}

/// Submits a task whose commit closure writes `committing`, then never
/// returns.
fn submit_stuck(h: &gilpool::Handler, committing: &std::path::Path) -> TaskFuture<i64> {
    let committing = committing.to_path_buf();
    h.submit_with(
        move || -> Result<(i64,)> {
            std::fs::write(&committing, "in commit").unwrap();
            loop {
                std::thread::park();
            }
        },
        |obj| i64::from_python(&obj),
    )
    .unwrap()
}

#[test]
fn a_commit_closure_that_never_returns_on_a_worker_hangs_no_future() {
    in_child(
        "a_commit_closure_that_never_returns_on_a_worker_hangs_no_future",
        |mode| {
            let engine = builder(mode).workers(1).build().unwrap();
            // Keeps the only worker busy until its deadline interrupts it.
            let spin = engine
                .handler("hostile", "spin_flagged")
                .timeout(Duration::from_millis(500))
                .load()
                .unwrap();
            let ident = engine
                .handler("hostile", "ident")
                .batch_size(1)
                .prefetch_depth(1)
                .load()
                .unwrap();
            let started = flag("busy");
            let busy = spin.submit::<_, Value>((path_arg(&started),)).unwrap();
            wait_flag(&started);
            // Committed by this thread (the prefetch slot is free) and
            // queued behind the busy task: it holds the slot.
            let before = ident.submit::<_, i64>((1,)).unwrap();
            // Waits in the batcher; the worker commits it when it starts
            // `before`, and the commit never returns.
            let committing = flag("committing");
            let stuck = submit_stuck(&ident, &committing);
            wait_flag(&committing);
            let e = resolve(busy).unwrap_err();
            assert!(e.is_timeout(), "{e}");
            let report = engine.shutdown_timeout(Duration::from_millis(200));
            assert!(!report.drained, "{report:?}");
            let e = resolve(before).unwrap_err();
            assert!(e.is_cancelled(), "{e}");
            let e = resolve(stuck).unwrap_err();
            assert!(e.is_cancelled() && e.to_string().contains("commit"), "{e}");
        },
    );
}

#[test]
fn a_commit_closure_that_never_returns_on_a_submitter_hangs_no_other_future() {
    in_child(
        "a_commit_closure_that_never_returns_on_a_submitter_hangs_no_other_future",
        |mode| {
            let engine = builder(mode).workers(1).build().unwrap();
            // Batches of two, formed when the second task arrives: by the
            // thread submitting it, which then runs both commit closures.
            let ident = engine
                .handler("hostile", "ident")
                .batch_size(2)
                .max_batch_delay(Duration::from_secs(3600))
                .load()
                .unwrap();
            let committing = flag("committing");
            let stuck = submit_stuck(&ident, &committing);
            let second = ident.clone();
            // This thread's own submit never returns: it runs the closure.
            std::thread::spawn(move || second.submit::<_, i64>((2,)));
            wait_flag(&committing);
            let report = engine.shutdown_timeout(Duration::from_millis(200));
            assert!(!report.drained, "{report:?}");
            let e = resolve(stuck).unwrap_err();
            assert!(e.is_cancelled() && e.to_string().contains("commit"), "{e}");
        },
    );
}

#[test]
fn non_daemon_threads_are_waited_for_then_abandoned() {
    in_child("non_daemon_threads_are_waited_for_then_abandoned", |mode| {
        // A thread that ends within the shutdown deadline is waited for.
        let engine = builder(mode)
            .shutdown_timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let t = engine.load("hostile", "nondaemon_thread").unwrap();
        assert_eq!(t.invoke::<_, i64>((0.3,)).unwrap(), 1);
        let report = engine.shutdown();
        assert_eq!(report.abandoned, 0, "{report:?}");
        // One that never ends: abandoned at the deadline, never a hang.
        let engine = builder(mode)
            .shutdown_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let t = engine.load("hostile", "nondaemon_thread").unwrap();
        assert_eq!(t.invoke::<_, i64>((1e9,)).unwrap(), 1);
        let report = engine.shutdown();
        if mode == Mode::SubInterpreters {
            assert_eq!(report.abandoned, 1, "{report:?}");
        }
        let e = gilpool::finalize_timeout(Duration::from_millis(300)).unwrap_err();
        assert!(e.is_init(), "{e}");
    });
}

#[test]
fn a_child_forked_in_a_task_leaves_when_it_returns_into_gilpool() {
    in_child(
        "a_child_forked_in_a_task_leaves_when_it_returns_into_gilpool",
        |mode| {
            let engine = builder(mode).workers(1).build().unwrap();
            let fork = engine.load("hostile", "fork_and_return").unwrap();
            let fork_exit = engine.load("hostile", "fork_and_exit").unwrap();
            if mode == Mode::SingleGil {
                assert_eq!(fork.invoke::<_, i64>(()).unwrap(), 0);
                assert_eq!(fork_exit.invoke::<_, i64>((7,)).unwrap(), 7);
            } else {
                // Own-GIL subinterpreters refuse fork.
                let e = fork.invoke::<_, i64>(()).unwrap_err();
                assert!(e.is_python(), "{e}");
            }
            let plain = engine.load("hostile", "spin").unwrap();
            assert_eq!(plain.invoke::<_, i64>((3,)).unwrap(), 3);
            engine.shutdown();
        },
    );
}

//! Caller-runs `invoke`: a call runs on the calling thread in an idle
//! worker's interpreter, or is queued. Facts only: which thread ran each call
//! is checked against the metrics, never how many ran where.

mod common;

use gilpool::{EngineBuilder, Held, Mode};
use std::sync::Arc;
use std::time::Duration;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/caller");
const CHILD_ENV: &str = "GILPOOL_CALLER_CHILD";

fn builder(mode: Mode) -> EngineBuilder {
    common::builder(mode).sys_path(FIXTURES)
}

/// CPython's ident of this thread (`threading.get_ident()`).
fn this_thread() -> i64 {
    // SAFETY: pthread_self has no preconditions.
    (unsafe { libc::pthread_self() }) as i64
}

/// Every call either ran on the caller's thread (and was counted as lent)
/// or on a worker's: the two counts agree, and every result is right.
#[test]
fn calls_run_on_the_caller_or_a_worker_and_are_counted_so() {
    for mode in common::modes() {
        let engine = builder(mode).build().unwrap();
        let ident = engine.load("caller_fixture", "ident").unwrap();
        let me = this_thread();
        let ran_here = (0..500)
            .filter(|_| ident.invoke::<_, i64>(()).unwrap() == me)
            .count() as u64;
        let m = engine.metrics();
        let lent: u64 = m.workers.iter().map(|w| w.lent).sum();
        let tasks: u64 = m.workers.iter().map(|w| w.tasks).sum();
        println!("{mode}: {ran_here} of 500 calls ran on the calling thread");
        assert_eq!(lent, ran_here, "{mode}");
        assert_eq!(tasks, 500, "{mode}");
        let h = &m.handlers[0];
        assert_eq!((h.submitted, h.completed, h.in_flight), (500, 500, 0));
        engine.shutdown();
    }
}

#[test]
fn caller_runs_off_always_queues() {
    for mode in common::modes() {
        let engine = builder(mode).build().unwrap();
        let ident = engine
            .handler("caller_fixture", "ident")
            .caller_runs(false)
            .load()
            .unwrap();
        let me = this_thread();
        for _ in 0..100 {
            assert_ne!(ident.invoke::<_, i64>(()).unwrap(), me);
        }
        assert_eq!(
            engine.metrics().workers.iter().map(|w| w.lent).sum::<u64>(),
            0
        );
        engine.shutdown();
    }
}

/// Callers on several threads, beside queued work, all get their own
/// results; every task is counted once.
#[test]
fn many_callers_beside_queued_work() {
    for mode in common::modes() {
        let engine = Arc::new(builder(mode).build().unwrap());
        let inc = engine.load("caller_fixture", "inc").unwrap();
        let queued: Vec<_> = (0..500i64)
            .map(|i| inc.submit::<_, i64>((i,)).unwrap())
            .collect();
        let callers: Vec<_> = (0..4i64)
            .map(|t| {
                let inc = inc.clone();
                std::thread::spawn(move || {
                    for i in 0..300i64 {
                        let x = t * 1000 + i;
                        assert_eq!(inc.invoke::<_, i64>((x,)).unwrap(), x + 1);
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
        for (i, f) in queued.into_iter().enumerate() {
            assert_eq!(f.wait().unwrap(), i as i64 + 1);
        }
        let m = engine.metrics();
        assert_eq!(m.workers.iter().map(|w| w.tasks).sum::<u64>(), 1700);
        assert_eq!(m.handlers[0].completed, 1700);
        drop(inc);
        Arc::try_unwrap(engine).ok().unwrap().shutdown();
    }
}

/// A `Held` made by a call on the caller's thread lives in that worker's
/// interpreter and is used there again, whoever runs the next call.
#[test]
fn held_results_of_caller_runs_stay_in_their_interpreter() {
    for mode in common::modes() {
        let engine = builder(mode).build().unwrap();
        let echo = engine.load("caller_fixture", "echo").unwrap();
        let add = engine.load("caller_fixture", "add").unwrap();
        for i in 0..50i64 {
            let kept: Held = echo.invoke((i,)).unwrap();
            assert_eq!(add.invoke::<_, i64>((kept.clone(), 1)).unwrap(), i + 1);
            let queued = add.submit::<_, i64>((kept, 2)).unwrap();
            assert_eq!(queued.wait().unwrap(), i + 2);
        }
        engine.shutdown();
    }
}

/// Threads that called and exited leave nothing behind that stops the
/// engine or Python from ending: checked in a child process, which
/// finalises.
#[test]
fn threads_that_called_then_exited_let_everything_end() {
    if std::env::var_os(CHILD_ENV).is_some() {
        for mode in common::modes() {
            let engine = builder(mode).build().unwrap();
            let inc = engine.load("caller_fixture", "inc").unwrap();
            for t in 0..40i64 {
                let inc = inc.clone();
                std::thread::spawn(move || {
                    assert_eq!(inc.invoke::<_, i64>((t,)).unwrap(), t + 1);
                })
                .join()
                .unwrap();
            }
            assert_eq!(inc.invoke::<_, i64>((1,)).unwrap(), 2);
            engine.shutdown();
        }
        gilpool::finalize().unwrap();
        return;
    }
    common::run_self(
        "threads_that_called_then_exited_let_everything_end",
        Some((CHILD_ENV, "1")),
    )
    .assert_success("child: threads invoked, exited, the engine shut down, Python finalised");
}

/// Shutdown while a long call runs (on the caller's thread or a worker's):
/// the call is interrupted, `invoke` returns an error, shutdown ends.
#[test]
fn shutdown_interrupts_a_long_call() {
    for mode in common::modes() {
        let engine = builder(mode).workers(1).build().unwrap();
        let spin = engine.load("caller_fixture", "spin_flagged").unwrap();
        let dir =
            std::env::temp_dir().join(format!("gilpool-caller-{}-{mode}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flag = dir.join("started");
        let _ = std::fs::remove_file(&flag);
        let path = flag.to_string_lossy().into_owned();
        let caller = std::thread::spawn(move || {
            spin.invoke::<_, i64>((path, 120.0))
                .map_err(|e| e.to_string())
        });
        while !flag.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let report = engine.shutdown_timeout(Duration::from_millis(200));
        let out = caller.join().unwrap();
        assert!(out.is_err(), "{mode}: {out:?}");
        assert_eq!(report.abandoned, 0, "{mode}: {report:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Shutdown while a call sleeps in C (an interrupt cannot stop it): the
/// engine gives its interpreter up and shutdown still ends; the process
/// exits 0 without waiting for the call. In a child process.
#[test]
fn shutdown_gives_up_a_call_blocked_in_c() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let mode = if Mode::SubInterpreters.is_supported() {
            Mode::SubInterpreters
        } else {
            Mode::SingleGil
        };
        let engine = builder(mode)
            .workers(1)
            .interrupt_grace(Duration::from_millis(200))
            .build()
            .unwrap();
        let sleep = engine.load("caller_fixture", "sleep_flagged").unwrap();
        let dir = std::env::temp_dir().join(format!("gilpool-caller-c-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flag = dir.join("started");
        let path = flag.to_string_lossy().into_owned();
        std::thread::spawn(move || sleep.invoke::<_, f64>((path, 600.0)));
        while !flag.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let report = engine.shutdown_timeout(Duration::from_millis(100));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(report.abandoned >= 1, "{report:?}");
        println!("shutdown ended: {report:?}");
        std::process::exit(0);
    }
    common::run_self(
        "shutdown_gives_up_a_call_blocked_in_c",
        Some((CHILD_ENV, "1")),
    )
    .assert_success("child: shutdown under a call blocked in C");
}

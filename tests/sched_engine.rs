//! The scheduler seen through the engine: vectorized batches and their
//! contract, opportunistic and delayed batching, the commit/callback stages
//! and the prefetch bound, panics in closures, backpressure, `map` order
//! and window, and shutdown with queued work.
//!
//! Every test builds its own 2-worker engine; the tests of this binary run
//! concurrently in one process. Nothing here asserts a wall-clock time:
//! waits use generous timeouts only to turn a hang into a failure.

mod common;

use common::resolve;

use gilpool::{Engine, FromPython, MapChunks, Object};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// This binary's fixtures (`sched_fixtures`).
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sched");
/// How long a future may take before the test calls it hung.
const GENEROUS: Duration = Duration::from_secs(10);
/// A `max_batch_delay` long enough that a batch only forms when full.
const FOREVER: Duration = Duration::from_secs(30);

fn engine() -> Engine {
    common::builder(gilpool::Mode::Auto)
        .sys_path(FIXTURES)
        .build()
        .expect("the engine builds")
}

/// A callback that blocks (holding its worker) until `gate` opens, then
/// reads the result as an `i64`.
fn gated(
    gate: Receiver<()>,
) -> impl for<'py> FnOnce(Object<'py>) -> gilpool::Result<i64> + Send + 'static {
    move |obj| {
        let _ = gate.recv_timeout(Duration::from_secs(60));
        i64::from_python(&obj)
    }
}

/// Like [`gated`], for callbacks that share one gate: each takes one token.
fn gated_shared(
    gate: Arc<Mutex<Receiver<()>>>,
) -> impl for<'py> FnOnce(Object<'py>) -> gilpool::Result<i64> + Send + 'static {
    move |obj| {
        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(60));
        i64::from_python(&obj)
    }
}

#[test]
fn vectorized_results_map_back_to_their_own_futures() {
    let engine = engine();
    let double = engine
        .handler("sched_fixtures", "double_all")
        .vectorized(true)
        .batch_size(8)
        .load()
        .unwrap();
    let futures: Vec<_> = (0..1000i64)
        .map(|i| (i, double.submit::<_, i64>((i,)).unwrap()))
        .collect();
    for (i, fut) in futures {
        assert_eq!(
            resolve(fut, GENEROUS).unwrap(),
            2 * i,
            "task {i} got another task's result"
        );
    }
    // A task with keywords cannot join a batch: it alone fails, saying so.
    let kw = double
        .submit::<_, i64>(gilpool::Args::new().arg(1).kwarg("k", 2))
        .unwrap();
    let plain = double.submit::<_, i64>((21,)).unwrap();
    let e = resolve(kw, GENEROUS).unwrap_err();
    assert!(
        e.is_config() && e.to_string().contains("cannot take keyword arguments"),
        "{e}"
    );
    assert_eq!(resolve(plain, GENEROUS).unwrap(), 42);

    // heavy_batch, checked against the unbatched function task by task.
    let heavy = engine.load("gilpool_workloads", "heavy").unwrap();
    let heavy_batch = engine
        .handler("gilpool_workloads", "heavy_batch")
        .vectorized(true)
        .batch_size(8)
        .load()
        .unwrap();
    let inputs: Vec<i64> = (0..64).map(|i| 10 + 7 * i).collect();
    let futures: Vec<_> = inputs
        .iter()
        .map(|&n| heavy_batch.submit::<_, i64>((n,)).unwrap())
        .collect();
    for (&n, fut) in inputs.iter().zip(futures) {
        let expected: i64 = heavy.invoke((n,)).unwrap();
        assert_eq!(
            resolve(fut, GENEROUS).unwrap(),
            expected,
            "heavy_batch result for input {n}"
        );
    }
    engine.shutdown();
}

/// Submits 4 tasks to a batch-of-4 handler that only runs full batches, so
/// they form exactly one batch; returns their results.
fn one_full_batch(engine: &Engine, function: &str) -> Vec<gilpool::Result<i64>> {
    let h = engine
        .handler("sched_fixtures", function)
        .vectorized(true)
        .batch_size(4)
        .max_batch_delay(FOREVER)
        .load()
        .unwrap();
    let futures: Vec<_> = (0..4i64)
        .map(|i| h.submit::<_, i64>((i,)).unwrap())
        .collect();
    futures.into_iter().map(|f| resolve(f, GENEROUS)).collect()
}

#[test]
fn broken_vectorized_contract_fails_the_whole_batch_and_the_worker_goes_on() {
    let engine = engine();

    for result in one_full_batch(&engine, "not_a_list") {
        let e = result.expect_err("a non-list result must fail every task of the batch");
        assert!(e.is_batch_shape(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("sched_fixtures:not_a_list"),
            "message must name the handler: {msg}"
        );
        assert!(
            msg.contains("list of 4 results"),
            "message must name the expected length: {msg}"
        );
        assert!(
            msg.contains("tuple"),
            "message must name what came back: {msg}"
        );
    }

    for result in one_full_batch(&engine, "wrong_length") {
        let e = result.expect_err("a list of the wrong length must fail every task of the batch");
        assert!(e.is_batch_shape(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("sched_fixtures:wrong_length"),
            "message must name the handler: {msg}"
        );
        assert!(
            msg.contains("list of 4 inputs"),
            "message must name the input length: {msg}"
        );
        assert!(
            msg.contains("list of 5 results"),
            "message must name the output length: {msg}"
        );
    }

    // The workers keep serving: the same broken handlers fail the same way
    // (no poisoned state), and well-behaved handlers succeed on both workers.
    assert!(one_full_batch(&engine, "wrong_length")
        .iter()
        .all(|r| r.as_ref().is_err_and(|e| e.is_batch_shape())));
    let double = engine
        .handler("sched_fixtures", "double_all")
        .vectorized(true)
        .batch_size(4)
        .load()
        .unwrap();
    let inc = engine.load("gilpool_workloads", "inc").unwrap();
    let doubled: Vec<_> = (0..40i64)
        .map(|i| double.submit::<_, i64>((i,)).unwrap())
        .collect();
    let incremented: Vec<_> = (0..40i64)
        .map(|i| inc.submit::<_, i64>((i,)).unwrap())
        .collect();
    for (i, (d, n)) in doubled.into_iter().zip(incremented).enumerate() {
        let i = i as i64;
        assert_eq!(resolve(d, GENEROUS).unwrap(), 2 * i);
        assert_eq!(resolve(n, GENEROUS).unwrap(), i + 1);
    }
    engine.shutdown();
}

#[test]
fn a_lone_task_does_not_wait_for_a_full_batch() {
    let engine = engine();
    let inc = engine
        .handler("gilpool_workloads", "inc")
        .batch_size(64)
        .load()
        .unwrap();
    let fut = inc.submit::<_, i64>((41,)).unwrap();
    assert_eq!(resolve(fut, GENEROUS).unwrap(), 42);
    // And again, with the handler warm.
    let fut = inc.submit::<_, i64>((1,)).unwrap();
    assert_eq!(resolve(fut, GENEROUS).unwrap(), 2);
    engine.shutdown();
}

#[test]
fn max_batch_delay_gathers_batches_and_still_runs_a_lone_task() {
    let engine = engine();
    let sizes = engine
        .handler("sched_fixtures", "batch_len")
        .vectorized(true)
        .batch_size(4)
        .max_batch_delay(Duration::from_millis(50))
        .load()
        .unwrap();
    let futures: Vec<_> = (0..4i64)
        .map(|i| sizes.submit::<_, i64>((i,)).unwrap())
        .collect();
    let seen: Vec<i64> = futures
        .into_iter()
        .map(|f| resolve(f, GENEROUS).unwrap())
        .collect();
    assert!(
        seen.iter().all(|&n| (1..=4).contains(&n)),
        "batch sizes {seen:?}"
    );
    assert!(
        seen.iter().any(|&n| n > 1),
        "4 quick submits with a 50 ms delay formed only batches of 1: {seen:?}"
    );

    // A lone task runs once its delay has passed.
    let fut = sizes.submit::<_, i64>((0,)).unwrap();
    assert_eq!(resolve(fut, GENEROUS).unwrap(), 1);
    assert_eq!(sizes.staged(), (0, 0));
    engine.shutdown();
}

/// In both modes (a SingleGil worker commits the next prefetched batch on
/// the main interpreter's side, and must hold no GIL while it does).
#[test]
fn commit_runs_detached_ahead_of_execution_within_the_prefetch_bound() {
    for mode in common::modes() {
        commit_ahead_within_the_prefetch_bound(mode);
    }
}

fn commit_ahead_within_the_prefetch_bound(mode: gilpool::Mode) {
    const TASKS: usize = 400;
    const BATCH: usize = 4;
    const PREFETCH: usize = 2;
    const WORKERS: usize = 2;
    const BOUND: i64 = ((PREFETCH + WORKERS) * BATCH) as i64;

    let engine = common::builder(mode)
        .sys_path(FIXTURES)
        .build()
        .expect("the engine builds");
    let spin = engine
        .handler("gilpool_workloads", "spin")
        .batch_size(BATCH)
        .prefetch_depth(PREFETCH)
        .load()
        .unwrap();
    let committed = Arc::new(AtomicI64::new(0));
    let executed = Arc::new(AtomicI64::new(0));
    let max_lead = Arc::new(AtomicI64::new(0));
    let max_outstanding = Arc::new(AtomicUsize::new(0));
    let commit_attached = Arc::new(AtomicBool::new(false));
    let callback_detached = Arc::new(AtomicBool::new(false));

    let mut futures = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let (committed, seen, max_lead, max_outstanding, commit_attached, handler) = (
            committed.clone(),
            executed.clone(),
            max_lead.clone(),
            max_outstanding.clone(),
            commit_attached.clone(),
            spin.clone(),
        );
        let commit = move || {
            if gilpool::is_attached() {
                commit_attached.store(true, Ordering::SeqCst);
            }
            let c = committed.fetch_add(1, Ordering::SeqCst) + 1;
            let lead = c - seen.load(Ordering::SeqCst);
            max_lead.fetch_max(lead, Ordering::SeqCst);
            // This task's batch is taken and not started: it holds a slot.
            max_outstanding.fetch_max(handler.staged().1, Ordering::SeqCst);
            Ok((1,))
        };
        let (executed, callback_detached) = (executed.clone(), callback_detached.clone());
        let callback = move |obj: Object<'_>| {
            if !gilpool::is_attached() {
                callback_detached.store(true, Ordering::SeqCst);
            }
            executed.fetch_add(1, Ordering::SeqCst);
            i64::from_python(&obj)
        };
        futures.push(spin.submit_with(commit, callback).unwrap());
    }
    for fut in futures {
        assert_eq!(resolve(fut, GENEROUS).unwrap(), 1);
    }
    engine.shutdown();

    assert!(
        !commit_attached.load(Ordering::SeqCst),
        "{mode}: a commit closure ran attached to an interpreter"
    );
    assert!(
        !callback_detached.load(Ordering::SeqCst),
        "a callback ran detached"
    );
    assert_eq!(committed.load(Ordering::SeqCst), TASKS as i64);
    assert_eq!(executed.load(Ordering::SeqCst), TASKS as i64);
    let outstanding = max_outstanding.load(Ordering::SeqCst);
    assert!(
        (1..=PREFETCH).contains(&outstanding),
        "{outstanding} batches were committed and not started at once; prefetch_depth is {PREFETCH}"
    );
    let lead = max_lead.load(Ordering::SeqCst);
    assert!(
        lead <= BOUND,
        "commits ran {lead} tasks ahead of execution; the bound is (prefetch {PREFETCH} + workers {WORKERS}) x batch {BATCH} = {BOUND}"
    );
    assert!(
        lead > BATCH as i64,
        "commits never ran more than one batch ahead of execution (max lead {lead})"
    );
}

#[test]
fn a_panicking_commit_or_callback_fails_only_its_own_task() {
    let engine = engine();
    // batch_len tells each task the size of the batch it ran in; with an
    // endless delay the 4 tasks form one batch.
    let sizes = engine
        .handler("sched_fixtures", "batch_len")
        .vectorized(true)
        .batch_size(4)
        .max_batch_delay(FOREVER)
        .load()
        .unwrap();
    let bad_commit = sizes
        .submit_with(
            || -> gilpool::Result<(i64,)> { panic!("commit boom") },
            |obj| i64::from_python(&obj),
        )
        .unwrap();
    let bad_callback = sizes
        .submit_with(
            || Ok((1,)),
            |_obj| -> gilpool::Result<i64> { panic!("callback boom") },
        )
        .unwrap();
    let good: Vec<_> = (0..2i64)
        .map(|i| sizes.submit::<_, i64>((i,)).unwrap())
        .collect();

    let e = resolve(bad_commit, GENEROUS).unwrap_err();
    assert!(e.is_panic(), "{e}");
    assert!(e.to_string().contains("commit boom"), "{e}");
    let e = resolve(bad_callback, GENEROUS).unwrap_err();
    assert!(e.is_panic(), "{e}");
    assert!(e.to_string().contains("callback boom"), "{e}");
    for fut in good {
        // The batch ran without the task whose commit failed: 3 tasks.
        assert_eq!(resolve(fut, GENEROUS).unwrap(), 3);
    }

    // The same with an unbatched-call handler running a batch of 4.
    let inc = engine
        .handler("gilpool_workloads", "inc")
        .batch_size(4)
        .max_batch_delay(FOREVER)
        .load()
        .unwrap();
    let first = inc.submit::<_, i64>((10,)).unwrap();
    let bad_commit = inc
        .submit_with(
            || -> gilpool::Result<(i64,)> { panic!("commit boom") },
            |obj| i64::from_python(&obj),
        )
        .unwrap();
    let bad_callback = inc
        .submit_with(
            || Ok((1,)),
            |_obj| -> gilpool::Result<i64> { panic!("callback boom") },
        )
        .unwrap();
    let last = inc.submit::<_, i64>((20,)).unwrap();
    assert!(resolve(bad_commit, GENEROUS).unwrap_err().is_panic());
    assert!(resolve(bad_callback, GENEROUS).unwrap_err().is_panic());
    assert_eq!(resolve(first, GENEROUS).unwrap(), 11);
    assert_eq!(resolve(last, GENEROUS).unwrap(), 21);
    engine.shutdown();
    assert_eq!(inc.in_flight(), 0);
}

#[test]
fn backpressure_full_timeout_blocking_and_shutdown() {
    let engine = engine();
    let spin = engine
        .handler("gilpool_workloads", "spin")
        .max_in_flight(2)
        .load()
        .unwrap();
    assert_eq!(spin.max_in_flight(), 2);

    // Two tasks that stay in flight until the gate lets them through, one
    // per token. They share one gate: under SingleGil (Python < 3.12) a
    // blocked callback holds the one GIL, so only the task that started
    // first can take a token — per-task gates would deadlock whenever `b`
    // happens to start before `a`.
    let (open_a, gate) = channel();
    let open_b = open_a.clone();
    let gate = Arc::new(Mutex::new(gate));
    let a = spin
        .submit_with(|| Ok((200,)), gated_shared(gate.clone()))
        .unwrap();
    let b = spin.submit_with(|| Ok((200,)), gated_shared(gate)).unwrap();
    assert_eq!(spin.in_flight(), 2);

    let e = spin.try_submit::<_, i64>((200,)).unwrap_err();
    assert!(e.is_full(), "{e}");
    assert!(!e.is_shutdown());
    assert!(e.error().is_full());
    assert_eq!(e.into_inner(), (200,));

    let e = spin
        .submit_timeout::<_, i64>((201,), Duration::from_millis(10))
        .unwrap_err();
    assert!(
        e.error().is_timeout(),
        "submit_timeout on a full handler: {e}"
    );
    assert!(!e.is_full() && !e.is_shutdown(), "{e}");
    assert_eq!(e.into_inner(), (201,));

    // A blocking submit waits for room...
    let (done_tx, done_rx) = channel();
    let blocked = {
        let spin = spin.clone();
        thread::spawn(move || {
            let fut = spin.submit::<_, i64>((1,));
            done_tx.send(()).unwrap();
            fut.and_then(|f| resolve(f, GENEROUS))
        })
    };
    assert!(
        done_rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "submit returned while the handler was full"
    );
    // ...and proceeds once a task finishes.
    open_a.send(()).unwrap();
    done_rx
        .recv_timeout(GENEROUS)
        .expect("the blocked submit proceeds once room appears");
    // Release the other gated task before waiting on the new one: under a
    // shared GIL its blocked callback would keep the new task from running.
    open_b.send(()).unwrap();
    assert_eq!(blocked.join().unwrap().unwrap(), 1);
    assert_eq!(resolve(a, GENEROUS).unwrap(), 200);
    assert_eq!(resolve(b, GENEROUS).unwrap(), 200);

    engine.shutdown();
    assert_eq!(spin.in_flight(), 0);
    let e = spin.try_submit::<_, i64>((1,)).unwrap_err();
    assert!(e.is_shutdown(), "{e}");
    assert_eq!(e.into_inner(), (1,));
    let e = spin
        .submit_timeout::<_, i64>((1,), Duration::from_millis(10))
        .unwrap_err();
    assert!(e.is_shutdown(), "{e}");
    let e = spin.submit::<_, i64>((1,)).unwrap_err();
    assert!(e.is_shutdown(), "{e}");
}

/// Once a task's future has resolved, the task no longer counts against
/// `max_in_flight`: a handler bounded at 1 takes the next task at once.
#[test]
fn a_resolved_future_has_returned_its_permit() {
    let engine = engine();
    let inc = engine
        .handler("gilpool_workloads", "inc")
        .max_in_flight(1)
        .load()
        .unwrap();
    let mut fut = inc.submit::<_, i64>((0,)).unwrap();
    for i in 1..=2000i64 {
        assert_eq!(resolve(fut, GENEROUS).unwrap(), i);
        let in_flight = inc.in_flight();
        fut = inc.try_submit::<_, i64>((i,)).unwrap_or_else(|e| {
            panic!(
                "round {i}: try_submit after the only task's future resolved: {e} \
                 (in_flight() was {in_flight} with nothing unresolved)"
            )
        });
    }
    assert_eq!(resolve(fut, GENEROUS).unwrap(), 2001);
    engine.shutdown();
}

#[test]
fn shutdown_wakes_a_submitter_blocked_on_a_full_handler() {
    let engine = engine();
    let spin = engine
        .handler("gilpool_workloads", "spin")
        .max_in_flight(1)
        .load()
        .unwrap();
    let (open, gate) = channel();
    let held = spin.submit_with(|| Ok((1,)), gated(gate)).unwrap();

    let (tx, rx) = channel();
    let blocked = {
        let spin = spin.clone();
        thread::spawn(move || tx.send(spin.submit::<_, i64>((1,)).map(drop)).unwrap())
    };
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "submit returned while full"
    );
    // Shutdown (drain) refuses new work at once, then waits for `held`.
    let stopper = thread::spawn(move || engine.shutdown());
    let outcome = rx
        .recv_timeout(GENEROUS)
        .expect("shutdown must wake a submitter blocked on a full handler");
    let e = outcome.expect_err("the blocked submit must fail once the engine shuts down");
    assert!(e.is_shutdown(), "{e}");
    open.send(()).unwrap();
    stopper.join().unwrap();
    blocked.join().unwrap();
    assert_eq!(resolve(held, GENEROUS).unwrap(), 1);
}

/// Lengths of the runs of equal values, in order.
fn runs(values: &[i64]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 && values[i - 1] == *v {
            *out.last_mut().unwrap() += 1;
        } else {
            out.push(1);
        }
    }
    out
}

#[test]
fn guided_map_sends_large_chunks_first_and_matches_fixed_chunks() {
    let engine = engine();
    let load = |chunks| {
        engine
            .handler("sched_fixtures", "worker_thread")
            .map_chunks(chunks)
            .load()
            .unwrap()
    };
    let (guided, fixed) = (load(MapChunks::Guided), load(MapChunks::Batch));
    // 4000 inputs, 2 workers, own-GIL subinterpreters: the first guided
    // chunk is 4000 / (4 * 2) = 500 inputs, and a chunk runs on one worker,
    // so the first 500 results come from one thread. Later chunks shrink:
    // the last inputs go one by one. (With one shared GIL, guided falls
    // back to batch_size chunks.)
    let threads: Vec<i64> = guided
        .map((0..4000i64).map(|i| (i,)))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(threads.len(), 4000);
    if engine.mode() == gilpool::Mode::SubInterpreters {
        assert!(
            runs(&threads)[0] >= 500,
            "first run {:?}",
            &runs(&threads)[..4]
        );
    }
    // The same inputs through an iterator with no length: batch-size
    // chunks (here 1), same results in the same order.
    let mut left = 0..300i64;
    let unknown = std::iter::from_fn(move || left.next().map(|i| (i,)));
    let inc = engine.handler("gilpool_workloads", "inc").load().unwrap();
    let out: Vec<i64> = inc.map(unknown).collect::<Result<_, _>>().unwrap();
    assert_eq!(out, (1..=300).collect::<Vec<i64>>());
    // Guided and fixed chunks give the same results for every length and
    // window, including windows smaller than a guided chunk would be.
    let inc_fixed = engine
        .handler("gilpool_workloads", "inc")
        .batch_size(3)
        .map_chunks(MapChunks::Batch)
        .load()
        .unwrap();
    for n in [0i64, 1, 2, 7, 64, 65, 1000] {
        for window in [1usize, 3, 4096] {
            let want: Vec<i64> = (1..=n).collect();
            for h in [&inc, &inc_fixed] {
                let got: Vec<i64> = h
                    .map_window((0..n).map(|i| (i,)), window)
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(got, want, "n {n}, window {window}");
            }
        }
    }
    // Fixed chunks of 1 are one task each: results still in order.
    let ids: Vec<i64> = fixed
        .map((0..200i64).map(|i| (i,)))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids.len(), 200);
}

#[test]
fn map_keeps_input_order_and_a_bounded_window() {
    let engine = engine();
    let inc = engine
        .handler("gilpool_workloads", "inc")
        .batch_size(16)
        .load()
        .unwrap();
    let out: Vec<i64> = inc
        .map((0..20_000i64).map(|i| (i,)))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out.len(), 20_000);
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, i as i64 + 1, "map result {i} out of order");
    }

    const N: i64 = 100_000;
    const WINDOW: usize = 64;
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let inputs = (0..N).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        (i,)
    });
    let mut yielded = 0usize;
    let mut sum = 0i64;
    for (i, r) in inc.map_window(inputs, WINDOW).enumerate() {
        let v: i64 = r.unwrap();
        assert_eq!(v, i as i64 + 1);
        yielded += 1;
        sum += v;
        let ahead = pulled.load(Ordering::SeqCst) - yielded;
        assert!(
            ahead <= WINDOW,
            "map pulled {ahead} inputs ahead of its output (window {WINDOW})"
        );
        // A worker returns a task's permit just after completing its future
        // (see `a_resolved_future_has_returned_its_permit`), so up to one
        // finished task per worker may still hold one.
        let in_flight = inc.in_flight();
        assert!(
            in_flight <= WINDOW + 2,
            "{in_flight} tasks in flight (window {WINDOW})"
        );
    }
    assert_eq!(yielded, N as usize);
    assert_eq!(sum, N * (N + 1) / 2);
    engine.shutdown();
}

#[test]
fn shutdown_drains_queued_work() {
    let engine = engine();
    let spin = engine.load("gilpool_workloads", "spin").unwrap();
    let futures: Vec<_> = (0..200)
        .map(|_| spin.submit::<_, i64>((5,)).unwrap())
        .collect();
    engine.shutdown();
    for (i, fut) in futures.into_iter().enumerate() {
        assert!(
            fut.is_ready(),
            "task {i} still pending after shutdown returned"
        );
        assert_eq!(
            resolve(fut, Duration::from_secs(30)).unwrap(),
            5,
            "task {i}"
        );
    }
}

#[test]
fn shutdown_now_resolves_every_queued_future() {
    let engine = engine();
    let spin = engine.load("gilpool_workloads", "spin").unwrap();
    let futures: Vec<_> = (0..200)
        .map(|_| spin.submit::<_, i64>((5,)).unwrap())
        .collect();
    engine.shutdown_now();
    let (mut ok, mut cancelled) = (0, 0);
    for (i, fut) in futures.into_iter().enumerate() {
        assert!(
            fut.is_ready(),
            "task {i} still pending after shutdown_now returned"
        );
        match resolve(fut, Duration::from_secs(30)) {
            Ok(v) => {
                assert_eq!(v, 5);
                ok += 1;
            }
            Err(e) if e.is_cancelled() => cancelled += 1,
            Err(e) => panic!("task {i}: expected Ok or cancelled, got {e}"),
        }
    }
    assert_eq!(ok + cancelled, 200);
    println!("shutdown_now: {ok} ran, {cancelled} cancelled");
}

#[test]
fn map_stream_yields_in_order_within_its_window_with_errors_per_item() {
    use futures_core::Stream;
    use std::pin::Pin;
    for mode in common::modes() {
        let engine = common::builder(mode).build().unwrap();
        for batch in [1usize, 8] {
            let inc = engine
                .handler("gilpool_workloads", "inc")
                .batch_size(batch)
                .max_in_flight(16)
                .load()
                .unwrap();
            // Every seventh input is a string: inc raises for it.
            let inputs = (0..500i64).map(|i| {
                if i % 7 == 0 {
                    gilpool::Args::new().arg("x")
                } else {
                    gilpool::Args::new().arg(i)
                }
            });
            let mut stream = inc.map_stream::<_, _, i64>(inputs, 64);
            let out: Vec<gilpool::Result<i64>> = common::block_on(async {
                let mut out = Vec::new();
                while let Some(r) =
                    std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
                {
                    assert!(inc.in_flight() <= 16);
                    out.push(r);
                }
                out
            });
            assert_eq!(out.len(), 500);
            for (i, r) in out.into_iter().enumerate() {
                if i % 7 == 0 {
                    assert!(r.unwrap_err().is_python());
                } else {
                    assert_eq!(r.unwrap(), i as i64 + 1);
                }
            }
        }
        engine.shutdown();
    }
}

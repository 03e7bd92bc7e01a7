//! Containment costs, per mode this build supports, printed as a table:
//!
//! - **timeout**: a pure-Python loop (`spin(0)`) submitted with a 20 ms
//!   deadline; latency = when its future resolved minus the deadline;
//! - **cancel**: the same loop, cancelled 20 ms after it started; latency =
//!   when its future resolved minus the `cancel()` call;
//! - **quarantine**: a task blocked in C (`time.sleep(3600)`) with a 50 ms
//!   deadline and a 100 ms interrupt grace on a 1-worker engine: how long
//!   after deadline + grace its future resolved, and how long after that the
//!   pool was back to full size (a probe task completed on the replacement
//!   worker, whose fresh interpreter had to be created).
//!
//! `cargo bench --bench interrupt` (TRIALS trials per row; about 30 s).
//! Medians and maxima over the trials; nothing is asserted.

mod common;

use gilpool::{Engine, Mode, Value};
use std::time::{Duration, Instant};

const TRIALS: usize = 100;
const QUARANTINE_TRIALS: usize = 10;

fn engine(mode: Mode, workers: usize, grace: Duration) -> Engine {
    Engine::builder()
        .mode(mode)
        .workers(workers)
        .pin(false)
        .interrupt_grace(grace)
        .sys_path(common::fault_fixtures())
        .build()
        .expect("the engine builds")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (median, max) in milliseconds.
fn summary(mut xs: Vec<Duration>) -> (f64, f64) {
    xs.sort();
    (ms(xs[xs.len() / 2]), ms(*xs.last().unwrap()))
}

fn timeout_latency(mode: Mode) -> (f64, f64) {
    let engine = engine(mode, 2, Duration::from_secs(1));
    let spin = engine.load("hostile", "spin").unwrap();
    let deadline = Duration::from_millis(20);
    let lat = (0..TRIALS)
        .map(|_| {
            let t0 = Instant::now();
            let fut = spin.submit_deadline::<_, Value>((0,), deadline).unwrap();
            let e = fut.wait().unwrap_err();
            assert!(e.is_timeout(), "{e}");
            t0.elapsed().saturating_sub(deadline)
        })
        .collect();
    engine.shutdown();
    summary(lat)
}

fn cancel_latency(mode: Mode) -> (f64, f64) {
    let engine = engine(mode, 2, Duration::from_secs(1));
    let spin = engine.load("hostile", "spin").unwrap();
    let lat = (0..TRIALS)
        .map(|_| {
            let fut = spin.submit::<_, Value>((0,)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let t0 = Instant::now();
            fut.cancel();
            let e = fut.wait().unwrap_err();
            assert!(e.is_cancelled(), "{e}");
            t0.elapsed()
        })
        .collect();
    engine.shutdown();
    summary(lat)
}

fn quarantine_cost(mode: Mode) -> ((f64, f64), (f64, f64)) {
    let grace = Duration::from_millis(100);
    let deadline = Duration::from_millis(50);
    let engine = engine(mode, 1, grace);
    let sleep = engine.load("hostile", "sleep").unwrap();
    let probe = engine.load("hostile", "ident").unwrap();
    let mut resolved = Vec::new();
    let mut back = Vec::new();
    for _ in 0..QUARANTINE_TRIALS {
        let t0 = Instant::now();
        let fut = sleep
            .submit_deadline::<_, Value>((3600.0,), deadline)
            .unwrap();
        let e = fut.wait().unwrap_err();
        assert!(e.is_timeout(), "{e}");
        let at = Instant::now();
        resolved.push(at.duration_since(t0).saturating_sub(deadline + grace));
        assert_eq!(probe.invoke::<_, i64>((1,)).unwrap(), 1);
        back.push(at.elapsed());
    }
    drop(engine);
    (summary(resolved), summary(back))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    println!(
        "gilpool containment costs (Python {}; {} trials, quarantine {} trials)\n",
        gilpool_version(),
        TRIALS,
        QUARANTINE_TRIALS
    );
    println!("| mode | timeout p50 / max (ms) | cancel p50 / max (ms) | quarantine: resolved after deadline+grace p50 / max (ms) | back to full size p50 / max (ms) |");
    println!("|---|---|---|---|---|");
    for mode in common::modes() {
        let t = timeout_latency(mode);
        let c = cancel_latency(mode);
        let (q, b) = quarantine_cost(mode);
        println!(
            "| {mode} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            t.0, t.1, c.0, c.1, q.0, q.1, b.0, b.1
        );
    }
}

fn gilpool_version() -> String {
    let engine = engine(Mode::SingleGil, 1, Duration::from_secs(1));
    let v = engine.python_version().to_string();
    engine.shutdown();
    v
}

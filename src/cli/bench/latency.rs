//! Latency: single calls of `gilpool_workloads.inc(i)`, individually
//! timed — gilpool's `invoke` and `submit` + `wait`, beside a raw call
//! through the FFI layer on this thread.

use super::engines::build_engine;
use super::machine::Machine;
use super::Plan;
use crate::cli::progress;
use gilpool::Mode;
use std::time::Instant;

/// One latency measurement: individually timed calls.
#[derive(Debug)]
pub(super) struct Latency {
    pub(super) what: String,
    pub(super) mode: Option<Mode>,
    pub(super) workers: usize,
    pub(super) samples: usize,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) mean_us: f64,
}

/// Percentiles and mean of individually timed calls (nanoseconds).
fn summarize(what: String, mode: Option<Mode>, workers: usize, mut nanos: Vec<u64>) -> Latency {
    nanos.sort_unstable();
    let n = nanos.len().max(1);
    // Nearest-rank percentile.
    let pick = |q: f64| {
        nanos
            .get(((q * n as f64).ceil() as usize).clamp(1, n) - 1)
            .copied()
            .unwrap_or(0) as f64
            / 1e3
    };
    Latency {
        what,
        mode,
        workers,
        samples: nanos.len(),
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        mean_us: nanos.iter().sum::<u64>() as f64 / n as f64 / 1e3,
    }
}

pub(super) fn measure_latency(plan: &Plan, samples: usize) -> Result<Vec<Latency>, String> {
    let mut out = Vec::new();
    let mut machine = Machine::default();
    let modes: Vec<Mode> = if Mode::SubInterpreters.is_supported() {
        vec![Mode::SubInterpreters, Mode::SingleGil]
    } else {
        vec![Mode::SingleGil]
    };
    for mode in modes {
        let engine = build_engine(plan, mode, plan.workers, &mut machine)?;
        if out.is_empty() {
            // The reference: the same function called on this very thread,
            // through a thread state of the main interpreter.
            out.extend(raw_calls(plan, samples)?);
        }
        let inc = engine
            .load("gilpool_workloads", "inc")
            .map_err(|e| format!("cannot load gilpool_workloads.inc: {e}"))?;
        let bar = progress(
            Some(2 * samples as u64),
            plan.force_progress,
            &format!("latency {mode}"),
        );
        for i in 0..(samples / 10).max(100) as i64 {
            inc.invoke::<_, i64>((i,)).map_err(|e| e.to_string())?;
        }
        let mut nanos = Vec::with_capacity(samples);
        for i in 0..samples as i64 {
            let t = Instant::now();
            let v: i64 = inc.invoke((i,)).map_err(|e| e.to_string())?;
            nanos.push(t.elapsed().as_nanos() as u64);
            if v != i + 1 {
                return Err(format!("inc({i}) returned {v}"));
            }
        }
        bar.inc(samples as u64);
        out.push(summarize(
            "sync invoke: handler.invoke((i,))".into(),
            Some(mode),
            plan.workers,
            nanos,
        ));
        let mut nanos = Vec::with_capacity(samples);
        for i in 0..samples as i64 {
            let t = Instant::now();
            let f = inc.submit::<_, i64>((i,)).map_err(|e| e.to_string())?;
            let v = f.wait().map_err(|e| e.to_string())?;
            nanos.push(t.elapsed().as_nanos() as u64);
            if v != i + 1 {
                return Err(format!("inc({i}) returned {v}"));
            }
        }
        bar.inc(samples as u64);
        bar.finish_and_clear();
        out.push(summarize(
            "round trip: submit((i,)) then wait(), unbatched".into(),
            Some(mode),
            plan.workers,
            nanos,
        ));
        drop(inc);
        engine.shutdown();
    }
    Ok(out)
}

/// `inc(i)` called on this thread through a main-interpreter thread state
/// of gilpool's FFI layer: attach + call + detach per call, and the call
/// alone while attached. The floor any dispatch adds to.
fn raw_calls(plan: &Plan, samples: usize) -> Result<Vec<Latency>, String> {
    use gilpool_ffi::{MainThreadState, Runtime};
    let runtime = Runtime::get().ok_or("the Python runtime is not running")?;
    let state = MainThreadState::new(runtime);
    let dir = std::fs::canonicalize(&plan.dir).map_err(|e| e.to_string())?;
    let func = gilpool_ffi::attach(&state, |py| {
        py.prepend_sys_path(&[dir.to_string_lossy().into_owned()])?;
        let f = py.import("gilpool_workloads")?.getattr("inc")?;
        Ok::<_, gilpool_ffi::PyException>(f.stash())
    })
    .map_err(|e| format!("cannot import gilpool_workloads.inc in the main interpreter: {e}"))?;
    let call = |py: gilpool_ffi::Python<'_>, i: i64| -> Result<i64, gilpool_ffi::PyException> {
        let f = func.bind(py);
        let arg = py.int(i)?;
        Ok(f.call(&[arg], None)?.extract_i64()?.unwrap_or(-1))
    };
    let mut detached = Vec::with_capacity(samples);
    let mut attached = Vec::with_capacity(samples);
    let mut wrong = None;
    // Two rounds: the first warms up, the second is kept.
    for _ in 0..2 {
        detached.clear();
        for i in 0..samples as i64 {
            let t = Instant::now();
            let v = gilpool_ffi::attach(&state, |py| call(py, i));
            detached.push(t.elapsed().as_nanos() as u64);
            if v.as_ref().ok() != Some(&(i + 1)) {
                wrong.get_or_insert(i);
            }
        }
        attached.clear();
        gilpool_ffi::attach(&state, |py| {
            for i in 0..samples as i64 {
                let t = Instant::now();
                let v = call(py, i);
                attached.push(t.elapsed().as_nanos() as u64);
                if v.as_ref().ok() != Some(&(i + 1)) {
                    wrong.get_or_insert(i);
                }
            }
        });
    }
    gilpool_ffi::attach(&state, |py| func.release(py));
    drop(state);
    if let Some(i) = wrong {
        return Err(format!("raw inc({i}) returned a wrong result"));
    }
    Ok(vec![
        summarize(
            "raw call on this thread: attach + inc(i) + detach".into(),
            None,
            0,
            detached,
        ),
        summarize(
            "raw call on this thread, already attached: inc(i)".into(),
            None,
            0,
            attached,
        ),
    ])
}

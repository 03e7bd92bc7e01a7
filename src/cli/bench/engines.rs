//! gilpool's side, in-process: an engine per configuration, a handler per
//! `map` setting, each warmed up off the clock, and one timed `map`.

use super::machine::Machine;
use super::measure::{Runner, Slot};
use super::{Entry, Outcome, Plan, Source, Workload};
use gilpool::{Engine, Handler, MapChunks, Mode};
use std::time::Instant;

/// The gilpool configurations: SubInterpreters with 1..=N workers (where
/// supported) and SingleGil with N (1..=N where SubInterpreters is not);
/// in a scaling run, the paired mode with N only.
fn configurations(plan: &Plan) -> Vec<(Mode, usize)> {
    let workers = plan.workers;
    if plan.scaling {
        return vec![(plan.paired_mode(), workers)];
    }
    let mut out = Vec::new();
    if Mode::SubInterpreters.is_supported() {
        out.extend((1..=workers).map(|w| (Mode::SubInterpreters, w)));
        out.push((Mode::SingleGil, workers));
    } else {
        out.extend((1..=workers).map(|w| (Mode::SingleGil, w)));
    }
    out
}

pub(super) fn build_engine(
    plan: &Plan,
    mode: Mode,
    workers: usize,
    machine: &mut Machine,
) -> Result<Engine, String> {
    let engine = Engine::builder()
        .mode(mode)
        .workers(workers)
        .allocator(plan.allocator)
        .sys_path(&plan.dir)
        .build()
        .map_err(|e| format!("cannot start a {mode} engine with {workers} workers: {e}"))?;
    // Every worker up before any warm-up or timing.
    engine
        .wait_ready()
        .map_err(|e| format!("{mode} engine with {workers} workers: {e}"))?;
    if engine.mode() != mode {
        return Err(format!(
            "asked for {mode}, the engine runs {}",
            engine.mode()
        ));
    }
    machine.python = engine.python_version().to_string();
    machine.executable = engine.python_executable().to_string();
    Ok(engine)
}

pub(super) fn gilpool_key(
    mode: Mode,
    workers: usize,
    (batch, chunks): (usize, MapChunks),
) -> String {
    let how = match chunks {
        MapChunks::Guided => "guided",
        MapChunks::Batch => "chunks",
    };
    format!("gilpool_{}_x{workers}_b{batch}_{how}", mode_key(mode))
}

/// The table's grouping column for a gilpool row.
fn gilpool_grouping((batch, chunks): (usize, MapChunks)) -> String {
    match chunks {
        MapChunks::Guided => format!("guided chunks, batch {batch}"),
        MapChunks::Batch if batch == 1 => "one task per input".into(),
        MapChunks::Batch => format!("chunks of {batch}"),
    }
}

/// gilpool's engines (up for every round) and their entries.
#[derive(Debug)]
pub(super) struct GilpoolSide {
    pub(super) engines: Vec<Engine>,
    pub(super) slots: Vec<Slot>,
    /// The heavy (or library) result seen while warming up.
    pub(super) expected: Option<i64>,
}

/// Starts an engine per configuration and a handler per batch size, each
/// warmed up off the clock. The engines stay up (idle workers sleep) until
/// the caller shuts them down after the last round.
pub(super) fn start_gilpool(
    plan: &Plan,
    wl: Workload,
    tasks: usize,
    machine: &mut Machine,
) -> Result<GilpoolSide, String> {
    let mut engines = Vec::new();
    let mut slots = Vec::new();
    let mut expected = None;
    for (mode, workers) in configurations(plan) {
        let started = Instant::now();
        let engine = build_engine(plan, mode, workers, machine)?;
        let mut startup_s = None;
        // A scaling run times each workload's default `map` only.
        let variants = if plan.scaling {
            &wl.variants()[..1]
        } else {
            wl.variants()
        };
        for &variant in variants {
            let (batch, chunks) = variant;
            let h = engine
                .handler("gilpool_workloads", wl.function())
                .batch_size(batch)
                .map_chunks(chunks)
                .load()
                .map_err(|e| format!("cannot load gilpool_workloads.{}: {e}", wl.function()))?;
            // Warm every worker (import, first-call caches) off the clock.
            let warm = match wl {
                Workload::Heavy | Workload::Library => 4 * workers,
                Workload::Trivial => 8 * 64 * workers,
            };
            let (_, ok, value) = run_map(&h, wl, warm, expected)?;
            expected = expected.or(value);
            if !ok {
                return Err(format!(
                    "gilpool {mode} x{workers}: wrong results while warming up"
                ));
            }
            // Start-up: build + load + warm-up of the first handler, the same
            // span the Python side reports as startup_s.
            let startup = *startup_s.get_or_insert_with(|| started.elapsed().as_secs_f64());
            let entry = Entry {
                key: gilpool_key(mode, workers, variant),
                label: format!("gilpool {mode}"),
                grouping: gilpool_grouping(variant),
                source: Source::Gilpool(mode),
                workers,
                tasks,
                outcome: Outcome::Skipped(String::new()),
            };
            slots.push(Slot::new(entry, Some(Runner::Gilpool(h)), Some(startup)));
        }
        engines.push(engine);
    }
    Ok(GilpoolSide {
        engines,
        slots,
        expected,
    })
}

fn mode_key(mode: Mode) -> &'static str {
    match mode {
        Mode::SubInterpreters => "sub",
        Mode::SingleGil => "single",
        Mode::Auto => "auto",
    }
}

/// Runs `tasks` tasks through `h.map` and times it. Returns (seconds,
/// every result as expected, the constant result seen). Heavy and library
/// tasks call `heavy()` or `library()` with its default argument and must
/// all return the same value,
/// `expected` when given; trivial task `i` must return `i + 1`.
pub(super) fn run_map(
    h: &Handler,
    wl: Workload,
    tasks: usize,
    expected: Option<i64>,
) -> Result<(f64, bool, Option<i64>), String> {
    let mut ok = true;
    let mut seen = expected;
    let start = Instant::now();
    match wl {
        Workload::Heavy | Workload::Library => {
            for r in h.map::<_, _, i64>((0..tasks).map(|_| ())) {
                let v = r.map_err(|e| e.to_string())?;
                match seen {
                    Some(s) => ok &= v == s,
                    None => seen = Some(v),
                }
            }
        }
        Workload::Trivial => {
            for (i, r) in h
                .map::<_, _, i64>((0..tasks as i64).map(|i| (i,)))
                .enumerate()
            {
                let v = r.map_err(|e| e.to_string())?;
                ok &= v == i as i64 + 1;
            }
        }
    }
    Ok((start.elapsed().as_secs_f64(), ok, seen))
}

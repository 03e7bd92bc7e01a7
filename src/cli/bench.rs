//! `gilpool bench`: gilpool beside its Python-side peers on the same
//! machine and workloads — sequential Python, threads, process pools, the
//! stdlib interpreters module and the N-process ceiling — plus the latency
//! of single calls. Markdown tables go to stdout, an SVG chart to `--chart`.
//!
//! The Python-side entries come from `python/gilpool_baselines.py --serve`,
//! a child process of the very Python the engine embeds: it starts and
//! warms every peer once, then times one run per request. gilpool is
//! measured here, in-process, under the same rule (engines built and warmed
//! first; start-up is reported on its own). Both sides stay up for the
//! whole workload, and the runs are interleaved rounds: each round times
//! every entry once, so a slow spell of this shared machine hits all
//! entries alike. Within a round, the entries that the targets compare
//! (gilpool with all workers, the ceiling, the `multiprocessing.Pool`
//! entries, and the ceiling whose processes each run in a subinterpreter)
//! run last and back to back, in a rotating order; the ratio of
//! their seconds in the same round is a *paired* ratio, and the targets
//! are judged on the median of those. The table shows each entry's best
//! round. A core speed probe before and after shows how fast the cores ran.
//!
//! Definitions (also in `docs/BENCHMARKS.md`):
//! - `tasks/s` = tasks ÷ best wall seconds of the map phase;
//! - `vs seq` = tasks/s ÷ tasks/s of plain sequential Python;
//! - `vs ceiling` = tasks/s ÷ tasks/s of W independent processes;
//! - `µs/task` = 1e6 × wall seconds ÷ tasks (inverse throughput: the
//!   per-task overhead for the trivial workload);
//! - `µs/task×W` = `µs/task` × workers (worker time spent per task).

use super::{progress, workloads_dir};
use gilpool::{Engine, Handler, MapChunks, Mode};
use serde_json::{json, Value as Json};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// Which workloads `gilpool bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum WorkloadArg {
    /// `gilpool_workloads.heavy()`: about 1 ms of pure-Python CPU work.
    Heavy,
    /// `gilpool_workloads.inc(i)`: per-task overhead (plus the latency section).
    Trivial,
    /// Both, heavy first.
    Both,
}

/// Options of `gilpool bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Which workload(s) to run; the latency section runs with `trivial`.
    #[arg(long, value_enum, default_value_t = WorkloadArg::Both)]
    workload: WorkloadArg,
    /// Tasks per timed run of the heavy workload.
    #[arg(long, default_value_t = 1000)]
    tasks_heavy: usize,
    /// Tasks per timed run of the trivial workload.
    #[arg(long, default_value_t = 20000)]
    tasks_trivial: usize,
    /// Workers for the parallel entries (default: the number of cores).
    /// gilpool SubInterpreters runs with 1..=N workers.
    #[arg(long)]
    workers: Option<usize>,
    /// Rounds; each times every entry once. The table shows each entry's
    /// best round; the paired comparisons use every round.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Times the paired group (gilpool with all workers, both ceilings, the
    /// `multiprocessing.Pool` entries) runs back to back in every round:
    /// each pass gives one paired ratio per comparison.
    #[arg(long, default_value_t = 3)]
    paired: usize,
    /// Individually timed calls per latency measurement (0 skips the
    /// latency section).
    #[arg(long, default_value_t = 20000)]
    latency_samples: usize,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "docs/img/bench.svg")]
    chart: PathBuf,
    /// Also write every figure (and the baselines' raw output) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure gilpool only; do not run the Python-side baselines.
    #[arg(long)]
    skip_python: bool,
    /// Force the progress bar on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
}

pub(crate) fn main(args: BenchArgs) -> ExitCode {
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("gilpool bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// One workload of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Heavy,
    Trivial,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Heavy => "heavy",
            Workload::Trivial => "trivial",
        }
    }
    /// The function in `gilpool_workloads`.
    fn function(self) -> &'static str {
        match self {
            Workload::Heavy => "heavy",
            Workload::Trivial => "inc",
        }
    }
    /// The handler settings gilpool runs this workload with: batch size
    /// and how `map` chunks the inputs. The first is the default `map`
    /// (guided chunks), the row the paired comparisons use.
    fn variants(self) -> &'static [(usize, MapChunks)] {
        match self {
            Workload::Heavy => &[(1, MapChunks::Guided), (1, MapChunks::Batch)],
            Workload::Trivial => &[
                (64, MapChunks::Guided),
                (64, MapChunks::Batch),
                (1, MapChunks::Batch),
            ],
        }
    }
}

/// What kind of peer an entry is (colours, checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Sequential,
    Threads,
    ProcessPool,
    Interpreters,
    Ceiling,
    Gilpool(Mode),
}

/// How one entry ended.
#[derive(Debug, Clone)]
enum Outcome {
    Ran {
        seconds: f64,
        seconds_all: Vec<f64>,
        startup_s: Option<f64>,
        verified: bool,
    },
    Skipped(String),
    Failed(String),
}

/// One row of a workload's table.
#[derive(Debug, Clone)]
struct Entry {
    /// Stable machine name (the baselines' name, or `gilpool_<mode>_x<W>_b<B>`).
    key: String,
    label: String,
    grouping: String,
    source: Source,
    workers: usize,
    tasks: usize,
    outcome: Outcome,
}

impl Entry {
    fn seconds(&self) -> Option<f64> {
        match self.outcome {
            Outcome::Ran { seconds, .. } if seconds > 0.0 => Some(seconds),
            _ => None,
        }
    }
    fn tasks_per_s(&self) -> Option<f64> {
        self.seconds().map(|s| self.tasks as f64 / s)
    }
    fn us_per_task(&self) -> Option<f64> {
        self.seconds().map(|s| s * 1e6 / self.tasks as f64)
    }
    fn short_label(&self) -> String {
        if self.grouping.is_empty() {
            self.label.clone()
        } else {
            format!("{}, {}", self.label, self.grouping)
        }
    }
}

/// Every entry of one workload.
#[derive(Debug)]
struct WorkloadRun {
    workload: Workload,
    tasks: usize,
    entries: Vec<Entry>,
    /// Round-by-round ratios from adjacent runs (see [`Paired`]).
    paired: Vec<Paired>,
    baselines: Option<Json>,
}

impl WorkloadRun {
    fn find(&self, source: Source) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.source == source && e.seconds().is_some())
    }
    fn sequential_tps(&self) -> Option<f64> {
        self.find(Source::Sequential).and_then(Entry::tasks_per_s)
    }
    fn ceiling_tps(&self) -> Option<f64> {
        self.find(Source::Ceiling).and_then(Entry::tasks_per_s)
    }
}

/// One latency measurement: individually timed calls.
#[derive(Debug)]
struct Latency {
    what: String,
    mode: Option<Mode>,
    workers: usize,
    samples: usize,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
}

/// The machine and the Python under test.
#[derive(Debug, Default)]
struct Machine {
    python: String,
    executable: String,
    cpus: usize,
    cpu_model: String,
    load_before: String,
    load_after: String,
    /// Python runtime initialisation (once per process, in no row).
    runtime_start_s: f64,
    /// µs per `heavy()` call on each core, all cores busy at once, at the
    /// start and at the end of the run.
    probe_before: Vec<Option<f64>>,
    probe_after: Vec<Option<f64>>,
}

/// The options after validation.
#[derive(Debug)]
struct Plan {
    workers: usize,
    repeat: usize,
    paired: usize,
    dir: PathBuf,
    force_progress: bool,
}

fn run(args: BenchArgs) -> Result<bool, String> {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 0
        || args.repeat == 0
        || args.paired == 0
        || args.tasks_heavy == 0
        || args.tasks_trivial == 0
    {
        return Err(
            "--workers, --repeat, --paired, --tasks-heavy and --tasks-trivial must be at least 1"
                .into(),
        );
    }
    let plan = Plan {
        workers,
        repeat: args.repeat,
        paired: args.paired,
        dir: workloads_dir(),
        force_progress: args.progress,
    };
    if !plan.dir.join("gilpool_baselines.py").is_file() {
        return Err(format!(
            "{} has no gilpool_baselines.py",
            plan.dir.display()
        ));
    }
    let workloads: &[Workload] = match args.workload {
        WorkloadArg::Heavy => &[Workload::Heavy],
        WorkloadArg::Trivial => &[Workload::Trivial],
        WorkloadArg::Both => &[Workload::Heavy, Workload::Trivial],
    };
    let mut machine = Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpu_model(),
        load_before: loadavg(),
        ..Machine::default()
    };
    let total = Instant::now();
    // Start the Python runtime (once per process) with a throwaway engine,
    // so no row's start-up includes it.
    let t = Instant::now();
    build_engine(&plan, Mode::SingleGil, 1, &mut machine)?.shutdown();
    machine.runtime_start_s = t.elapsed().as_secs_f64();
    machine.probe_before = speed_probe(&plan, &machine.executable);
    let mut runs = Vec::new();
    for &wl in workloads {
        let tasks = match wl {
            Workload::Heavy => args.tasks_heavy,
            Workload::Trivial => args.tasks_trivial,
        };
        runs.push(measure_workload(
            &plan,
            wl,
            tasks,
            args.skip_python,
            &mut machine,
        )?);
    }
    let mut latency = Vec::new();
    if workloads.contains(&Workload::Trivial) && args.latency_samples > 0 {
        latency = measure_latency(&plan, args.latency_samples)?;
    }
    machine.probe_after = speed_probe(&plan, &machine.executable);
    machine.load_after = loadavg();

    print_report(
        &plan,
        &machine,
        &runs,
        &latency,
        total.elapsed().as_secs_f64(),
    );
    let checks = checks(&plan, &runs, &latency);
    print_checks(&checks);

    if let Some(parent) = args.chart.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let svg = chart_svg(&runs, &machine, &plan);
    std::fs::write(&args.chart, svg)
        .map_err(|e| format!("cannot write {}: {e}", args.chart.display()))?;
    eprintln!("gilpool bench: chart written to {}", args.chart.display());
    if let Some(path) = &args.json {
        let doc = report_json(&plan, &machine, &runs, &latency, &checks);
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("gilpool bench: JSON written to {}", path.display());
    }
    let all_ok = runs
        .iter()
        .flat_map(|r| &r.entries)
        .all(|e| match &e.outcome {
            Outcome::Ran { verified, .. } => *verified,
            Outcome::Skipped(_) => true,
            Outcome::Failed(_) => false,
        });
    if !all_ok {
        eprintln!("gilpool bench: some entries failed or returned wrong results (see the tables)");
    }
    Ok(all_ok)
}

/// The Python-side entries that take part in the paired comparisons.
const PAIRED_PEERS: [&str; 4] = [
    "ceiling",
    "ceiling_sub",
    "mp_pool_default",
    "mp_pool_chunk1",
];

/// What times one run of an entry.
#[derive(Debug)]
enum Runner {
    /// `run NAME` on the baselines process.
    Python(String),
    /// `handler.map` on one of our engines.
    Gilpool(Handler),
}

/// One entry while its rounds run: its row, how to time it, and the
/// seconds of every round (`None` where it did not run).
#[derive(Debug)]
struct Slot {
    entry: Entry,
    runner: Option<Runner>,
    startup_s: Option<f64>,
    times: Vec<Option<f64>>,
    verified: bool,
    failed: Option<String>,
}

impl Slot {
    fn new(entry: Entry, runner: Option<Runner>, startup_s: Option<f64>) -> Slot {
        Slot {
            entry,
            runner,
            startup_s,
            times: Vec::new(),
            verified: true,
            failed: None,
        }
    }

    /// The row, with the best round's seconds.
    fn finish(mut self) -> Entry {
        if let Some(why) = self.failed {
            self.entry.outcome = Outcome::Failed(why);
        } else if self.runner.is_some() {
            let all: Vec<f64> = self.times.iter().flatten().copied().collect();
            self.entry.outcome = Outcome::Ran {
                seconds: all.iter().copied().fold(f64::INFINITY, f64::min),
                seconds_all: all,
                startup_s: self.startup_s,
                verified: self.verified,
            };
        }
        self.entry
    }
}

/// Round-by-round ratios of gilpool against a peer, each from runs made
/// back to back in the same round.
#[derive(Debug, Clone)]
struct Paired {
    what: String,
    /// `peer seconds / gilpool seconds` per round (above 1: gilpool faster).
    ratios: Vec<f64>,
}

impl Paired {
    fn median(&self) -> Option<f64> {
        self.quantile(0.5)
    }
    /// The `q` quantile (0..=1) by linear interpolation.
    fn quantile(&self, q: f64) -> Option<f64> {
        let mut v = self.ratios.clone();
        v.sort_by(f64::total_cmp);
        let last = v.len().checked_sub(1)?;
        let pos = q.clamp(0.0, 1.0) * last as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
    }
    fn min(&self) -> Option<f64> {
        self.ratios.iter().copied().reduce(f64::min)
    }
    fn max(&self) -> Option<f64> {
        self.ratios.iter().copied().reduce(f64::max)
    }
}

/// Starts every entry of one workload (the Python peers in one `--serve`
/// process, gilpool's engines here), then runs `plan.repeat` rounds. A
/// round times every entry once: first the others in a rotating order,
/// then the paired group (gilpool with all workers, both ceilings and the
/// `multiprocessing.Pool` entries) back to back, also rotating, so that
/// the ratios between them come from adjacent runs.
fn measure_workload(
    plan: &Plan,
    wl: Workload,
    tasks: usize,
    skip_python: bool,
    machine: &mut Machine,
) -> Result<WorkloadRun, String> {
    let mut python = if skip_python {
        None
    } else {
        eprintln!(
            "gilpool bench: starting the Python baselines ({}, {tasks} tasks, {} workers)",
            wl.name(),
            plan.workers
        );
        Some(Baselines::start(plan, &machine.executable, wl, tasks)?)
    };
    let mut slots: Vec<Slot> = match &python {
        Some(p) => p.slots()?,
        None => Vec::new(),
    };
    let GilpoolSide {
        engines,
        slots: gilpool_slots,
        mut expected,
    } = start_gilpool(plan, wl, tasks, machine)?;
    slots.extend(gilpool_slots);

    let paired_key = gilpool_key(Mode::SubInterpreters, plan.workers, wl.variants()[0]);
    let in_group = |s: &Slot| s.entry.key == paired_key || PAIRED_PEERS.contains(&&*s.entry.key);
    let (group, others): (Vec<usize>, Vec<usize>) =
        (0..slots.len()).partition(|&i| in_group(&slots[i]));
    let runs =
        |set: &[usize], slots: &[Slot]| set.iter().filter(|&&i| slots[i].runner.is_some()).count();
    let bar = progress(
        Some((plan.repeat * (runs(&others, &slots) + plan.paired * runs(&group, &slots))) as u64),
        plan.force_progress,
        &format!("{} rounds", wl.name()),
    );
    let rotated = |v: &[usize], k: usize| -> Vec<usize> {
        let mut v = v.to_vec();
        if !v.is_empty() {
            let k = k % v.len();
            v.rotate_left(k);
        }
        v
    };
    for round in 0..plan.repeat {
        let passes = (0..plan.paired).flat_map(|pass| rotated(&group, round * plan.paired + pass));
        for i in rotated(&others, round).into_iter().chain(passes) {
            let slot = &mut slots[i];
            let secs = match (&slot.runner, &slot.failed) {
                (Some(_), Some(_)) | (None, _) => None,
                (Some(Runner::Gilpool(h)), None) => {
                    let (secs, ok, value) = run_map(h, wl, tasks, expected)?;
                    expected = expected.or(value);
                    slot.verified &= ok;
                    Some(secs)
                }
                (Some(Runner::Python(name)), None) => {
                    let p = python.as_mut().ok_or("no baselines process")?;
                    match p.run(name)? {
                        Ok((secs, ok)) => {
                            slot.verified &= ok;
                            Some(secs)
                        }
                        Err(why) => {
                            slot.failed = Some(why);
                            None
                        }
                    }
                }
            };
            slot.times.push(secs);
            if slot.runner.is_some() {
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    for engine in engines {
        engine.shutdown();
    }
    let baselines = python.map(Baselines::finish);

    let paired = paired_ratios(&slots, &paired_key, plan.workers);
    // Rows in slot order: the Python peers, then gilpool.
    let entries: Vec<Entry> = slots.into_iter().map(Slot::finish).collect();
    Ok(WorkloadRun {
        workload: wl,
        tasks,
        entries,
        paired,
        baselines,
    })
}

/// gilpool with all workers against the ceiling and the best
/// `multiprocessing.Pool` of each round.
fn paired_ratios(slots: &[Slot], gilpool_key: &str, workers: usize) -> Vec<Paired> {
    let by_key = |key: &str| {
        slots
            .iter()
            .find(|s| s.entry.key == key && s.failed.is_none() && s.runner.is_some())
    };
    let Some(g) = by_key(gilpool_key) else {
        return Vec::new();
    };
    let rounds = g.times.len();
    let at = |s: Option<&Slot>, r: usize| s.and_then(|s| s.times.get(r).copied().flatten());
    let ratio = |peer: &dyn Fn(usize) -> Option<f64>| -> Vec<f64> {
        (0..rounds)
            .filter_map(|r| Some(peer(r)? / at(Some(g), r)?))
            .collect()
    };
    let ceiling = by_key("ceiling");
    let ceiling_sub = by_key("ceiling_sub");
    let pools: Vec<&Slot> = PAIRED_PEERS
        .iter()
        .filter(|k| k.starts_with("mp_pool"))
        .filter_map(|k| by_key(k))
        .collect();
    let mut out = Vec::new();
    if ceiling.is_some() {
        out.push(Paired {
            what: format!("gilpool SubInterpreters x{workers} vs the {workers}-process ceiling"),
            ratios: ratio(&|r| at(ceiling, r)),
        });
    }
    if ceiling_sub.is_some() {
        out.push(Paired {
            what: format!(
                "gilpool SubInterpreters x{workers} vs {workers} processes each in a subinterpreter"
            ),
            ratios: ratio(&|r| at(ceiling_sub, r)),
        });
    }
    if ceiling.is_some() && ceiling_sub.is_some() {
        // Not gilpool at all: what a subinterpreter costs by itself here.
        out.push(Paired {
            what: format!(
                "no gilpool: {workers} plain processes vs {workers} processes each in a subinterpreter (above 1: the subinterpreter faster)"
            ),
            ratios: (0..rounds)
                .filter_map(|r| Some(at(ceiling, r)? / at(ceiling_sub, r)?))
                .collect(),
        });
    }
    if !pools.is_empty() {
        out.push(Paired {
            what: format!(
                "gilpool SubInterpreters x{workers} vs the round's best multiprocessing.Pool"
            ),
            ratios: ratio(&|r| pools.iter().filter_map(|p| at(Some(p), r)).reduce(f64::min)),
        });
    }
    out.retain(|p| !p.ratios.is_empty());
    out
}

// ---------------------------------------------------------------------------
// gilpool, in-process

/// The gilpool configurations: SubInterpreters with 1..=N workers (where
/// supported) and SingleGil with N (1..=N where SubInterpreters is not).
fn configurations(workers: usize) -> Vec<(Mode, usize)> {
    let mut out = Vec::new();
    if Mode::SubInterpreters.is_supported() {
        out.extend((1..=workers).map(|w| (Mode::SubInterpreters, w)));
        out.push((Mode::SingleGil, workers));
    } else {
        out.extend((1..=workers).map(|w| (Mode::SingleGil, w)));
    }
    out
}

fn build_engine(
    plan: &Plan,
    mode: Mode,
    workers: usize,
    machine: &mut Machine,
) -> Result<Engine, String> {
    let engine = Engine::builder()
        .mode(mode)
        .workers(workers)
        .sys_path(&plan.dir)
        .build()
        .map_err(|e| format!("cannot start a {mode} engine with {workers} workers: {e}"))?;
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

fn gilpool_key(mode: Mode, workers: usize, (batch, chunks): (usize, MapChunks)) -> String {
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
struct GilpoolSide {
    engines: Vec<Engine>,
    slots: Vec<Slot>,
    /// The heavy result seen while warming up.
    expected: Option<i64>,
}

/// Starts an engine per configuration and a handler per batch size, each
/// warmed up off the clock. The engines stay up (idle workers sleep) until
/// the caller shuts them down after the last round.
fn start_gilpool(
    plan: &Plan,
    wl: Workload,
    tasks: usize,
    machine: &mut Machine,
) -> Result<GilpoolSide, String> {
    let mut engines = Vec::new();
    let mut slots = Vec::new();
    let mut expected = None;
    for (mode, workers) in configurations(plan.workers) {
        let started = Instant::now();
        let engine = build_engine(plan, mode, workers, machine)?;
        let mut startup_s = None;
        for &variant in wl.variants() {
            let (batch, chunks) = variant;
            let h = engine
                .handler("gilpool_workloads", wl.function())
                .batch_size(batch)
                .map_chunks(chunks)
                .load()
                .map_err(|e| format!("cannot load gilpool_workloads.{}: {e}", wl.function()))?;
            // Warm every worker (import, first-call caches) off the clock.
            let warm = match wl {
                Workload::Heavy => 4 * workers,
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
/// every result as expected, the heavy result seen). Heavy tasks call
/// `heavy()` (its default `HEAVY_N`) and must all return the same value,
/// `expected` when given; trivial task `i` must return `i + 1`.
fn run_map(
    h: &Handler,
    wl: Workload,
    tasks: usize,
    expected: Option<i64>,
) -> Result<(f64, bool, Option<i64>), String> {
    let mut ok = true;
    let mut seen = expected;
    let start = Instant::now();
    match wl {
        Workload::Heavy => {
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

// ---------------------------------------------------------------------------
// Python-side baselines: one `gilpool_baselines.py --serve` child per workload

/// The baselines script in serve mode: every peer started once, then one
/// timed run per `run NAME` line.
#[derive(Debug)]
struct Baselines {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    /// The first line: the run's header and each entry's start-up.
    ready: Json,
    /// Every answer, in order (kept for `--json`).
    answers: Vec<Json>,
    tasks: usize,
}

impl Baselines {
    fn start(
        plan: &Plan,
        executable: &str,
        wl: Workload,
        tasks: usize,
    ) -> Result<Baselines, String> {
        let script = plan.dir.join("gilpool_baselines.py");
        let mut child = Command::new(executable)
            .arg(&script)
            .arg("--serve")
            .args(["--workload", wl.name()])
            .args(["--tasks", &tasks.to_string()])
            .args(["--workers", &plan.workers.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {executable}: {e}"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or("the baselines' stdin is missing")?;
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or("the baselines' stdout is missing")?,
        );
        let mut me = Baselines {
            child,
            stdin,
            stdout,
            ready: Json::Null,
            answers: Vec::new(),
            tasks,
        };
        me.ready = me.read_line().map_err(|e| {
            format!(
                "{executable} {} --serve did not start: {e}",
                script.display()
            )
        })?;
        if !me.ready["ready"].is_array() {
            return Err(format!(
                "the baselines' first line has no \"ready\" list: {}",
                me.ready
            ));
        }
        Ok(me)
    }

    fn read_line(&mut self) -> Result<Json, String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("cannot read from the baselines: {e}"))?;
        if n == 0 {
            let status = self
                .child
                .wait()
                .map_or("unknown".into(), |s| s.to_string());
            return Err(format!("the baselines process ended ({status})"));
        }
        serde_json::from_str(&line)
            .map_err(|e| format!("cannot parse the baselines' answer ({e}): {}", line.trim()))
    }

    /// One slot per entry the script reported, started or not.
    fn slots(&self) -> Result<Vec<Slot>, String> {
        let workers_all = self.ready["workers"].as_u64().unwrap_or(1) as usize;
        let mut out = Vec::new();
        for e in self.ready["ready"].as_array().into_iter().flatten() {
            let name = e["name"]
                .as_str()
                .ok_or_else(|| format!("a baselines entry without a name: {e}"))?
                .to_string();
            let (source, label, grouping) =
                python_entry_meta(&name, e["chunksize"].as_u64(), e["module"].as_str());
            let (outcome, runner) = if let Some(why) = e["skipped"].as_str() {
                (Outcome::Skipped(why.to_string()), None)
            } else if let Some(err) = e["error"].as_str() {
                (Outcome::Failed(err.to_string()), None)
            } else {
                (
                    Outcome::Skipped(String::new()),
                    Some(Runner::Python(name.clone())),
                )
            };
            let entry = Entry {
                key: name,
                label,
                grouping,
                source,
                workers: e["workers"].as_u64().map_or(workers_all, |w| w as usize),
                tasks: self.tasks,
                outcome,
            };
            out.push(Slot::new(entry, runner, e["startup_s"].as_f64()));
        }
        Ok(out)
    }

    /// Times one run of `name`: `Ok(Ok((seconds, verified)))`, or
    /// `Ok(Err(why))` when that entry failed (the others go on).
    fn run(&mut self, name: &str) -> Result<Result<(f64, bool), String>, String> {
        writeln!(self.stdin, "run {name}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("cannot write to the baselines: {e}"))?;
        let answer = self.read_line()?;
        if answer["name"].as_str() != Some(name) {
            return Err(format!("asked the baselines for {name}, got {answer}"));
        }
        let result = if let Some(err) = answer["error"].as_str() {
            Err(err.to_string())
        } else {
            match answer["seconds"].as_f64() {
                Some(s) => Ok((s, answer["verified"].as_bool().unwrap_or(false))),
                None => Err(format!("no seconds in {answer}")),
            }
        };
        self.answers.push(answer);
        Ok(result)
    }

    /// Closes every peer; returns everything the script said.
    fn finish(mut self) -> Json {
        let _ = writeln!(self.stdin, "quit").and_then(|()| self.stdin.flush());
        let _ = self.child.wait();
        json!({ "ready": self.ready, "runs": self.answers })
    }
}

/// Row label, grouping and colour of a Python-side entry.
fn python_entry_meta(
    name: &str,
    chunk: Option<u64>,
    module: Option<&str>,
) -> (Source, String, String) {
    let module = module.unwrap_or("_interpreters");
    let (source, label, grouping) = match name {
        "sequential" => (Source::Sequential, "sequential Python", String::new()),
        "threads" => (
            Source::Threads,
            "threads (ThreadPoolExecutor)",
            String::new(),
        ),
        "mp_pool_default" => (
            Source::ProcessPool,
            "multiprocessing.Pool.map",
            chunk.map_or("default chunks".into(), |c| format!("chunk {c} (default)")),
        ),
        "mp_pool_chunk1" => (
            Source::ProcessPool,
            "multiprocessing.Pool.map",
            "chunk 1".into(),
        ),
        "ppe_chunk1" => (
            Source::ProcessPool,
            "ProcessPoolExecutor.map",
            "chunk 1".into(),
        ),
        "ppe_tuned" => (
            Source::ProcessPool,
            "ProcessPoolExecutor.map",
            chunk.map_or("tuned chunks".into(), |c| format!("chunk {c} (tuned)")),
        ),
        "interpreters" => (Source::Interpreters, module, "one exec per share".into()),
        "interpreters_per_task" => (Source::Interpreters, module, "one exec per task".into()),
        "ceiling" => (
            Source::Ceiling,
            "ceiling: independent processes",
            String::new(),
        ),
        "ceiling_sub" => (
            Source::Interpreters,
            "ceiling: independent processes",
            "each in a subinterpreter".into(),
        ),
        other => (Source::Threads, other, String::new()),
    };
    (source, label.to_string(), grouping)
}

impl Drop for Baselines {
    fn drop(&mut self) {
        // Reached without `finish` only on an error path: do not leave the
        // peers (and their pools) running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// latency: individually timed calls

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

fn measure_latency(plan: &Plan, samples: usize) -> Result<Vec<Latency>, String> {
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

// ---------------------------------------------------------------------------
// report

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn fmt_secs(v: f64) -> String {
    if v >= 0.1 {
        format!("{v:.3}")
    } else {
        format!("{v:.6}")
    }
}

/// A ratio with two significant digits at least ("1.85", "0.0012").
fn fmt_ratio(v: f64) -> String {
    let digits = if v > 0.0 {
        (1 - v.log10().floor() as i64).clamp(2, 8) as usize
    } else {
        2
    };
    format!("{v:.digits$}")
}

fn fmt_rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn print_report(plan: &Plan, m: &Machine, runs: &[WorkloadRun], latency: &[Latency], total_s: f64) {
    println!("# gilpool bench");
    println!();
    println!("- Python {} ({})", m.python, m.executable);
    println!("- {} CPUs: {}", m.cpus, m.cpu_model);
    println!(
        "- workers {}, {} interleaved rounds: one timed run per entry per round, {} for the paired group (gilpool x{}, both ceilings, multiprocessing.Pool); tables show the best run; total {:.0} s",
        plan.workers, plan.repeat, plan.paired, plan.workers, total_s
    );
    println!(
        "- load average (1/5/15 min) before: {}; after: {}",
        m.load_before, m.load_after
    );
    println!(
        "- Python runtime start-up (once per process, in no row): {:.3} s",
        m.runtime_start_s
    );
    println!(
        "- core speed probe, µs per heavy() call with every core busy (~1000 on a quiet host): start {}; end {}",
        fmt_probe(&m.probe_before),
        fmt_probe(&m.probe_after)
    );
    for run in runs {
        println!();
        let what = match run.workload {
            Workload::Heavy => "gilpool_workloads.heavy() (~1 ms of pure Python)",
            Workload::Trivial => "gilpool_workloads.inc(i) (per-task overhead)",
        };
        println!("## {}: {what}, {} tasks", run.workload.name(), run.tasks);
        println!();
        println!("| entry | W | grouping | best s | tasks/s | vs seq | vs ceiling | µs/task | µs/task×W | start-up s |");
        println!("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|");
        let seq = run.sequential_tps();
        let ceil = run.ceiling_tps();
        for e in &run.entries {
            let grouping = if e.grouping.is_empty() {
                "-"
            } else {
                &e.grouping
            };
            match &e.outcome {
                Outcome::Ran {
                    seconds,
                    startup_s,
                    verified,
                    ..
                } => {
                    let tps = e.tasks_per_s().unwrap_or(0.0);
                    let us = e.us_per_task().unwrap_or(0.0);
                    println!(
                        "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        e.label,
                        if *verified { "" } else { " (WRONG RESULTS)" },
                        e.workers,
                        grouping,
                        fmt_secs(*seconds),
                        fmt_rate(tps),
                        seq.map_or("-".into(), |s| format!("{}x", fmt_ratio(tps / s))),
                        ceil.map_or("-".into(), |c| fmt_ratio(tps / c)),
                        fmt_us(us),
                        fmt_us(us * e.workers as f64),
                        fmt_opt(*startup_s, 3),
                    );
                }
                Outcome::Skipped(why) => println!(
                    "| {} | {} | {grouping} | skipped: {why} ||||||",
                    e.label, e.workers
                ),
                Outcome::Failed(why) => println!(
                    "| {} | {} | {grouping} | FAILED: {why} ||||||",
                    e.label, e.workers
                ),
            }
        }
        if !run.paired.is_empty() {
            println!();
            println!(
                "Paired runs: in every round these entries ran back to back, {} times over; ratio = the peer's seconds / gilpool's seconds in the same pass (above 1: gilpool faster).",
                plan.paired
            );
            println!();
            println!("| comparison | median | middle half | min | max | pairs |");
            println!("|---|--:|--:|--:|--:|--:|");
            for p in &run.paired {
                println!(
                    "| {} | {} | {}–{} | {} | {} | {} |",
                    p.what,
                    fmt_opt(p.median(), 3),
                    fmt_opt(p.quantile(0.25), 3),
                    fmt_opt(p.quantile(0.75), 3),
                    fmt_opt(p.min(), 3),
                    fmt_opt(p.max(), 3),
                    p.ratios.len()
                );
            }
        }
    }
    if !runs.is_empty() {
        println!();
        println!("tasks/s = tasks / best wall seconds of the map phase (pools started and warmed first);");
        println!("vs seq = tasks/s / sequential Python's; vs ceiling = tasks/s / W independent processes';");
        println!("µs/task = wall µs per task (inverse throughput); µs/task×W = that times the workers used;");
        println!("start-up s = one-time start + warm-up (gilpool: engine build + handler load + warm-up).");
    }
    if !latency.is_empty() {
        println!();
        println!("## latency: single calls of gilpool_workloads.inc(i), individually timed");
        println!();
        println!("| measure | mode | W | calls | p50 µs | p99 µs | mean µs |");
        println!("|---|---|--:|--:|--:|--:|--:|");
        for l in latency {
            println!(
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
                l.what,
                l.mode.map_or("-".into(), |m| m.to_string()),
                if l.mode.is_some() {
                    l.workers.to_string()
                } else {
                    "-".into()
                },
                l.samples,
                l.p50_us,
                l.p99_us,
                l.mean_us
            );
        }
    }
}

/// One target of the issue, measured.
#[derive(Debug)]
struct Check {
    target: String,
    measured: String,
    met: Option<bool>,
}

fn checks(plan: &Plan, runs: &[WorkloadRun], latency: &[Latency]) -> Vec<Check> {
    let n = plan.workers;
    let sub_all = |run: &WorkloadRun| -> Option<Entry> {
        run.entries
            .iter()
            .filter(|e| {
                e.source == Source::Gilpool(Mode::SubInterpreters)
                    && e.workers == n
                    && e.seconds().is_some()
            })
            .max_by(|a, b| {
                a.tasks_per_s()
                    .partial_cmp(&b.tasks_per_s())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .cloned()
    };
    let mut out = Vec::new();
    if let Some(run) = runs.iter().find(|r| r.workload == Workload::Heavy) {
        let sub = sub_all(run);
        let tps = sub.as_ref().and_then(Entry::tasks_per_s);
        let ceil = run.ceiling_tps();
        let paired = |prefix: &str| run.paired.iter().find(|p| p.what.contains(prefix));
        out.push(paired_check(
            format!("heavy: SubInterpreters x{n} >= 0.9 of the {n}-process ceiling"),
            0.9,
            paired("ceiling"),
            match (tps, ceil) {
                (Some(a), Some(b)) => Some((format!("{a:.0} / {b:.0} tasks/s"), a / b)),
                _ => None,
            },
        ));
        let best_pool = run
            .entries
            .iter()
            .filter(|e| e.key.starts_with("mp_pool"))
            .filter_map(|e| e.tasks_per_s().map(|t| (t, e.short_label())))
            .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        out.push(paired_check(
            format!("heavy: SubInterpreters x{n} >= 1.0x the best multiprocessing.Pool"),
            1.0,
            paired("multiprocessing.Pool"),
            match (tps, &best_pool) {
                (Some(a), Some((b, name))) => {
                    Some((format!("{a:.0} / {b:.0} tasks/s ({name})"), a / b))
                }
                _ => None,
            },
        ));
    }
    if let Some(run) = runs.iter().find(|r| r.workload == Workload::Trivial) {
        let sub = sub_all(run);
        let us = sub.as_ref().and_then(Entry::us_per_task);
        let pools: Vec<(f64, String)> = run
            .entries
            .iter()
            .filter(|e| e.source == Source::ProcessPool)
            .filter_map(|e| e.us_per_task().map(|u| (u, e.short_label())))
            .collect();
        let lowest = pools
            .iter()
            .cloned()
            .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        out.push(Check {
            target: format!(
                "trivial: SubInterpreters x{n} per-task overhead below every process-pool figure"
            ),
            measured: match (us, &lowest, &sub) {
                (Some(u), Some((l, name)), Some(s)) => {
                    format!(
                        "{} {}: {} µs vs lowest pool {name}: {} µs",
                        s.label,
                        s.grouping,
                        fmt_us(u),
                        fmt_us(*l)
                    )
                }
                _ => "not measured".into(),
            },
            met: us.zip(lowest.as_ref().map(|l| l.0)).map(|(u, l)| u < l),
        });
        let batched = run
            .entries
            .iter()
            .find(|e| {
                e.source == Source::Gilpool(Mode::SubInterpreters)
                    && e.workers == n
                    && e.key == gilpool_key(Mode::SubInterpreters, n, (64, MapChunks::Batch))
            })
            .and_then(Entry::us_per_task);
        let pool_text = pools
            .iter()
            .map(|(u, name)| format!("{name} {} µs", fmt_us(*u)))
            .collect::<Vec<_>>()
            .join("; ");
        out.push(Check {
            target: format!(
                "trivial: end-to-end per-task overhead <= 1 µs, chunks of 64, {n} workers"
            ),
            measured: batched.map_or("not measured".into(), |b| {
                if pool_text.is_empty() {
                    format!("{} µs", fmt_us(b))
                } else {
                    format!("{} µs (process pools: {pool_text})", fmt_us(b))
                }
            }),
            met: batched.map(|b| b <= 1.0),
        });
    }
    let lat = |prefix: &str| {
        latency
            .iter()
            .find(|l| l.mode == Some(Mode::SubInterpreters) && l.what.starts_with(prefix))
            .or_else(|| {
                latency
                    .iter()
                    .find(|l| l.mode.is_some() && l.what.starts_with(prefix))
            })
    };
    if let Some(l) = lat("round trip") {
        out.push(Check {
            target: "single unbatched submit + wait: p50 <= 20 µs".into(),
            measured: format!(
                "p50 {:.2} µs, p99 {:.2} µs ({})",
                l.p50_us,
                l.p99_us,
                l.mode.map_or(String::new(), |m| m.to_string())
            ),
            met: Some(l.p50_us <= 20.0),
        });
    }
    if let Some(l) = lat("sync invoke") {
        out.push(Check {
            target: "sync invoke: p50 <= 5 µs".into(),
            measured: format!(
                "p50 {:.2} µs, p99 {:.2} µs ({})",
                l.p50_us,
                l.p99_us,
                l.mode.map_or(String::new(), |m| m.to_string())
            ),
            met: Some(l.p50_us <= 5.0),
        });
    }
    out
}

/// A ratio target judged on the paired rounds' median, with the
/// best-of-rounds ratio from the table beside it (`best`: its text and
/// value; the verdict falls back to it when no paired ratios exist).
fn paired_check(
    target: String,
    at_least: f64,
    paired: Option<&Paired>,
    best: Option<(String, f64)>,
) -> Check {
    let best_text = best
        .as_ref()
        .map(|(text, r)| format!("best of rounds: {text} = {r:.3}"));
    match paired.and_then(|p| Some((p, p.median()?))) {
        Some((p, median)) => Check {
            target,
            measured: format!(
                "paired median {median:.3} (middle half {}–{}, {} pairs){}",
                fmt_opt(p.quantile(0.25), 3),
                fmt_opt(p.quantile(0.75), 3),
                p.ratios.len(),
                best_text.map_or(String::new(), |t| format!("; {t}"))
            ),
            met: Some(median >= at_least),
        },
        None => Check {
            target,
            measured: best_text.unwrap_or_else(|| "not measured".into()),
            met: best.map(|(_, r)| r >= at_least),
        },
    }
}

fn print_checks(checks: &[Check]) {
    if checks.is_empty() {
        return;
    }
    println!();
    println!("## targets (this run)");
    println!();
    println!("| target | measured | met |");
    println!("|---|---|---|");
    for c in checks {
        let met = match c.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "n/a",
        };
        println!("| {} | {} | {met} |", c.target, c.measured);
    }
}

fn report_json(
    plan: &Plan,
    m: &Machine,
    runs: &[WorkloadRun],
    latency: &[Latency],
    checks: &[Check],
) -> Json {
    let workloads: Vec<Json> = runs
        .iter()
        .map(|run| {
            let seq = run.sequential_tps();
            let ceil = run.ceiling_tps();
            let entries: Vec<Json> = run
                .entries
                .iter()
                .map(|e| {
                    let mut v = json!({
                        "key": e.key, "label": e.label, "grouping": e.grouping,
                        "workers": e.workers, "tasks": e.tasks,
                    });
                    match &e.outcome {
                        Outcome::Ran {
                            seconds,
                            seconds_all,
                            startup_s,
                            verified,
                        } => {
                            let tps = e.tasks_per_s();
                            v["seconds"] = json!(seconds);
                            v["seconds_all"] = json!(seconds_all);
                            v["tasks_per_s"] = json!(tps);
                            v["speedup_vs_sequential"] = json!(tps.zip(seq).map(|(a, b)| a / b));
                            v["efficiency_vs_ceiling"] = json!(tps.zip(ceil).map(|(a, b)| a / b));
                            v["us_per_task"] = json!(e.us_per_task());
                            v["startup_s"] = json!(startup_s);
                            v["verified"] = json!(verified);
                        }
                        Outcome::Skipped(why) => v["skipped"] = json!(why),
                        Outcome::Failed(why) => v["error"] = json!(why),
                    }
                    v
                })
                .collect();
            json!({
                "workload": run.workload.name(),
                "function": format!("gilpool_workloads.{}", run.workload.function()),
                "tasks": run.tasks,
                "entries": entries,
                "paired": run.paired.iter().map(|p| json!({
                    "comparison": p.what,
                    "ratios_peer_s_over_gilpool_s": p.ratios,
                    "median": p.median(), "q1": p.quantile(0.25), "q3": p.quantile(0.75),
                    "min": p.min(), "max": p.max(),
                })).collect::<Vec<_>>(),
                "baselines_raw": run.baselines,
            })
        })
        .collect();
    json!({
        "tool": "gilpool bench",
        "python": m.python,
        "executable": m.executable,
        "cpus": m.cpus,
        "cpu_model": m.cpu_model,
        "workers": plan.workers,
        "repeat": plan.repeat,
        "paired_passes_per_round": plan.paired,
        "loadavg_before": m.load_before,
        "loadavg_after": m.load_after,
        "runtime_start_s": m.runtime_start_s,
        "core_probe_us_before": m.probe_before,
        "core_probe_us_after": m.probe_after,
        "workloads": workloads,
        "latency": latency.iter().map(|l| json!({
            "measure": l.what,
            "mode": l.mode.map(|m| m.to_string()),
            "workers": l.mode.map(|_| l.workers),
            "samples": l.samples,
            "p50_us": l.p50_us, "p99_us": l.p99_us, "mean_us": l.mean_us,
        })).collect::<Vec<_>>(),
        "targets": checks.iter().map(|c| json!({
            "target": c.target, "measured": c.measured, "met": c.met,
        })).collect::<Vec<_>>(),
    })
}

/// Calls per core in [`speed_probe`].
const PROBE_CALLS: usize = 200;

/// How fast each core runs Python right now: one `python` child per core,
/// pinned there (it inherits the spawning thread's affinity) and all
/// running at once, times `PROBE_CALLS` calls of `heavy()`. On this kind of
/// shared VM a core can run far slower than the guest's load average
/// shows (another tenant on the host), which skews every parallel figure.
fn speed_probe(plan: &Plan, executable: &str) -> Vec<Option<f64>> {
    let code = format!(
        "import time, gilpool_workloads as W\nW.heavy()\nt = time.perf_counter()\n\
         for _ in range({PROBE_CALLS}): W.heavy()\nprint((time.perf_counter() - t) / {PROBE_CALLS} * 1e6)"
    );
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let threads: Vec<_> = cores
        .into_iter()
        .map(|core| {
            let (exe, code, dir) = (executable.to_string(), code.clone(), plan.dir.clone());
            std::thread::spawn(move || {
                if !core_affinity::set_for_current(core) {
                    return None;
                }
                let out = Command::new(exe)
                    .args(["-c", &code])
                    .env("PYTHONPATH", dir)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().ok().flatten())
        .collect()
}

fn fmt_probe(probe: &[Option<f64>]) -> String {
    if probe.is_empty() {
        return "not measured".into();
    }
    probe
        .iter()
        .enumerate()
        .map(|(i, v)| format!("cpu{i} {}", v.map_or("?".into(), |v| format!("{v:.0}"))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

// ---------------------------------------------------------------------------
// chart: a hand-written SVG, one panel per workload

const CHART_W: f64 = 1090.0;
const LABEL_W: f64 = 470.0;
const VALUE_W: f64 = 170.0;
const ROW_H: f64 = 22.0;
const BAR_H: f64 = 15.0;

fn colour(source: Source) -> &'static str {
    match source {
        Source::Sequential | Source::Threads => "#9e9e9e",
        Source::ProcessPool => "#e6862e",
        Source::Interpreters => "#8e6cc0",
        Source::Ceiling => "#4a4a4a",
        Source::Gilpool(Mode::SubInterpreters) => "#2e9e52",
        Source::Gilpool(_) => "#5fa8d3",
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step near `span / 5` (1, 2 or 5 times a power of ten).
fn nice_step(span: f64) -> f64 {
    let raw = (span / 5.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|k| k * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn chart_svg(runs: &[WorkloadRun], m: &Machine, plan: &Plan) -> String {
    let bar_w = CHART_W - LABEL_W - VALUE_W;
    let mut body = String::new();
    let mut y = 84.0;
    for run in runs {
        let rows: Vec<&Entry> = run
            .entries
            .iter()
            .filter(|e| e.seconds().is_some())
            .collect();
        if rows.is_empty() {
            continue;
        }
        let seq = run.sequential_tps();
        let log = run.workload == Workload::Trivial;
        let title = match run.workload {
            Workload::Heavy => format!(
                "heavy: gilpool_workloads.heavy() ~1 ms/task, {} tasks — tasks/s (higher is better)",
                run.tasks
            ),
            Workload::Trivial => format!(
                "trivial: gilpool_workloads.inc(i), {} tasks — wall µs per task, log scale (lower is better)",
                run.tasks
            ),
        };
        let _ = writeln!(
            body,
            r#"<text x="12" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
            y,
            xml_escape(&title)
        );
        y += 18.0;
        let top = y;
        let value = |e: &Entry| {
            if log {
                e.us_per_task().unwrap_or(0.0)
            } else {
                e.tasks_per_s().unwrap_or(0.0)
            }
        };
        let (lo, hi) = rows.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), e| {
            (lo.min(value(e)), hi.max(value(e)))
        });
        // Scale: value -> x offset within the bar area.
        let (lo_d, hi_d, step) = if log {
            let lo_d = lo.max(1e-3).log10().floor();
            let hi_d = hi.max(lo * 10.0).log10().ceil();
            (lo_d, hi_d, 1.0)
        } else {
            let step = nice_step(hi);
            (0.0, (hi / step).ceil() * step, step)
        };
        let scale = |v: f64| -> f64 {
            if log {
                let d = v.max(10f64.powf(lo_d)).log10();
                (d - lo_d) / (hi_d - lo_d) * bar_w
            } else {
                v / hi_d * bar_w
            }
        };
        let plot_h = rows.len() as f64 * ROW_H + 6.0;
        // Grid and ticks.
        let mut t = lo_d;
        while t <= hi_d + 1e-9 {
            let (x, label) = if log {
                let v = 10f64.powf(t);
                (LABEL_W + scale(v), format_tick(v))
            } else {
                (LABEL_W + scale(t), format_tick(t))
            };
            let _ = writeln!(
                body,
                r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e3e3e3"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#555">{}</text>"##,
                top + plot_h,
                top + plot_h + 14.0,
                xml_escape(&label)
            );
            t += step;
        }
        // Value labels go on top of everything else (the ceiling line).
        let mut values = String::new();
        for (i, e) in rows.iter().enumerate() {
            let ry = top + 4.0 + i as f64 * ROW_H;
            let v = value(e);
            let w = scale(v).max(1.0);
            let label = format!("{}, W={}", e.short_label(), e.workers);
            let detail = if log {
                format!("{} µs", fmt_us(v))
            } else {
                match seq {
                    Some(s) => format!("{} /s · {:.2}x", fmt_rate(v), v / s),
                    None => format!("{} /s", fmt_rate(v)),
                }
            };
            let weight = if matches!(e.source, Source::Gilpool(_)) {
                "bold"
            } else {
                "normal"
            };
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end" font-weight="{weight}">{}</text><rect x="{LABEL_W:.1}" y="{ry:.1}" width="{w:.1}" height="{BAR_H}" fill="{}" rx="2"/>"#,
                LABEL_W - 8.0,
                ry + BAR_H - 3.0,
                xml_escape(&label),
                colour(e.source),
            );
            let _ = writeln!(
                values,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#222" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"##,
                LABEL_W + w + 5.0,
                ry + BAR_H - 3.0,
                xml_escape(&detail)
            );
        }
        if let (false, Some(c)) = (log, run.ceiling_tps()) {
            let x = LABEL_W + scale(c);
            let _ = writeln!(
                body,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#4a4a4a" stroke-dasharray="4 3"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#4a4a4a">ceiling</text>"##,
                top - 2.0,
                top + plot_h,
                top - 3.0
            );
        }
        body.push_str(&values);
        let _ = writeln!(
            body,
            r##"<line x1="{LABEL_W:.1}" y1="{top:.1}" x2="{LABEL_W:.1}" y2="{:.1}" stroke="#888"/>"##,
            top + plot_h
        );
        y = top + plot_h + 44.0;
    }
    let legend: [(&str, Source); 6] = [
        (
            "gilpool SubInterpreters",
            Source::Gilpool(Mode::SubInterpreters),
        ),
        ("gilpool SingleGil", Source::Gilpool(Mode::SingleGil)),
        ("process pools", Source::ProcessPool),
        ("stdlib interpreters", Source::Interpreters),
        ("sequential / threads", Source::Sequential),
        ("N-process ceiling", Source::Ceiling),
    ];
    let mut head = String::new();
    let subtitle = format!(
        "Python {} · {} CPUs ({}) · {} workers · best of {} rounds · load {} → {} · core probe µs/heavy(): {} → {}",
        m.python,
        m.cpus,
        m.cpu_model,
        plan.workers,
        plan.repeat,
        m.load_before.split(' ').next().unwrap_or("?"),
        m.load_after.split(' ').next().unwrap_or("?"),
        fmt_probe(&m.probe_before),
        fmt_probe(&m.probe_after)
    );
    let _ = writeln!(
        head,
        r##"<text x="12" y="20" font-size="16" font-weight="bold">gilpool bench</text><text x="12" y="37" font-size="11" fill="#555">{}</text>"##,
        xml_escape(&subtitle)
    );
    let mut lx = 12.0;
    for (name, src) in legend {
        let _ = writeln!(
            head,
            r#"<rect x="{lx:.1}" y="46" width="11" height="11" fill="{}" rx="2"/><text x="{:.1}" y="56" font-size="11">{}</text>"#,
            colour(src),
            lx + 15.0,
            xml_escape(name)
        );
        lx += 22.0 + 6.3 * name.len() as f64;
    }
    let height = y.max(80.0);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_W}\" height=\"{height:.0}\" viewBox=\"0 0 {CHART_W} {height:.0}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{head}{body}</svg>\n"
    )
}

fn format_tick(v: f64) -> String {
    if v <= 0.0 {
        "0".into()
    } else if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else if v >= 1.0 {
        format!("{v}")
    } else {
        let digits = ((-v.log10()).ceil() as usize).min(9);
        format!("{v:.digits$}")
    }
}

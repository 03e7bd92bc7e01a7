//! `gilpool bench`: gilpool beside its Python-side peers on the same
//! machine and workloads — sequential Python, threads, process pools, the
//! stdlib interpreters module and the N-process ceiling — plus the latency
//! of single calls. Markdown tables go to stdout; an SVG chart and every
//! figure as JSON go only where `--chart` and `--json` say.
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
//!
//! The modules, in the order a run uses them: [`machine`] (CPU, load,
//! core speed probe), [`peers`] (the `--serve` child), [`engines`]
//! (gilpool's engines and timed `map`), [`measure`] (the interleaved
//! rounds and paired ratios), [`latency`] (single calls), [`report`] (the
//! Markdown tables and the JSON), [`targets`] (the targets,
//! measured) and [`chart`] (the SVG, drawn with plotters).

mod chart;
mod engines;
mod latency;
mod machine;
mod measure;
mod peers;
mod report;
mod scaling;
mod targets;

use self::engines::build_engine;
use self::latency::measure_latency;
use self::machine::{cpu_model, loadavg, speed_probe, Machine};
use self::measure::{measure_workload, Paired};
use self::report::{print_checks, print_report, report_json};
use self::targets::checks;
use super::workloads_dir;
use gilpool::{MapChunks, Mode};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Which workloads `gilpool bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum WorkloadArg {
    /// `gilpool_workloads.heavy()`: about 1 ms of pure-Python CPU work.
    Heavy,
    /// `gilpool_workloads.library()`: a `difflib` diff (a few hundred µs), a real
    /// pure-Python library that allocates as it goes.
    Library,
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
    /// Tasks per timed run of the heavy (and library) workload.
    #[arg(long, default_value_t = 1000)]
    tasks_heavy: usize,
    /// Tasks per timed run of the trivial workload.
    #[arg(long, default_value_t = 20000)]
    tasks_trivial: usize,
    /// Workers for the parallel entries (default: the number of cores).
    /// gilpool SubInterpreters runs with 1..=N workers. Several counts
    /// (`--workers 1,2,4,8,16`) print the scaling table instead: at each N,
    /// gilpool against the N-process ceiling and `multiprocessing.Pool(N)`,
    /// with `--tasks-heavy`/`--tasks-trivial` tasks per worker.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    workers: Vec<usize>,
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
    /// Write the SVG chart here (none without this option).
    #[arg(long, value_name = "PATH")]
    chart: Option<PathBuf>,
    /// Write every figure (and the baselines' raw output) as JSON here
    /// (none without this option).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Measure gilpool only; do not run the Python-side baselines.
    #[arg(long)]
    skip_python: bool,
    /// CPython's allocator for gilpool's engines (the Python peers run with
    /// their own default).
    #[arg(long, value_enum, default_value_t = AllocatorArg::Default)]
    allocator: AllocatorArg,
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
    Library,
    Trivial,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Heavy => "heavy",
            Workload::Library => "library",
            Workload::Trivial => "trivial",
        }
    }
    /// The function in `gilpool_workloads`.
    fn function(self) -> &'static str {
        match self {
            Workload::Heavy => "heavy",
            Workload::Library => "library",
            Workload::Trivial => "inc",
        }
    }
    /// The handler settings gilpool runs this workload with: batch size
    /// and how `map` chunks the inputs. The first is the default `map`
    /// (guided chunks), the row the paired comparisons use.
    fn variants(self) -> &'static [(usize, MapChunks)] {
        match self {
            Workload::Heavy | Workload::Library => &[(1, MapChunks::Guided), (1, MapChunks::Batch)],
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
    /// Why the entry failed: an error, or wrong results (`None` when it ran
    /// right or was skipped for a reason).
    fn failure(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Ran {
                verified: false, ..
            } => Some("wrong results".into()),
            Outcome::Failed(why) => Some(why.clone()),
            Outcome::Ran { .. } | Outcome::Skipped(_) => None,
        }
    }
    fn succeeded(&self) -> bool {
        self.failure().is_none()
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

/// The options after validation.
/// `--allocator`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum AllocatorArg {
    Default,
    Pymalloc,
    Mimalloc,
    Malloc,
}

impl From<AllocatorArg> for gilpool::Allocator {
    fn from(a: AllocatorArg) -> Self {
        match a {
            AllocatorArg::Default => gilpool::Allocator::Default,
            AllocatorArg::Pymalloc => gilpool::Allocator::Pymalloc,
            AllocatorArg::Mimalloc => gilpool::Allocator::Mimalloc,
            AllocatorArg::Malloc => gilpool::Allocator::Malloc,
        }
    }
}

#[derive(Debug, Clone)]
struct Plan {
    allocator: gilpool::Allocator,
    workers: usize,
    /// A scaling run: one gilpool row (each workload's default `map`) and
    /// only the peers of [`scaling::peers`].
    scaling: bool,
    repeat: usize,
    paired: usize,
    dir: PathBuf,
    force_progress: bool,
}

impl Plan {
    /// The mode of the gilpool row the paired comparisons use:
    /// SubInterpreters, or in a scaling run [`scaling::mode`] (SingleGil
    /// where this Python has no own-GIL interpreters).
    fn paired_mode(&self) -> Mode {
        if self.scaling {
            scaling::mode()
        } else {
            Mode::SubInterpreters
        }
    }
}

fn run(args: BenchArgs) -> Result<bool, String> {
    let cores = gilpool::host_cores();
    let counts = if args.workers.is_empty() {
        vec![cores]
    } else {
        args.workers.clone()
    };
    let workers = counts.iter().copied().max().unwrap_or(cores);
    if counts.contains(&0)
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
    if (1..counts.len()).any(|i| counts[..i].contains(&counts[i])) {
        let list: Vec<String> = counts.iter().map(usize::to_string).collect();
        return Err(format!(
            "--workers {}: each worker count may appear once",
            list.join(",")
        ));
    }
    let plan = Plan {
        allocator: args.allocator.into(),
        workers,
        scaling: counts.len() > 1,
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
        WorkloadArg::Library => &[Workload::Library],
        WorkloadArg::Trivial => &[Workload::Trivial],
        WorkloadArg::Both => &[Workload::Heavy, Workload::Trivial],
    };
    let mut machine = Machine {
        cpus: cores,
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
    if plan.scaling {
        return run_scaling(&args, &plan, &counts, workloads, machine);
    }
    let mut runs = Vec::new();
    for &wl in workloads {
        let tasks = match wl {
            Workload::Heavy | Workload::Library => args.tasks_heavy,
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

    if let Some(path) = &args.chart {
        write_output(path, &chart::svg(&runs, &machine, &plan)?)?;
        eprintln!("gilpool bench: chart written to {}", path.display());
    }
    if let Some(path) = &args.json {
        write_json(
            path,
            &report_json(&plan, &machine, &runs, &latency, &checks),
        )?;
    }
    Ok(all_succeeded(runs.iter().flat_map(|r| &r.entries)))
}

/// Writes `doc` as pretty JSON to `path`, and says so.
fn write_json(path: &Path, doc: &Json) -> Result<(), String> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
    write_output(path, &(text + "\n"))?;
    eprintln!("gilpool bench: JSON written to {}", path.display());
    Ok(())
}

/// Whether every entry succeeded; says so on stderr when one did not.
fn all_succeeded<'a>(mut entries: impl Iterator<Item = &'a Entry>) -> bool {
    let ok = entries.all(Entry::succeeded);
    if !ok {
        eprintln!("gilpool bench: some entries failed or returned wrong results (see the tables)");
    }
    ok
}

/// `--workers` with several counts: the scaling table (no latency section).
fn run_scaling(
    args: &BenchArgs,
    plan: &Plan,
    counts: &[usize],
    workloads: &[Workload],
    mut machine: Machine,
) -> Result<bool, String> {
    if args.latency_samples > 0 && workloads.contains(&Workload::Trivial) {
        eprintln!("gilpool bench: a scaling run has no latency section (one --workers count has)");
    }
    let mut runs = Vec::new();
    for &wl in workloads {
        let per_worker = match wl {
            Workload::Heavy | Workload::Library => args.tasks_heavy,
            Workload::Trivial => args.tasks_trivial,
        };
        let points =
            scaling::measure_scaling(plan, counts, wl, per_worker, args.skip_python, &mut machine)?;
        runs.push((wl, points));
    }
    machine.probe_after = speed_probe(plan, &machine.executable);
    machine.load_after = loadavg();
    scaling::print_scaling(plan, &machine, &runs);
    if let Some(path) = &args.chart {
        write_output(path, &scaling::svg(&runs, &machine)?)?;
        eprintln!("gilpool bench: chart written to {}", path.display());
    }
    if let Some(path) = &args.json {
        write_json(path, &scaling::scaling_json(plan, &machine, &runs))?;
    }
    Ok(all_succeeded(
        runs.iter()
            .flat_map(|(_, points)| points)
            .flat_map(|p| &p.run.entries),
    ))
}

/// Writes `text` to `path`, creating its folder first.
fn write_output(path: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

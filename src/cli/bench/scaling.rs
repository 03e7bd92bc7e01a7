//! `gilpool bench --workers 1,2,4,8,16`: the scaling table. At each worker
//! count N, gilpool SubInterpreters with N workers (each workload's default
//! `map` row) runs against the N-process ceiling and `multiprocessing.Pool(N)`
//! in the same interleaved, paired rounds as the one-N bench
//! ([`measure_workload`]), and the table shows, per N, each side's best
//! round and the paired medians.
//!
//! Every worker gets the same share at every N: a run at N has
//! `--tasks-heavy × N` (or `--tasks-trivial × N`) tasks, so the runs at 16
//! are as long as the runs at 1 and none is too short to time.

use super::chart::{lines_svg, Line};
use super::machine::{fmt_probe, Machine};
use super::measure::{measure_workload, Paired};
use super::report::{fmt_opt, fmt_rate, run_header};
use super::{Entry, Plan, Source, Workload, WorkloadRun};
use gilpool::Mode;
use serde_json::{json, Value as Json};

/// The Python-side peers a scaling run starts. The trivial workload skips
/// `Pool(N).map(chunksize=1)`: one pickled round trip per task makes each
/// of its runs tens of times longer than the others' and says nothing new.
pub(super) fn peers(wl: Workload) -> &'static [&'static str] {
    match wl {
        Workload::Heavy | Workload::Library => &["ceiling", "mp_pool_default", "mp_pool_chunk1"],
        Workload::Trivial => &["ceiling", "mp_pool_default"],
    }
}

/// One N of one workload.
#[derive(Debug)]
pub(super) struct Point {
    pub(super) workers: usize,
    pub(super) run: WorkloadRun,
}

impl Point {
    /// gilpool's row at this N (the only gilpool row of a scaling run).
    fn gilpool(&self) -> Option<&Entry> {
        self.run
            .entries
            .iter()
            .find(|e| matches!(e.source, Source::Gilpool(_)) && e.workers == self.workers)
    }
    fn best_pool(&self) -> Option<&Entry> {
        self.run
            .entries
            .iter()
            .filter(|e| e.source == Source::ProcessPool && e.seconds().is_some())
            .max_by(|a, b| {
                a.tasks_per_s()
                    .partial_cmp(&b.tasks_per_s())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
    }
    fn paired(&self, what: &str) -> Option<&Paired> {
        self.run.paired.iter().find(|p| p.what.contains(what))
    }
}

/// Every N of `wl`, in the order given.
pub(super) fn measure_scaling(
    plan: &Plan,
    counts: &[usize],
    wl: Workload,
    tasks_per_worker: usize,
    skip_python: bool,
    machine: &mut Machine,
) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    for &n in counts {
        let at_n = Plan {
            workers: n,
            ..plan.clone()
        };
        eprintln!(
            "gilpool bench: scaling, {} with {n} workers ({} tasks a run)",
            wl.name(),
            tasks_per_worker * n
        );
        let run = measure_workload(&at_n, wl, tasks_per_worker * n, skip_python, machine)?;
        out.push(Point { workers: n, run });
    }
    Ok(out)
}

/// `0.93 (0.90–0.95)`: a paired median with its range.
fn fmt_paired(p: Option<&Paired>) -> String {
    match p.and_then(|p| Some((p.median()?, p.min()?, p.max()?))) {
        Some((med, lo, hi)) => format!("{med:.2} ({lo:.2}–{hi:.2})"),
        None => "-".into(),
    }
}

fn mode_of(points: &[Point]) -> String {
    points
        .iter()
        .find_map(|p| p.gilpool())
        .map_or("-".into(), |e| e.label.clone())
}

pub(super) fn print_scaling(plan: &Plan, m: &Machine, runs: &[(Workload, Vec<Point>)]) {
    println!("# gilpool bench: scaling");
    println!();
    println!("- Python {} ({})", m.python, m.executable);
    println!("- {} CPUs ({})", m.cpus, m.cpu_model);
    println!(
        "- load average before/after: {} / {}; core probe µs per heavy(): {} / {}",
        m.load_before,
        m.load_after,
        fmt_probe(&m.probe_before),
        fmt_probe(&m.probe_after)
    );
    println!(
        "- {} rounds × {} paired passes at each N; tasks per run = tasks per worker × N; tasks/s from each entry's best round; ratios are paired medians (min–max) of peer seconds ÷ gilpool seconds in the same pass (above 1: gilpool faster)",
        plan.repeat, plan.paired
    );
    for (wl, points) in runs {
        println!();
        println!(
            "## {} (gilpool_workloads.{}), {}",
            wl.name(),
            wl.function(),
            mode_of(points)
        );
        println!();
        println!("| N | tasks | gilpool tasks/s | speed-up vs gilpool x1 | ceiling tasks/s | vs N-process ceiling | best Pool(N) tasks/s | vs best Pool(N) |");
        println!("|--:|--:|--:|--:|--:|--:|--:|--:|");
        let one = points
            .iter()
            .find(|p| p.workers == 1)
            .and_then(|p| p.gilpool()?.tasks_per_s());
        for p in points {
            let g = p.gilpool().and_then(Entry::tasks_per_s);
            let pool = p.best_pool();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                p.workers,
                p.run.tasks,
                g.map_or("-".into(), fmt_rate),
                fmt_opt(g.zip(one).map(|(a, b)| a / b), 2),
                p.run.ceiling_tps().map_or("-".into(), fmt_rate),
                fmt_paired(p.paired("ceiling")),
                pool.and_then(Entry::tasks_per_s)
                    .map_or("-".into(), |t| format!(
                        "{}, {}",
                        fmt_rate(t),
                        pool.map_or(String::new(), |e| e.grouping.clone())
                    )),
                fmt_paired(p.paired("multiprocessing.Pool")),
            );
        }
        let failed: Vec<String> = points
            .iter()
            .flat_map(|p| &p.run.entries)
            .filter_map(|e| Some(format!("{} x{}: {}", e.label, e.workers, e.failure()?)))
            .collect();
        for f in failed {
            println!();
            println!("- FAILED {f}");
        }
    }
    if let Some((_, points)) = runs.iter().find(|(wl, _)| *wl == Workload::Heavy) {
        if let Some(top) = points.iter().max_by_key(|p| p.workers) {
            let med = top.paired("ceiling").and_then(Paired::median);
            println!();
            println!(
                "target: heavy, SubInterpreters x{n} >= 0.9 of the {n}-process ceiling (paired median): {} → {}",
                fmt_opt(med, 2),
                match med {
                    Some(v) if v >= 0.9 => "met",
                    Some(_) => "NOT met",
                    None => "n/a",
                },
                n = top.workers,
            );
        }
    }
}

pub(super) fn scaling_json(plan: &Plan, m: &Machine, runs: &[(Workload, Vec<Point>)]) -> Json {
    let paired = |p: Option<&Paired>| {
        p.map(|p| {
            json!({
                "ratios_peer_s_over_gilpool_s": p.ratios,
                "median": p.median(), "min": p.min(), "max": p.max(),
            })
        })
    };
    let mut doc = run_header("gilpool bench (scaling)", plan, m);
    doc["workloads"] = json!(runs
        .iter()
        .map(|(wl, points)| json!({
            "workload": wl.name(),
            "points": points.iter().map(|p| json!({
                "workers": p.workers,
                "tasks": p.run.tasks,
                "mode": p.gilpool().map(|e| e.label.clone()),
                "gilpool_tasks_per_s": p.gilpool().and_then(Entry::tasks_per_s),
                "ceiling_tasks_per_s": p.run.ceiling_tps(),
                "best_pool_tasks_per_s": p.best_pool().and_then(Entry::tasks_per_s),
                "best_pool": p.best_pool().map(|e| e.key.clone()),
                "vs_ceiling": paired(p.paired("ceiling")),
                "vs_best_pool": paired(p.paired("multiprocessing.Pool")),
            })).collect::<Vec<_>>(),
        }))
        .collect::<Vec<_>>());
    doc
}

/// The chart: the paired medians against N, one line per workload and
/// peer, drawn by [`chart::lines_svg`](super::chart::lines_svg).
pub(super) fn svg(runs: &[(Workload, Vec<Point>)], m: &Machine) -> Result<String, String> {
    let mut lines = Vec::new();
    for (wl, points) in runs {
        for (peer, what, pool) in [
            ("N-process ceiling", "ceiling", false),
            ("best Pool(N)", "multiprocessing.Pool", true),
        ] {
            let at: Vec<(usize, f64)> = points
                .iter()
                .filter_map(|p| Some((p.workers, p.paired(what)?.median()?)))
                .collect();
            if !at.is_empty() {
                lines.push(Line {
                    label: format!("{}: vs {peer}", wl.name()),
                    pool,
                    dashed: *wl == Workload::Trivial,
                    points: at,
                });
            }
        }
    }
    let subtitle = format!(
        "{} · Python {} · {} CPUs ({}) · load {} → {} · paired medians, peer s ÷ gilpool s (above 1: gilpool faster)",
        runs.first().map_or("-".into(), |(_, p)| mode_of(p)),
        m.python,
        m.cpus,
        m.cpu_model,
        m.load_before.split(' ').next().unwrap_or("?"),
        m.load_after.split(' ').next().unwrap_or("?"),
    );
    lines_svg("gilpool bench: scaling", &subtitle, &lines)
}

/// Whether gilpool's side of a scaling run is SubInterpreters (where this
/// Python has it) or SingleGil.
pub(super) fn mode() -> Mode {
    if Mode::SubInterpreters.is_supported() {
        Mode::SubInterpreters
    } else {
        Mode::SingleGil
    }
}

//! The report: Markdown tables on stdout (machine, one table per
//! workload with its paired runs, latency, targets) and the same figures
//! as one JSON document.

use super::latency::Latency;
use super::machine::{fmt_probe, Machine};
use super::targets::Check;
use super::{Outcome, Plan, Workload, WorkloadRun};
use serde_json::{json, Value as Json};

pub(super) fn fmt_opt(v: Option<f64>, digits: usize) -> String {
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

pub(super) fn fmt_rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub(super) fn fmt_us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub(super) fn print_report(
    plan: &Plan,
    m: &Machine,
    runs: &[WorkloadRun],
    latency: &[Latency],
    total_s: f64,
) {
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
            Workload::Library => "gilpool_workloads.library() (difflib, a pure-Python library)",
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
pub(super) fn print_checks(checks: &[Check]) {
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

pub(super) fn report_json(
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
    let mut doc = run_header("gilpool bench", plan, m);
    doc["workers"] = json!(plan.workers);
    doc["runtime_start_s"] = json!(m.runtime_start_s);
    doc["workloads"] = json!(workloads);
    doc["latency"] = json!(latency
        .iter()
        .map(|l| json!({
            "measure": l.what,
            "mode": l.mode.map(|m| m.to_string()),
            "workers": l.mode.map(|_| l.workers),
            "samples": l.samples,
            "p50_us": l.p50_us, "p99_us": l.p99_us, "mean_us": l.mean_us,
        }))
        .collect::<Vec<_>>());
    doc["targets"] = json!(checks
        .iter()
        .map(|c| json!({ "target": c.target, "measured": c.measured, "met": c.met }))
        .collect::<Vec<_>>());
    doc
}

/// The fields every JSON document of the bench starts with: the tool, the
/// machine, the rounds.
pub(super) fn run_header(tool: &str, plan: &Plan, m: &Machine) -> Json {
    json!({
        "tool": tool,
        "python": m.python,
        "executable": m.executable,
        "cpus": m.cpus,
        "cpu_model": m.cpu_model,
        "repeat": plan.repeat,
        "paired_passes_per_round": plan.paired,
        "loadavg_before": m.load_before,
        "loadavg_after": m.load_after,
        "core_probe_us_before": m.probe_before,
        "core_probe_us_after": m.probe_after,
    })
}

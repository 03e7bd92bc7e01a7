//! The targets, judged on this run: heavy throughput against the
//! ceiling and `multiprocessing.Pool` (on the paired medians), trivial
//! per-task overhead, and single-call latency.

use super::engines::gilpool_key;
use super::latency::Latency;
use super::measure::Paired;
use super::report::{fmt_opt, fmt_us};
use super::{Entry, Plan, Source, Workload, WorkloadRun};
use gilpool::{MapChunks, Mode};

#[derive(Debug)]
pub(super) struct Check {
    pub(super) target: String,
    pub(super) measured: String,
    pub(super) met: Option<bool>,
}

pub(super) fn checks(plan: &Plan, runs: &[WorkloadRun], latency: &[Latency]) -> Vec<Check> {
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

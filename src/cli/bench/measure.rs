//! The interleaved rounds of one workload: every entry timed once a round,
//! the paired group back to back at the end of it, and the paired ratios
//! drawn from those adjacent runs.

use super::engines::{gilpool_key, run_map, start_gilpool, GilpoolSide};
use super::machine::Machine;
use super::peers::Baselines;
use super::{Entry, Outcome, Plan, Workload, WorkloadRun};
use crate::cli::progress;
use gilpool::{Handler, Mode};

/// The Python-side entries that take part in the paired comparisons.
pub(super) const PAIRED_PEERS: [&str; 4] = [
    "ceiling",
    "ceiling_sub",
    "mp_pool_default",
    "mp_pool_chunk1",
];

/// What times one run of an entry.
#[derive(Debug)]
pub(super) enum Runner {
    /// `run NAME` on the baselines process.
    Python(String),
    /// `handler.map` on one of our engines.
    Gilpool(Handler),
}

/// One entry while its rounds run: its row, how to time it, and the
/// seconds of every round (`None` where it did not run).
#[derive(Debug)]
pub(super) struct Slot {
    entry: Entry,
    runner: Option<Runner>,
    startup_s: Option<f64>,
    times: Vec<Option<f64>>,
    verified: bool,
    failed: Option<String>,
}

impl Slot {
    pub(super) fn new(entry: Entry, runner: Option<Runner>, startup_s: Option<f64>) -> Slot {
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
pub(super) struct Paired {
    pub(super) what: String,
    /// `peer seconds / gilpool seconds` per round (above 1: gilpool faster).
    pub(super) ratios: Vec<f64>,
}

impl Paired {
    pub(super) fn median(&self) -> Option<f64> {
        self.quantile(0.5)
    }
    /// The `q` quantile (0..=1) by linear interpolation.
    pub(super) fn quantile(&self, q: f64) -> Option<f64> {
        let mut v = self.ratios.clone();
        v.sort_by(f64::total_cmp);
        let last = v.len().checked_sub(1)?;
        let pos = q.clamp(0.0, 1.0) * last as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
    }
    pub(super) fn min(&self) -> Option<f64> {
        self.ratios.iter().copied().reduce(f64::min)
    }
    pub(super) fn max(&self) -> Option<f64> {
        self.ratios.iter().copied().reduce(f64::max)
    }
}

/// Starts every entry of one workload (the Python peers in one `--serve`
/// process, gilpool's engines here), then runs `plan.repeat` rounds. A
/// round times every entry once: first the others in a rotating order,
/// then the paired group (gilpool with all workers, both ceilings and the
/// `multiprocessing.Pool` entries) back to back, also rotating, so that
/// the ratios between them come from adjacent runs.
pub(super) fn measure_workload(
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

    let mode = plan.paired_mode();
    let paired_key = gilpool_key(mode, plan.workers, wl.variants()[0]);
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

    let paired = paired_ratios(&slots, &paired_key, mode, plan.workers);
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
fn paired_ratios(slots: &[Slot], gilpool_key: &str, mode: Mode, workers: usize) -> Vec<Paired> {
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
            what: format!("gilpool {mode} x{workers} vs the {workers}-process ceiling"),
            ratios: ratio(&|r| at(ceiling, r)),
        });
    }
    if ceiling_sub.is_some() {
        out.push(Paired {
            what: format!(
                "gilpool {mode} x{workers} vs {workers} processes each in a subinterpreter"
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
            what: format!("gilpool {mode} x{workers} vs the round's best multiprocessing.Pool"),
            ratios: ratio(&|r| pools.iter().filter_map(|p| at(Some(p), r)).reduce(f64::min)),
        });
    }
    out.retain(|p| !p.ratios.is_empty());
    out
}

//! Metrics: counters per worker slot and per handler, and latency
//! histograms, read as a snapshot by [`Engine::metrics`](crate::Engine::metrics).
//!
//! Everything is a relaxed atomic bumped on paths the engine walks anyway:
//! per job (batches, busy and attached time), per task (tasks, queue wait
//! and run time: one clock read at the start of each task, one at its
//! end, a [`Stamp`]; a sub-lane `map` chunk, which runs its inputs in one
//! Python loop, records the chunk's time divided evenly among them), per
//! event (steals, interrupts, timeouts, quarantines, recycles).
//! `EngineBuilder::metrics(false)` turns the per-task and per-job timing off
//! (no clock read, empty histograms, zero busy and attached time); the
//! counters stay.

use crate::placement::Placement;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The clock the metrics read per task: `quanta`'s, which reads the CPU's
/// time-stamp counter where it is invariant (scaled by a calibration made
/// once per process) and the OS clock elsewhere. On the 2-vCPU KVM host of
/// `docs/BENCHMARKS.md` a start/end pair costs 23 ns against 59 ns for
/// `std::time::Instant`; deadlines and timeouts keep `std::time::Instant`.
pub(crate) type Stamp = quanta::Instant;

/// Sub-buckets per power of two: values are kept within about 19 %.
const SUB: usize = 4;
const BUCKETS: usize = 64 * SUB;

/// A log-bucketed histogram of durations in nanoseconds.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").finish_non_exhaustive()
    }
}

fn bucket(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros() as usize;
    let frac = ((ns >> (log - 2)) & (SUB as u64 - 1)) as usize;
    (log * SUB + frac).min(BUCKETS - 1)
}

/// The largest value of bucket `b`.
fn upper(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let (log, frac) = (b / SUB, (b % SUB) as u64);
    let base = 1u64 << log;
    base + (frac + 1) * (base / SUB as u64) - 1
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        self.record_n(d, 1);
    }

    /// Records `n` samples of `d` (a chunk's inputs, its time shared evenly)
    /// with one atomic add.
    pub(crate) fn record_n(&self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket(ns)].fetch_add(n, Ordering::Relaxed);
        // A plain load first: the maximum rarely moves, and a read-modify-
        // write costs a locked instruction every time.
        if ns > self.max.load(Ordering::Relaxed) {
            self.max.fetch_max(ns, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> Percentiles {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        // Read after the buckets: a sample counted above has its maximum
        // stored by now unless it is being recorded at this moment.
        let max = self.max.load(Ordering::Relaxed);
        let at = |q: f64| {
            if total == 0 {
                return Duration::ZERO;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (b, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    // A bucket's top may lie above every sample in it; no
                    // quantile is larger than the largest sample.
                    return Duration::from_nanos(upper(b).min(max));
                }
            }
            Duration::from_nanos(max)
        };
        Percentiles {
            count: total,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: Duration::from_nanos(max),
        }
    }
}

/// Quantiles of a latency, kept within about 19 % (log buckets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample (exact).
    pub max: Duration,
}

/// Counters of one worker slot (see `slot.rs`); they span the slot's
/// generations (replacements and recycled interpreters).
#[derive(Debug, Default)]
pub(crate) struct SlotStats {
    pub(crate) tasks: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    pub(crate) attached_ns: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) interrupts: AtomicU64,
    pub(crate) recycles: AtomicU64,
    pub(crate) quarantines: AtomicU64,
    pub(crate) lent: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn add_time(c: &AtomicU64, d: Duration) {
    c.fetch_add(
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A snapshot of an engine's metrics ([`Engine::metrics`](crate::Engine::metrics)).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// One entry per worker position of each running lane.
    pub workers: Vec<WorkerMetrics>,
    /// One entry per loaded handler.
    pub handlers: Vec<HandlerMetrics>,
}

/// One worker position: counters over every interpreter it has had.
#[derive(Debug, Clone, Default)]
pub struct WorkerMetrics {
    /// `Sub` or `Main`.
    pub lane: Placement,
    /// The worker's position in its lane.
    pub index: usize,
    /// The core it is pinned to, if pinned.
    pub core: Option<usize>,
    /// Interpreters it has had before the current one (recycles and
    /// quarantines).
    pub generation: u64,
    /// Tasks (calls) it began.
    pub tasks: u64,
    /// Jobs (batches, `map` chunks) it ran.
    pub batches: u64,
    /// Jobs it stole from a sibling's deque.
    pub steals: u64,
    /// Time spent running jobs.
    pub busy: Duration,
    /// Time attached to its interpreter (holding its GIL).
    pub attached: Duration,
    /// Jobs waiting in its own deque and mailbox.
    pub queue_depth: usize,
    /// Tasks of its that ran past their deadline while running.
    pub timeouts: u64,
    /// Interrupts delivered to it.
    pub interrupts: u64,
    /// Interpreters it recycled.
    pub recycles: u64,
    /// Times it was quarantined and replaced.
    pub quarantines: u64,
    /// Of its `tasks`, those a caller's thread ran in its interpreter
    /// while it was idle ([`HandlerBuilder::caller_runs`](crate::HandlerBuilder::caller_runs)).
    pub lent: u64,
}

/// One handler's counters and latencies.
#[derive(Debug, Clone, Default)]
pub struct HandlerMetrics {
    /// `module`.
    pub module: String,
    /// `function`.
    pub function: String,
    /// The lane it runs on.
    pub placement: Placement,
    /// Tasks submitted (a `map` chunk counts once).
    pub submitted: u64,
    /// Tasks that returned a result.
    pub completed: u64,
    /// Tasks that failed (Python errors, conversions, panics, …).
    pub failed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Tasks past their deadline.
    pub timed_out: u64,
    /// Submitted and not yet finished.
    pub in_flight: usize,
    /// From submit to a worker beginning the task.
    pub queue_wait: Percentiles,
    /// From a worker beginning the task to its end.
    pub run_time: Percentiles,
}

impl WorkerMetrics {
    pub(crate) fn read(
        lane: Placement,
        index: usize,
        core: Option<usize>,
        s: &SlotStats,
        steals: u64,
        queue_depth: usize,
    ) -> WorkerMetrics {
        WorkerMetrics {
            lane,
            index,
            core,
            generation: get(&s.recycles) + get(&s.quarantines),
            tasks: get(&s.tasks),
            batches: get(&s.batches),
            steals,
            busy: Duration::from_nanos(get(&s.busy_ns)),
            attached: Duration::from_nanos(get(&s.attached_ns)),
            queue_depth,
            timeouts: get(&s.timeouts),
            interrupts: get(&s.interrupts),
            recycles: get(&s.recycles),
            lent: get(&s.lent),
            quarantines: get(&s.quarantines),
        }
    }
}

impl Metrics {
    /// Reports the snapshot through the [`metrics`](https://docs.rs/metrics)
    /// facade (feature `metrics`): counters `gilpool_worker_*` labelled
    /// `lane`/`worker` and `gilpool_handler_*` labelled `handler`, set to
    /// their absolute values, and gauges for in-flight tasks, queue depths
    /// and latency quantiles (seconds). Call it periodically; any exporter
    /// installed for the facade (Prometheus, …) publishes them.
    #[cfg(feature = "metrics")]
    pub fn export(&self) {
        for w in &self.workers {
            let labels = [
                ("lane", w.lane.to_string()),
                ("worker", w.index.to_string()),
            ];
            for (name, v) in [
                ("gilpool_worker_tasks", w.tasks),
                ("gilpool_worker_batches", w.batches),
                ("gilpool_worker_steals", w.steals),
                ("gilpool_worker_timeouts", w.timeouts),
                ("gilpool_worker_interrupts", w.interrupts),
                ("gilpool_worker_recycles", w.recycles),
                ("gilpool_worker_quarantines", w.quarantines),
                ("gilpool_worker_lent", w.lent),
            ] {
                ::metrics::counter!(name, &labels).absolute(v);
            }
            ::metrics::gauge!("gilpool_worker_busy_seconds", &labels).set(w.busy.as_secs_f64());
            ::metrics::gauge!("gilpool_worker_queue_depth", &labels).set(w.queue_depth as f64);
        }
        for h in &self.handlers {
            let labels = [("handler", format!("{}:{}", h.module, h.function))];
            for (name, v) in [
                ("gilpool_handler_submitted", h.submitted),
                ("gilpool_handler_completed", h.completed),
                ("gilpool_handler_failed", h.failed),
                ("gilpool_handler_cancelled", h.cancelled),
                ("gilpool_handler_timed_out", h.timed_out),
            ] {
                ::metrics::counter!(name, &labels).absolute(v);
            }
            ::metrics::gauge!("gilpool_handler_in_flight", &labels).set(h.in_flight as f64);
            for (name, p) in [
                ("gilpool_handler_queue_wait_p50_seconds", h.queue_wait.p50),
                ("gilpool_handler_queue_wait_p99_seconds", h.queue_wait.p99),
                ("gilpool_handler_run_time_p50_seconds", h.run_time.p50),
                ("gilpool_handler_run_time_p99_seconds", h.run_time.p99),
            ] {
                ::metrics::gauge!(name, &labels).set(p.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values_within_a_quarter() {
        for ns in [
            0u64,
            1,
            3,
            4,
            5,
            7,
            8,
            100,
            999,
            1_000_000,
            123_456_789,
            u64::MAX / 2,
        ] {
            let b = bucket(ns);
            assert!(upper(b) >= ns, "{ns} above its bucket's top {}", upper(b));
            if b >= SUB {
                assert!(upper(b - 1) < ns, "{ns} belongs lower");
                assert!((upper(b) - ns) as f64 <= ns as f64 * 0.25 + 1.0);
            }
        }
    }

    #[test]
    fn percentiles_of_known_samples() {
        let h = Histogram::default();
        for i in 1..=1000u64 {
            h.record(Duration::from_micros(i));
        }
        let p = h.snapshot();
        assert_eq!(p.count, 1000);
        assert_eq!(p.max, Duration::from_micros(1000));
        let p50 = p.p50.as_secs_f64() * 1e6;
        assert!((500.0..=625.0).contains(&p50), "{p50}");
        let p99 = p.p99.as_secs_f64() * 1e6;
        assert!((990.0..=1250.0).contains(&p99), "{p99}");
    }

    #[test]
    fn many_samples_at_once_count_as_many() {
        let (one, many) = (Histogram::default(), Histogram::default());
        for _ in 0..7 {
            one.record(Duration::from_micros(3));
        }
        one.record(Duration::from_micros(900));
        many.record_n(Duration::from_micros(3), 7);
        many.record_n(Duration::from_micros(900), 1);
        many.record_n(Duration::from_secs(1), 0);
        assert_eq!(one.snapshot(), many.snapshot());
        assert_eq!(many.snapshot().count, 8);
    }

    #[test]
    fn no_quantile_exceeds_the_maximum() {
        // 1000 ns lies in the bucket [896, 1023]: its top is above every
        // sample, so only the clamp keeps the quantiles at the maximum.
        let h = Histogram::default();
        for _ in 0..100 {
            h.record(Duration::from_nanos(1000));
        }
        let p = h.snapshot();
        assert_eq!(p.max, Duration::from_nanos(1000));
        assert_eq!((p.p50, p.p90, p.p99), (p.max, p.max, p.max));
    }
}

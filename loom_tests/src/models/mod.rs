//! One file per scheduler protocol; one `#[test]` per scenario.
//!
//! Every model runs through [`loom::model`], which reads
//! `LOOM_MAX_PREEMPTIONS` (and `LOOM_MAX_BRANCHES`, `LOOM_LOG`, ...) from the
//! environment. Models use no timeouts: loom has no clock, so the scheduler
//! turns timed waits into untimed ones under `gilpool_loom`.

mod batcher;
mod cell;
mod lend;
mod permits;
mod queues;
mod shutdown;
mod sleep;

/// Asserts that `seen` holds every id in `0..n` exactly once.
#[track_caller]
fn assert_exactly_once(mut seen: Vec<usize>, n: usize) {
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "every task exactly once");
}

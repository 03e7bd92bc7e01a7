//! The scheduler: pure Rust, no Python.
//!
//! - [`pool`]: one lane's injector, per-worker deques and stealers, and the
//!   worker-side search (`pop`, then the injector, then siblings, then sleep).
//! - [`sleep`]: the sleep/wake protocol (no lost wakeup; see its README).
//! - [`batcher`]: per-handler grouping into batches and the prefetch bound.
//! - [`permits`]: per-handler bound on in-flight tasks (backpressure).
//! - [`cell`]: the one-shot completion cell behind every task future.
//! - [`lend`]: a worker's interpreter lent to callers between its jobs.
//! - [`sync`]: std or loom primitives (`--cfg gilpool_loom`).
//!
//! This module refers only to itself and to `crossbeam-deque`/`loom`, so
//! `loom_tests/` compiles it on its own with loom's primitives. Helpers
//! that only the unit tests and the loom models call are
//! `#[cfg(any(test, gilpool_loom))]` (`#[cfg(gilpool_loom)]` for the
//! models' own).

pub(crate) mod batcher;
pub(crate) mod cell;
pub(crate) mod lend;
pub(crate) mod permits;
pub(crate) mod pool;
pub(crate) mod sleep;
pub(crate) mod sync;

#[cfg(all(test, not(gilpool_loom)))]
mod test;

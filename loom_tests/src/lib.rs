//! Loom models of gilpool's scheduler.
//!
//! The scheduler (`../src/sched`) is compiled here a second time, on its own,
//! over loom's primitives: `--cfg gilpool_loom` switches its `sync` shim to
//! `loom::sync` and to a mutex-based stand-in for crossbeam-deque with the
//! same API. Each model in [`models`] is one scenario with 2–3 threads that
//! loom runs under every interleaving (up to `LOOM_MAX_PREEMPTIONS`).
//!
//! Run them with `ci/loom.sh`; `docs/TESTING.md` says what each model
//! proves and what it cannot see.

// The models use only part of the scheduler (and, in the library build
// without `test`, none of it).
#[path = "../../src/sched/mod.rs"]
#[allow(dead_code)]
mod sched;

#[cfg(all(test, gilpool_loom))]
mod models;

// Without the cfg the scheduler would run on std primitives and
// crossbeam-deque, and loom would check nothing.
#[cfg(all(test, not(gilpool_loom)))]
compile_error!(
    "the loom models need RUSTFLAGS=\"--cfg gilpool_loom\"; run ci/loom.sh (see docs/TESTING.md)"
);

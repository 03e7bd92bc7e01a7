//! gilpool
pub(crate) mod sched;

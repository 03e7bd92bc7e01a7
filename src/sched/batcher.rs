//! `Batcher`: one handler's staging area between `submit` and the lane's
//! queues. It groups submitted items into batches of up to `batch_size` and
//! bounds how many batches are committed-but-not-started (`prefetch_depth`).
//!
//! Every state change — a push, a batch starting, a deadline passing —
//! ends by trying to form the next batch *under the same lock*, so this
//! invariant holds whenever the lock is free:
//!
//! > `pending` is empty, or `outstanding == prefetch_depth`, or a
//! > `max_batch_delay` is set, fewer than `batch_size` items wait and the
//! > oldest has waited less than the delay.
//!
//! A batch taken from here holds a prefetch slot until [`Batcher::started`]
//! is called for it (when a worker begins to execute it), so at most
//! `prefetch_depth * batch_size` items are taken-but-not-started.

use super::sync::Mutex;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Batching parameters of one handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchPolicy {
    pub(crate) batch_size: usize,
    pub(crate) prefetch_depth: usize,
    pub(crate) max_batch_delay: Option<Duration>,
}

#[derive(Debug)]
struct Stage<T> {
    pending: VecDeque<(T, Option<Instant>)>,
    outstanding: usize,
    /// When set, deadlines are ignored (shutdown is flushing).
    flush: bool,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Batcher<T> {
    policy: BatchPolicy,
    stage: Mutex<Stage<T>>,
}

/// What a push did.
#[derive(Debug)]
pub(crate) enum Pushed<T> {
    /// A batch is ready for the caller to commit and publish.
    Batch(Vec<T>),
    /// The item waits; `true` when it is the first one waiting for a
    /// deadline (workers must learn of the new deadline).
    Waiting(bool),
}

impl<T> Batcher<T> {
    pub(crate) fn new(policy: BatchPolicy) -> Self {
        assert!(policy.batch_size > 0, "batch_size must be at least 1");
        assert!(
            policy.prefetch_depth > 0,
            "prefetch_depth must be at least 1"
        );
        Batcher {
            policy,
            stage: Mutex::new(Stage {
                pending: VecDeque::new(),
                outstanding: 0,
                flush: false,
            }),
        }
    }

    #[cfg(any(test, gilpool_loom))]
    pub(crate) fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Adds an item; hands back a batch when one may be formed now.
    pub(crate) fn push(&self, item: T, now: Option<Instant>) -> Pushed<T> {
        let mut stage = self.stage.lock().unwrap();
        let stamp = self.policy.max_batch_delay.and(now);
        stage.pending.push_back((item, stamp));
        match self.form(&mut stage, now) {
            Some(batch) => Pushed::Batch(batch),
            None => Pushed::Waiting(stage.pending.len() == 1 && stamp.is_some()),
        }
    }

    /// Adds many items at once; returns the batches that may be formed now.
    #[cfg(any(test, gilpool_loom))]
    pub(crate) fn push_many(
        &self,
        items: impl IntoIterator<Item = T>,
        now: Option<Instant>,
    ) -> Vec<Vec<T>> {
        let mut stage = self.stage.lock().unwrap();
        let stamp = self.policy.max_batch_delay.and(now);
        stage.pending.extend(items.into_iter().map(|i| (i, stamp)));
        let mut out = Vec::new();
        while let Some(b) = self.form(&mut stage, now) {
            out.push(b);
        }
        out
    }

    /// A batch taken from here started executing: frees its prefetch slot
    /// and hands back the next batch when one may be formed now.
    pub(crate) fn started(&self, now: Option<Instant>) -> Option<Vec<T>> {
        let mut stage = self.stage.lock().unwrap();
        debug_assert!(stage.outstanding > 0, "started() without a taken batch");
        stage.outstanding -= 1;
        self.form(&mut stage, now)
    }

    /// Forms a batch if the rules allow one now (used when a deadline may
    /// have passed).
    pub(crate) fn poll(&self, now: Option<Instant>) -> Option<Vec<T>> {
        let mut stage = self.stage.lock().unwrap();
        self.form(&mut stage, now)
    }

    /// From now on batches are formed without waiting for deadlines.
    pub(crate) fn flush(&self) -> Vec<Vec<T>> {
        let mut stage = self.stage.lock().unwrap();
        stage.flush = true;
        let mut out = Vec::new();
        while let Some(b) = self.form(&mut stage, None) {
            out.push(b);
        }
        out
    }

    /// Removes every waiting item (cancellation).
    pub(crate) fn drain(&self) -> Vec<T> {
        let mut stage = self.stage.lock().unwrap();
        stage.pending.drain(..).map(|(t, _)| t).collect()
    }

    /// When the oldest waiting item's delay runs out, if a delay applies.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let delay = self.policy.max_batch_delay?;
        let stage = self.stage.lock().unwrap();
        if stage.flush || stage.outstanding >= self.policy.prefetch_depth {
            return None;
        }
        stage
            .pending
            .front()
            .and_then(|(_, t)| t.map(|t| t + delay))
    }

    /// Items waiting and batches outstanding, for metrics and tests.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let stage = self.stage.lock().unwrap();
        (stage.pending.len(), stage.outstanding)
    }

    fn form(&self, stage: &mut Stage<T>, now: Option<Instant>) -> Option<Vec<T>> {
        let p = &self.policy;
        if stage.pending.is_empty() || stage.outstanding >= p.prefetch_depth {
            return None;
        }
        if stage.pending.len() < p.batch_size && !stage.flush {
            if let (Some(delay), Some((_, Some(first)))) =
                (p.max_batch_delay, stage.pending.front())
            {
                match now {
                    Some(now) if now >= *first + delay => {}
                    _ => return None,
                }
            }
        }
        let n = stage.pending.len().min(p.batch_size);
        stage.outstanding += 1;
        Some(stage.pending.drain(..n).map(|(t, _)| t).collect())
    }
}

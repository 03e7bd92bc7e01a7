//! `Batcher`: pushes from two threads racing `started()`. Batches taken but
//! not started never exceed `prefetch_depth`, no batch exceeds
//! `batch_size`, and every item lands in exactly one batch (or, on
//! cancellation, is drained exactly once).

use super::assert_exactly_once;
use crate::sched::batcher::{BatchPolicy, Batcher, Pushed};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

const POLICY: BatchPolicy = BatchPolicy {
    batch_size: 2,
    prefetch_depth: 1,
    max_batch_delay: None,
};

/// The scheduler's side of one handler, as seen by a submitting thread that
/// also runs what it took: `taken` counts batches between "taken from the
/// batcher" and "`started()` called for it" across all threads.
struct Handler {
    batcher: Batcher<usize>,
    taken: AtomicUsize,
}

impl Handler {
    /// Records a batch just handed out by the batcher.
    fn took(&self, batch: Vec<usize>, out: &mut Vec<Vec<usize>>) {
        let now = self.taken.fetch_add(1, Ordering::SeqCst) + 1;
        let depth = self.batcher.policy().prefetch_depth;
        assert!(
            now <= depth,
            "{now} batches taken but not started, prefetch_depth {depth}"
        );
        assert!(!batch.is_empty() && batch.len() <= self.batcher.policy().batch_size);
        assert!(self.batcher.counts().1 <= depth);
        out.push(batch);
    }

    /// Pushes `items`, then starts every batch it was handed (and the ones
    /// `started()` hands back in turn). Returns the batches it ran.
    fn submit_and_run(&self, items: &[usize]) -> Vec<Vec<usize>> {
        let mut held = Vec::new();
        for &item in items {
            if let Pushed::Batch(b) = self.batcher.push(item, None) {
                self.took(b, &mut held);
            }
        }
        let mut ran = Vec::new();
        while let Some(batch) = held.pop() {
            // Not "taken" any more once started() is under way.
            self.taken.fetch_sub(1, Ordering::SeqCst);
            if let Some(next) = self.batcher.started(None) {
                self.took(next, &mut held);
            }
            ran.push(batch);
        }
        ran
    }
}

/// Thread A pushes items 0 and 1, thread B pushes item 2; each starts the
/// batches it was handed after its pushes, so B's push races A's `started()`.
#[test]
fn push_from_two_threads_vs_started() {
    loom::model(|| {
        let handler = Arc::new(Handler {
            batcher: Batcher::new(POLICY),
            taken: AtomicUsize::new(0),
        });
        let b = {
            let handler = handler.clone();
            thread::spawn(move || handler.submit_and_run(&[2]))
        };
        let mut batches = handler.submit_and_run(&[0, 1]);
        batches.extend(b.join().unwrap());
        assert_eq!(handler.batcher.counts(), (0, 0), "an item was stranded");
        assert_exactly_once(batches.into_iter().flatten().collect(), 3);
    });
}

/// Cancellation: `drain()` racing a submitter (who starts what it takes):
/// each item ends in exactly one batch or in the drained set.
#[test]
fn push_vs_drain() {
    loom::model(|| {
        let handler = Arc::new(Handler {
            batcher: Batcher::new(BatchPolicy {
                batch_size: 1,
                ..POLICY
            }),
            taken: AtomicUsize::new(0),
        });
        let submitter = {
            let handler = handler.clone();
            thread::spawn(move || handler.submit_and_run(&[0, 1]))
        };
        let mut seen = handler.batcher.drain();
        seen.extend(submitter.join().unwrap().into_iter().flatten());
        // What the submitter pushed after the drain, if nothing took it.
        seen.extend(handler.batcher.drain());
        assert_eq!(handler.batcher.counts().1, 0);
        assert_exactly_once(seen, 2);
    });
}

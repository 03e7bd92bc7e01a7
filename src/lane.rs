//! Lanes: a set of workers sharing one scheduler pool, all in one kind of
//! interpreter. The sub lane has one own-GIL subinterpreter per worker; the
//! main lane's workers share the main interpreter (and its GIL).

use crate::handler::HandlerCore;
use crate::sched::pool::Pool;
use crate::task::Task;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Which interpreters a lane's workers run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneKind {
    /// One own-GIL subinterpreter per worker.
    Sub,
    /// Thread states in the main interpreter, sharing its GIL.
    Main,
}

/// What travels through a lane's queues.
pub(crate) enum Job {
    /// Committed tasks of one handler.
    Batch(Batch),
    /// Import and check a handler's function; reply with the outcome.
    Resolve {
        handler: Arc<HandlerCore>,
        reply: std::sync::mpsc::Sender<crate::Result<()>>,
    },
}

/// Up to `batch_size` committed tasks of one handler, run in one attachment.
pub(crate) struct Batch {
    pub(crate) handler: Arc<HandlerCore>,
    pub(crate) tasks: Vec<Box<dyn Task>>,
    /// Whether the batch holds one of the handler's prefetch slots (it came
    /// through the batcher), to be freed when it starts.
    pub(crate) prefetched: bool,
}

/// The shared state of one lane.
pub(crate) struct Lane {
    pub(crate) kind: LaneKind,
    pub(crate) pool: Arc<Pool<Job>>,
    /// Handlers with a `max_batch_delay`, whose deadlines idle workers keep.
    pub(crate) delayed: Mutex<Vec<Arc<HandlerCore>>>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("kind", &self.kind)
            .field("workers", &self.pool.workers())
            .finish()
    }
}

impl Lane {
    /// Commits `tasks` (no GIL: the caller is never attached) and publishes
    /// them as a batch. Tasks whose commit fails complete with that error;
    /// if none is left, the prefetch slot passes to the next batch.
    pub(crate) fn publish(handler: &Arc<HandlerCore>, mut tasks: Vec<Box<dyn Task>>) {
        debug_assert!(
            !gilpool_ffi::is_attached(),
            "commit must run with no GIL held"
        );
        loop {
            tasks.retain_mut(|t| t.commit());
            if !tasks.is_empty() {
                handler.lane.pool.inject(Job::Batch(Batch {
                    handler: handler.clone(),
                    tasks,
                    prefetched: true,
                }));
                return;
            }
            match handler.batcher.started(handler.clock()) {
                Some(next) => tasks = next,
                None => return,
            }
        }
    }

    /// Forms and publishes batches whose delay ran out; returns whether any
    /// was published and the earliest remaining deadline.
    pub(crate) fn flush_due(&self) -> (bool, Option<Instant>) {
        // Runs on every idle-spin round: no allocation unless a handler
        // actually batches with a delay.
        let handlers: Vec<Arc<HandlerCore>> = {
            let delayed = self.delayed.lock().unwrap();
            if delayed.is_empty() {
                return (false, None);
            }
            delayed.clone()
        };
        let now = Instant::now();
        let mut published = false;
        let mut earliest: Option<Instant> = None;
        for h in handlers {
            if let Some(batch) = h.batcher.poll(Some(now)) {
                Lane::publish(&h, batch);
                published = true;
            } else if let Some(d) = h.batcher.deadline() {
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
        }
        (published, earliest)
    }
}

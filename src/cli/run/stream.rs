//! The run's loop: submits each input line's task and writes the outcomes
//! in input order, keeping at most a window of futures.
//!
//! The loop runs on the command's main thread. It takes parsed tasks from
//! the reader ([`Event::Tasks`]), submits them and keeps their futures in a
//! `VecDeque` in input order; when the window is full, the oldest is waited
//! for and its line written, so memory is bounded whatever the input's
//! length. When no input is waiting, it writes every finished line at the
//! front, flushes the output and registers a waker on the oldest unfinished
//! future, then blocks on the channel: the next input, that future's
//! completion ([`Event::Wake`]) or a signal wakes it. The output is also
//! flushed before any wait for a task longer than [`FLUSH_AFTER`], so a
//! slow task or input never holds back lines that are done.

use super::input::Event;
use super::output::{encode_result, error_line, task_error_line, Encoded};
use super::signals::{Outcome, Stopper};
use gilpool::{Args, Handler, TaskFuture};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::pin::Pin;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// How long the loop waits for the oldest task before it flushes the lines
/// written so far.
const FLUSH_AFTER: Duration = Duration::from_millis(1);

/// Why a run stopped before the end of its input.
#[derive(Debug)]
pub(super) enum Stop {
    /// The reader of the output went away (`gilpool run … | head`): stop
    /// quietly, like a command killed by `SIGPIPE`, without an error.
    OutputClosed,
    /// SIGINT or SIGTERM: the finished lines up to the first unfinished one
    /// are written.
    Signal,
    /// An input line that is not a task, or a read error; every line
    /// before it was run and written.
    Input(String),
    /// Writing failed, or the engine refused a task; queued tasks are
    /// abandoned.
    Error(String),
}

/// A failed write to the output: `OutputClosed` for a closed pipe.
fn write_failed(e: std::io::Error) -> Stop {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Stop::OutputClosed
    } else {
        Stop::Error(format!("cannot write output: {e}"))
    }
}

/// Wakes the loop when the future it registered on completes.
struct ChannelWaker(SyncSender<Event>);

impl Wake for ChannelWaker {
    fn wake(self: Arc<Self>) {
        // A full channel means the loop has input to take: it is not
        // blocked, and looks at its futures again soon.
        let _ = self.0.try_send(Event::Wake);
    }
}

/// The running part of `gilpool run`: the window of futures in input order
/// and the output they are written to.
pub(super) struct Stream {
    /// The bound function.
    handler: Handler,
    /// The most futures kept at once.
    window: usize,
    /// Submitted tasks in input order, oldest first.
    pending: VecDeque<TaskFuture<Encoded>>,
    /// Where result lines go.
    output: BufWriter<Box<dyn Write>>,
    /// Progress on stderr (hidden unless a terminal or forced).
    bar: indicatif::ProgressBar,
    /// Signals and the counts of written lines.
    stopper: Arc<Stopper>,
    /// Registered on the oldest unfinished future while the loop blocks.
    waker: Waker,
}

impl Stream {
    /// A loop over `handler` writing to `output`; `wake` is the sender of
    /// the loop's own channel.
    pub(super) fn new(
        handler: Handler,
        window: usize,
        output: Box<dyn Write>,
        bar: indicatif::ProgressBar,
        stopper: Arc<Stopper>,
        wake: SyncSender<Event>,
    ) -> Stream {
        Stream {
            handler,
            window,
            pending: VecDeque::with_capacity(window),
            output: BufWriter::with_capacity(1 << 16, output),
            bar,
            stopper,
            waker: Waker::from(Arc::new(ChannelWaker(wake))),
        }
    }

    /// The progress bar, to finish or abandon it.
    pub(super) fn bar(&self) -> &indicatif::ProgressBar {
        &self.bar
    }

    /// Runs every task from `events` and writes their lines. On an invalid
    /// line, finishes and writes the lines before it; on a signal, writes
    /// the finished lines up to the first unfinished one. The output is
    /// flushed in every case but a failed write.
    pub(super) fn run(&mut self, events: &Receiver<Event>) -> Result<(), Stop> {
        let read = self.pump(events);
        let drained = match read {
            Ok(()) | Err(Stop::Input(_)) | Err(Stop::Signal) => self.drain(),
            Err(_) => Ok(()),
        };
        let flushed = self.output.flush().map_err(write_failed);
        if self.stopper.signalled() {
            return Err(Stop::Signal);
        }
        read?;
        drained?;
        flushed
    }

    /// Submits the input's tasks until it ends, writing lines as the window
    /// fills and whenever the input is idle.
    fn pump(&mut self, events: &Receiver<Event>) -> Result<(), Stop> {
        loop {
            if self.stopper.signalled() {
                return Err(Stop::Signal);
            }
            let event = match events.try_recv() {
                Ok(event) => event,
                Err(TryRecvError::Empty) => {
                    self.idle()?;
                    events.recv().map_err(|_| reader_gone())?
                }
                Err(TryRecvError::Disconnected) => return Err(reader_gone()),
            };
            match event {
                Event::Tasks(tasks) => {
                    for args in tasks {
                        if self.stopper.signalled() {
                            return Err(Stop::Signal);
                        }
                        self.submit(args)?;
                    }
                }
                Event::End => return Ok(()),
                Event::Stop(message) => return Err(Stop::Input(message)),
                Event::Wake => {}
            }
        }
    }

    /// Submits one task, first writing the oldest line if the window is full.
    fn submit(&mut self, args: Args) -> Result<(), Stop> {
        if self.pending.len() >= self.window {
            self.write_next()?;
        }
        match self.handler.submit_with(move || Ok(args), encode_result) {
            Ok(future) => {
                self.pending.push_back(future);
                Ok(())
            }
            // The signal's shutdown closed the engine under this submit.
            Err(_) if self.stopper.signalled() => Err(Stop::Signal),
            Err(e) => Err(Stop::Error(e.to_string())),
        }
    }

    /// With no input waiting: writes the finished lines at the front,
    /// flushes, and registers the waker on the oldest unfinished future.
    fn idle(&mut self) -> Result<(), Stop> {
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        while let Some(front) = self.pending.front_mut() {
            match Pin::new(front).poll(&mut cx) {
                Poll::Ready(outcome) => {
                    self.pending.pop_front();
                    self.write(outcome)?;
                }
                Poll::Pending => break,
            }
        }
        self.output.flush().map_err(write_failed)
    }

    /// Writes every remaining line in order.
    fn drain(&mut self) -> Result<(), Stop> {
        while !self.pending.is_empty() {
            self.write_next()?;
        }
        Ok(())
    }

    /// Waits for the oldest task and writes its line.
    fn write_next(&mut self) -> Result<(), Stop> {
        let Some(mut future) = self.pending.pop_front() else {
            return Ok(());
        };
        let outcome = match future.wait_timeout(FLUSH_AFTER) {
            Some(outcome) => outcome,
            None => {
                self.output.flush().map_err(write_failed)?;
                future.wait()
            }
        };
        self.write(outcome)
    }

    /// Writes one task's line; after a signal, a task the shutdown stopped
    /// ends the output instead.
    fn write(&mut self, outcome: gilpool::Result<Encoded>) -> Result<(), Stop> {
        let (line, kind) = match outcome {
            Ok(Ok(line)) => (line, Outcome::Ok),
            Ok(Err(reason)) => (
                error_line(
                    "TypeError",
                    &format!("result is not JSON serializable: {reason}"),
                    None,
                ),
                Outcome::Failed,
            ),
            Err(e) if self.stopper.signalled() && (e.is_cancelled() || e.is_shutdown()) => {
                return Err(Stop::Signal);
            }
            Err(e) if e.is_timeout() => (task_error_line(&e), Outcome::TimedOut),
            Err(e) => (task_error_line(&e), Outcome::Failed),
        };
        self.output
            .write_all(line.as_bytes())
            .map_err(write_failed)?;
        self.stopper.record(kind);
        self.bar.inc(1);
        Ok(())
    }
}

/// The reader thread ended without saying why (it cannot: it always sends
/// its last event).
#[cold]
fn reader_gone() -> Stop {
    Stop::Error("the input thread stopped unexpectedly".into())
}

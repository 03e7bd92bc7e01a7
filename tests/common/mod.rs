//! Helpers shared by the integration tests.
#![allow(dead_code)]

use gilpool::{Engine, EngineBuilder, Mode};

/// The bundled Python modules.
pub(crate) const PYTHON_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");

/// A builder with the bundled modules on `sys.path`, 2 workers, no pinning
/// (tests share the machine).
pub(crate) fn builder(mode: Mode) -> EngineBuilder {
    Engine::builder()
        .mode(mode)
        .workers(2)
        .pin(false)
        .sys_path(PYTHON_DIR)
}

/// Every mode this build can run as asked.
pub(crate) fn modes() -> Vec<Mode> {
    let mut m = vec![Mode::SingleGil];
    if Mode::SubInterpreters.is_supported() {
        m.push(Mode::SubInterpreters);
    }
    m
}

/// Polls a future to completion on this thread (a minimal executor).
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Waits for `fut`, failing the test if it does not resolve within `within`.
pub(crate) fn resolve<R>(
    mut fut: gilpool::TaskFuture<R>,
    within: std::time::Duration,
) -> gilpool::Result<R> {
    fut.wait_timeout(within)
        .unwrap_or_else(|| panic!("a future did not resolve within {within:?}"))
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use gilpool::{Engine, EngineBuilder, Mode};

mod tempdir;
#[allow(unused_imports)]
pub(crate) use tempdir::TempDir;

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

/// The `site-packages` of a virtualenv holding `packages`, for the Python
/// this build embeds: made once under the target directory and reused.
/// `Err` says why it could not be made (no network to PyPI, say): callers
/// skip then, printing the reason.
pub(crate) fn venv_site(packages: &[&str]) -> Result<std::path::PathBuf, String> {
    use std::process::Command;
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let python = gilpool_ffi::BUILD_EXECUTABLE;
    let version = Command::new(python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("venvs");
    let dir = root.join(format!("py{version}-{}", packages.join("-")));
    let site = dir
        .join("lib")
        .join(format!("python{version}"))
        .join("site-packages");
    if dir.join("ready").exists() {
        return Ok(site);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ))
        }
    };
    run(Command::new(python).args(["-m", "venv"]).arg(&dir))?;
    run(Command::new(dir.join("bin/python"))
        .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
        .args(packages))
    .map_err(|e| format!("pip could not install {packages:?} (no registry?): {e}"))?;
    std::fs::write(dir.join("ready"), b"").map_err(|e| e.to_string())?;
    Ok(site)
}

/// A child run of this test binary still running after this long is hung
/// (and killed): far beyond anything a passing case needs.
pub(crate) const HANG_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// What a child run of this test binary did ([`run_self`]).
pub(crate) struct ChildRun {
    /// `None`: still running after [`HANG_LIMIT`], and killed.
    pub(crate) status: Option<std::process::ExitStatus>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl ChildRun {
    /// Panics unless the child exited successfully, naming `what` and
    /// showing its output.
    pub(crate) fn assert_success(&self, what: &str) {
        let report = format!(
            "{what}:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        match self.status {
            None => panic!("hung: killed after {HANG_LIMIT:?}; {report}"),
            Some(s) => assert!(s.success(), "exited with {s:?}; {report}"),
        }
        // A case name that matched no test would run nothing and pass.
        assert!(
            self.stdout.contains("running 1 test"),
            "the child ran no test; {report}"
        );
    }
}

/// Re-runs this test binary as a child process running only the test
/// `case` (`--exact`, output not captured, one test thread), with the
/// environment variable `env` set (the child's cue to run the case's
/// body rather than spawn). Both pipes are drained while the child runs —
/// a child blocked on a full pipe would look hung — and a child still
/// running after [`HANG_LIMIT`] is killed.
pub(crate) fn run_self(case: &str, env: Option<(&str, &str)>) -> ChildRun {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", case, "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((key, value)) = env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().unwrap();
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > HANG_LIMIT {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.wait();
    ChildRun {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

//! `SharedBuffer` and `BufferVec` through real interpreters, in every mode:
//! Python reads the view with no copy (the exporter's address is the Rust
//! pointer), writes are refused, the memory outlives every view and is
//! released with the last one, results with the buffer protocol convert
//! back (checked for format and contiguity), and numpy in the main
//! interpreter copies nothing. numpy comes from PyPI into a virtualenv
//! under the target directory; without PyPI those tests print why they
//! skip.

mod common;

/// Prints a line straight to stderr, past the test harness's capture, so a
/// skip shows in every run.
macro_rules! skip {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

use common::{builder, modes};
use gilpool::{BufferVec, Engine, FromPython, Mode, SharedBuffer, Value};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/buffers");

fn engine(mode: Mode, workers: usize) -> Engine {
    builder(mode)
        .workers(workers)
        .sys_path(FIXTURES)
        .build()
        .unwrap()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    let Value::Dict(pairs) = v else {
        panic!("expected a dict, got {v:?}")
    };
    pairs
        .iter()
        .find(|(k, _)| *k == Value::Str(key.into()))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key:?} in {v:?}"))
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("expected an int, got {other:?}"),
    }
}

#[test]
fn python_reads_the_rust_memory_in_every_mode() {
    for mode in modes() {
        let engine = engine(mode, 2);
        let describe = engine.load("buffer_fixtures", "describe").unwrap();
        let data = vec![1.0f64, -2.0, 3.5, 4.25];
        let buf = SharedBuffer::from_vec(data.clone());
        let d: Value = describe.invoke((buf.clone(),)).unwrap();
        assert_eq!(
            *field(&d, "type"),
            Value::Str("memoryview".into()),
            "{mode}"
        );
        assert_eq!(*field(&d, "format"), Value::Str("d".into()), "{mode}");
        assert_eq!(int(field(&d, "itemsize")), 8);
        assert_eq!(*field(&d, "shape"), Value::List(vec![Value::Int(4)]));
        assert_eq!(*field(&d, "strides"), Value::List(vec![Value::Int(8)]));
        assert_eq!(*field(&d, "readonly"), Value::Bool(true));
        assert_eq!(*field(&d, "contiguous"), Value::Bool(true));
        assert_eq!(int(field(&d, "nbytes")), 32);
        // `mv[:4]` is four items: here every byte.
        assert_eq!(*field(&d, "head"), Value::Bytes(buf.as_bytes().to_vec()));
        assert_eq!(
            *field(&d, "items"),
            Value::List(data.iter().map(|&f| Value::Float(f)).collect())
        );
        assert_eq!(
            *field(&d, "exporter"),
            Value::Str("SharedBufferExporter".into())
        );
        // Zero copy: the view's memory is the Rust allocation.
        assert_eq!(
            int(field(&d, "address")) as usize,
            buf.as_ptr() as usize,
            "{mode}"
        );
        assert_eq!(int(field(&d, "exporter_nbytes")), 32);

        // Two dimensions of bytes, and a slice of rows: still the same memory.
        let grid = SharedBuffer::from_bytes((0u8..12).collect())
            .with_shape([3, 4])
            .unwrap();
        let rows = grid.slice(1..);
        let d: Value = describe.invoke((rows.clone(),)).unwrap();
        assert_eq!(*field(&d, "format"), Value::Str("B".into()));
        assert_eq!(
            *field(&d, "shape"),
            Value::List(vec![Value::Int(2), Value::Int(4)])
        );
        assert_eq!(
            *field(&d, "strides"),
            Value::List(vec![Value::Int(4), Value::Int(1)])
        );
        assert_eq!(*field(&d, "head"), Value::Bytes(vec![4, 5, 6, 7]));
        assert_eq!(
            int(field(&d, "address")) as usize,
            grid.as_ptr() as usize + 4
        );

        // A commit closure makes the buffer with no GIL held.
        let fut = describe
            .submit_with(
                || Ok((SharedBuffer::from_vec(vec![7i32, 8, 9]),)),
                |obj| Value::from_python(&obj),
            )
            .unwrap();
        let d = fut.wait().unwrap();
        assert_eq!(*field(&d, "format"), Value::Str("i".into()));
        assert_eq!(
            *field(&d, "items"),
            Value::List(vec![Value::Int(7), Value::Int(8), Value::Int(9)])
        );
        // Python holds nothing once the call is over.
        assert_eq!(buf.handles(), 1, "{mode}");
        engine.shutdown();
    }
}

#[test]
fn writes_through_a_view_are_refused() {
    for mode in modes() {
        let engine = engine(mode, 1);
        let refuse = engine.load("buffer_fixtures", "writes_refused").unwrap();
        for buf in [
            SharedBuffer::from_bytes(vec![1, 2, 3]),
            SharedBuffer::from_vec(vec![0.5f32; 6])
                .with_shape([2, 3])
                .unwrap(),
        ] {
            let before = buf.as_bytes().to_vec();
            let out: Value = refuse.invoke((buf.clone(),)).unwrap();
            assert_eq!(
                *field(&out, "setitem"),
                Value::Str("TypeError".into()),
                "{mode}"
            );
            let Value::Str(via_view) = field(&out, "readinto_view") else {
                panic!("{out:?}")
            };
            assert!(
                via_view == "TypeError" || via_view == "BufferError",
                "{out:?}"
            );
            let Value::Str(direct) = field(&out, "readv_exporter") else {
                panic!("{out:?}")
            };
            assert!(
                direct.starts_with("BufferError: gilpool: a SharedBuffer is read-only"),
                "{mode}: {direct}"
            );
            assert_eq!(*field(&out, "instantiate"), Value::Str("TypeError".into()));
            assert_eq!(buf.as_bytes(), &before[..], "the memory is unchanged");
        }
        engine.shutdown();
    }
}

/// An owner that counts how often it was dropped.
struct Counted {
    bytes: Vec<u8>,
    drops: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn counted(bytes: &[u8]) -> (SharedBuffer, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let buf = SharedBuffer::from_owner(Counted {
        bytes: bytes.to_vec(),
        drops: drops.clone(),
    });
    (buf, drops)
}

#[test]
fn the_memory_outlives_every_view_and_goes_with_the_last() {
    for mode in modes() {
        // One worker: every task runs in the same interpreter.
        let engine = engine(mode, 1);
        let load = |f: &str| engine.load("buffer_fixtures", f).unwrap();
        let (keep, kept, clear) = (load("keep"), load("kept"), load("clear"));
        let (buf, drops) = counted(b"kept past its task");
        let addr = buf.as_ptr() as usize;
        let got: u64 = keep.invoke((buf,)).unwrap();
        assert_eq!(got as usize, addr, "{mode}");
        // Every Rust handle is gone; the module global still holds the view.
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "{mode}: freed under a live view"
        );
        let (again, content): (u64, Value) = kept.invoke(()).unwrap();
        assert_eq!(again as usize, addr);
        assert_eq!(content, Value::Bytes(b"kept past its task".to_vec()));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert!(clear.invoke::<_, bool>(()).unwrap());
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "{mode}: released with the last view"
        );
        assert_eq!(kept.invoke::<_, Value>(()).unwrap(), Value::None);
        engine.shutdown();
    }
}

#[test]
fn ending_a_subinterpreter_releases_the_views_it_kept() {
    if !Mode::SubInterpreters.is_supported() {
        skip!("SKIP: this build has no own-GIL subinterpreters (Python < 3.12)");
        return;
    }
    let engine = engine(Mode::SubInterpreters, 1);
    let keep = engine.load("buffer_fixtures", "keep").unwrap();
    let (buf, drops) = counted(&[9; 100]);
    let _: u64 = keep.invoke((buf,)).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    engine.shutdown();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "Py_EndInterpreter freed the kept view and with it the memory"
    );
}

#[test]
fn every_interpreter_has_its_own_exporter_type() {
    if !Mode::SubInterpreters.is_supported() {
        skip!("SKIP: this build has no own-GIL subinterpreters (Python < 3.12)");
        return;
    }
    let engine = engine(Mode::SubInterpreters, 2);
    let h = engine.load("buffer_fixtures", "describe").unwrap();
    // Enough calls that both interpreters make their type; each works.
    let results: Vec<Value> = h
        .map((0..64u8).map(|i| (SharedBuffer::from_bytes(vec![i; 8]),)))
        .collect::<gilpool::Result<_>>()
        .unwrap();
    for (i, d) in results.iter().enumerate() {
        assert_eq!(*field(d, "head"), Value::Bytes(vec![i as u8; 4]));
    }
    engine.shutdown();
}

#[test]
fn buffer_results_convert_with_one_copy_and_are_checked() {
    for mode in modes() {
        let engine = engine(mode, 2);
        let make = engine.load("buffer_fixtures", "make").unwrap();
        let echo = engine.load("buffer_fixtures", "echo").unwrap();

        let b: SharedBuffer = make.invoke(("bytes",)).unwrap();
        assert_eq!(
            (b.format(), b.shape(), b.as_bytes()),
            ("B", &[4][..], &[1, 2, 3, 4][..])
        );
        let b: SharedBuffer = make.invoke(("bytearray",)).unwrap();
        assert_eq!(b.as_bytes(), &[5, 6, 7]);
        let b: SharedBuffer = make.invoke(("memoryview2d",)).unwrap();
        assert_eq!(b.shape(), &[3, 4]);
        assert_eq!(b.slice(2..).as_bytes(), &[8, 9, 10, 11]);
        let d: SharedBuffer = make.invoke(("array_d",)).unwrap();
        assert_eq!(d.format(), "d");
        assert_eq!(d.to_vec::<f64>().unwrap(), [1.0, 2.5, -3.0]);
        assert_eq!(d.as_slice::<f64>().unwrap(), &[1.0, 2.5, -3.0]);
        let BufferVec(q) = make.invoke::<_, BufferVec<i64>>(("array_q",)).unwrap();
        assert_eq!(q, [1, -2, 3]);

        // Wrong element type: the error names the format found and the one wanted.
        let e = make.invoke::<_, BufferVec<f64>>(("array_q",)).unwrap_err();
        assert!(e.is_conversion(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("\"q\"") && msg.contains("f64") && msg.contains("\"d\""),
            "{msg}"
        );
        let e = d.to_vec::<i32>().unwrap_err();
        assert!(e.is_conversion() && e.to_string().contains("\"d\""), "{e}");
        // Not C-contiguous, and not a buffer at all.
        let e = make.invoke::<_, SharedBuffer>(("strided",)).unwrap_err();
        assert!(
            e.is_conversion() && e.to_string().contains("not C-contiguous"),
            "{e}"
        );
        let e = make.invoke::<_, SharedBuffer>(("str",)).unwrap_err();
        assert!(
            e.is_conversion() && e.to_string().contains("buffer protocol"),
            "{e}"
        );
        assert!(e.to_string().contains("str"), "{e}");

        // A view passed in and returned comes back as a copy with its layout.
        let grid = SharedBuffer::from_vec((0..6).map(f64::from).collect())
            .with_shape([2, 3])
            .unwrap();
        let back: SharedBuffer = echo.invoke((grid.clone(),)).unwrap();
        assert_eq!((back.format(), back.shape()), ("d", &[2, 3][..]));
        assert_eq!(back.as_bytes(), grid.as_bytes());
        assert_ne!(
            back.as_ptr(),
            grid.as_ptr(),
            "a result is a copy in Rust memory"
        );
        let BufferVec(v) = echo
            .invoke::<_, BufferVec<u16>>((BufferVec(vec![1u16, 2, 65535]),))
            .unwrap();
        assert_eq!(v, [1, 2, 65535]);
        engine.shutdown();
    }
}

/// `site-packages` of a virtualenv with numpy (made on first use under the
/// target directory), or why there is none.
fn numpy_site_packages(python: &str) -> &'static Result<String, String> {
    static SITE: OnceLock<Result<String, String>> = OnceLock::new();
    SITE.get_or_init(|| {
        let run = |cmd: &mut Command| -> Result<String, String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = err.lines().rev().take(3).collect();
                Err(format!("{cmd:?} failed: {}", tail.join(" / ")))
            }
        };
        let version =
            run(Command::new(python)
                .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]))?;
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("numpy-venv-{version}"));
        let vpy = venv.join("bin/python");
        if run(Command::new(&vpy).args(["-c", "import numpy"])).is_err() {
            run(Command::new(python).arg("-m").arg("venv").arg(&venv))?;
            run(Command::new(&vpy).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--timeout",
                "20",
                "--retries",
                "1",
                "numpy",
            ]))
            .map_err(|e| format!("cannot install numpy from PyPI: {e}"))?;
        }
        run(Command::new(&vpy).args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ]))
    })
}

/// A SingleGil engine whose main interpreter can import numpy, or `None`
/// after printing why not.
fn numpy_engine(test: &str) -> Option<Engine> {
    let engine = engine(Mode::SingleGil, 2);
    match numpy_site_packages(engine.python_executable()) {
        Ok(site) => {
            let add = engine.load("buffer_fixtures", "add_path").unwrap();
            add.invoke::<_, ()>((site.clone(),)).unwrap();
            Some(engine)
        }
        Err(why) => {
            skip!("SKIP {test}: numpy is not available: {why}");
            None
        }
    }
}

#[test]
fn numpy_in_the_main_interpreter_copies_nothing() {
    let Some(engine) = numpy_engine("numpy_in_the_main_interpreter_copies_nothing") else {
        return;
    };
    let check = engine.load("buffer_fixtures", "numpy_check").unwrap();
    let buf = SharedBuffer::from_vec((0..1000).map(f64::from).collect());
    let (from_buffer, as_array, sum, owns, writeable): (u64, u64, f64, bool, bool) =
        check.invoke((buf.clone(),)).unwrap();
    assert_eq!(
        from_buffer as usize,
        buf.as_ptr() as usize,
        "numpy.frombuffer copied"
    );
    assert_eq!(
        as_array as usize,
        buf.as_ptr() as usize,
        "numpy.asarray copied"
    );
    assert_eq!(sum, 499_500.0);
    assert!(!owns && !writeable, "numpy sees borrowed, read-only memory");
    engine.shutdown();
}

#[test]
fn numpy_results_convert_and_are_checked() {
    let Some(engine) = numpy_engine("numpy_results_convert_and_are_checked") else {
        return;
    };
    let make = engine.load("buffer_fixtures", "numpy_array").unwrap();
    let a: SharedBuffer = make.invoke(("f64",)).unwrap();
    assert_eq!((a.format(), a.shape()), ("d", &[2, 3][..]));
    assert_eq!(a.to_vec::<f64>().unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let BufferVec(i) = make.invoke::<_, BufferVec<i64>>(("i64",)).unwrap();
    assert_eq!(i, [0, 1, 2, 3]);
    let s: SharedBuffer = make.invoke(("scalar",)).unwrap();
    assert_eq!(
        (s.shape(), s.to_vec::<f64>().unwrap()),
        (&[1][..], vec![7.5])
    );
    let e = make.invoke::<_, SharedBuffer>(("transposed",)).unwrap_err();
    assert!(
        e.is_conversion() && e.to_string().contains("not C-contiguous"),
        "{e}"
    );
    let e = make.invoke::<_, BufferVec<f32>>(("f64",)).unwrap_err();
    assert!(e.is_conversion() && e.to_string().contains("f32"), "{e}");
    engine.shutdown();
}

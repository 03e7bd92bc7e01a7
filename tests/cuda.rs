//! Feature `cuda`: without a driver every entry point fails with
//! `is_cuda_unavailable` (never a panic), and the GPU tests print that
//! they skip and why. With a GPU: uploads from commit closures reach
//! Python as `__cuda_array_interface__`/`__dlpack__` objects in every
//! mode (no GPU framework needed to read the protocols), and CUDA arrays
//! come back to the device or the host; CuPy and PyTorch, where this
//! Python has them, read a staged buffer in place on the main interpreter.
#![cfg(feature = "cuda")]

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
use gilpool::{CudaStage, CudaVec, DeviceBuffer, FromPython, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/buffers");

/// A stage on device 0, or `None` after printing why the test skips.
fn stage(test: &str) -> Option<CudaStage> {
    match CudaStage::new(0) {
        Ok(s) => Some(s),
        Err(e) => {
            assert!(e.is_cuda_unavailable(), "{e}");
            skip!("SKIP {test}: {e}");
            None
        }
    }
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

#[test]
fn no_driver_is_an_error_not_a_panic() {
    match gilpool::cuda_device_count() {
        Ok(n) => {
            skip!("SKIP no_driver_is_an_error_not_a_panic: this machine has {n} CUDA device(s)")
        }
        Err(e) => {
            assert!(e.is_cuda_unavailable(), "{e}");
            assert!(e.to_string().contains("CUDA"), "{e}");
            let e = CudaStage::new(0).unwrap_err();
            assert!(e.is_cuda_unavailable() && !e.is_cuda(), "{e}");
            skip!("no CUDA here, as expected: {e}");
        }
    }
    // A device that does not exist is unavailable too, with or without a GPU.
    let e = CudaStage::new(1 << 20).unwrap_err();
    assert!(e.is_cuda_unavailable(), "{e}");
}

#[test]
fn uploads_reach_python_as_cuda_arrays_in_every_mode() {
    let Some(stage) = stage("uploads_reach_python_as_cuda_arrays_in_every_mode") else {
        return;
    };
    for mode in modes() {
        let engine = builder(mode).sys_path(FIXTURES).build().unwrap();
        let iface = engine.load("cuda_fixtures", "interface").unwrap();
        let echo = engine.load("cuda_fixtures", "echo").unwrap();
        let data: Vec<f32> = (0..4096).map(|i| i as f32 * 0.5).collect();
        let s = stage.clone();
        let sent = data.clone();
        let d = iface
            .submit_with(
                move || Ok((s.upload(&sent)?,)),
                |obj| Value::from_python(&obj),
            )
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(
            *field(&d, "type"),
            Value::Str("DeviceArray".into()),
            "{mode}"
        );
        assert_eq!(*field(&d, "typestr"), Value::Str("<f4".into()));
        assert_eq!(*field(&d, "shape"), Value::List(vec![Value::Int(4096)]));
        assert_eq!(*field(&d, "version"), Value::Int(3));
        assert_eq!(*field(&d, "strides"), Value::None);
        assert_eq!(*field(&d, "readonly"), Value::Bool(false));
        assert_eq!(
            *field(&d, "stream"),
            Value::Int(stage.stream_handle() as i64)
        );
        assert_eq!(
            *field(&d, "dlpack_device"),
            Value::List(vec![Value::Int(2), Value::Int(0)])
        );
        assert_eq!(*field(&d, "capsule"), Value::Str("PyCapsule".into()));

        // Back to the device (a copy) and to the host.
        let buf = stage.upload(&data).unwrap();
        let back: DeviceBuffer = echo.invoke((buf.clone(),)).unwrap();
        assert_ne!(back.device_ptr(), buf.device_ptr());
        assert_eq!(back.to_vec::<f32>().unwrap(), data);
        let CudaVec(host) = echo.invoke::<_, CudaVec<f32>>((buf.clone(),)).unwrap();
        assert_eq!(host, data);
        let e = echo.invoke::<_, CudaVec<i32>>((buf,)).unwrap_err();
        assert!(e.is_conversion() && e.to_string().contains("<f4"), "{e}");
        engine.shutdown();
    }
}

#[test]
fn shared_buffers_upload_with_their_shape() {
    let Some(stage) = stage("shared_buffers_upload_with_their_shape") else {
        return;
    };
    let grid = gilpool::SharedBuffer::from_vec((0..12i64).collect())
        .with_shape([3, 4])
        .unwrap();
    let dev = stage.upload_buffer(&grid).unwrap();
    assert_eq!((dev.typestr(), dev.shape()), ("<i8", &[3, 4][..]));
    assert_eq!(dev.to_vec::<i64>().unwrap(), (0..12).collect::<Vec<_>>());
    let odd = gilpool::SharedBuffer::from_bytes(vec![0; 8])
        .with_layout("ii", 8, None)
        .unwrap();
    assert!(stage.upload_buffer(&odd).unwrap_err().is_config());
}

#[test]
fn staged_buffers_are_read_in_place_by_cupy_and_torch() {
    let Some(stage) = stage("staged_buffers_are_read_in_place_by_cupy_and_torch") else {
        return;
    };
    // GPU frameworks refuse own-GIL subinterpreters: the main interpreter.
    let engine = builder(gilpool::Mode::SingleGil)
        .sys_path(FIXTURES)
        .build()
        .unwrap();
    let frameworks: Vec<String> = engine
        .load("cuda_frameworks", "available")
        .unwrap()
        .invoke(())
        .unwrap();
    if frameworks.is_empty() {
        skip!("SKIP staged_buffers_are_read_in_place_by_cupy_and_torch: this Python has neither CuPy nor a CUDA build of PyTorch");
        return;
    }
    let read = engine.load("cuda_frameworks", "read").unwrap();
    let data: Vec<f32> = (0..4096).map(|i| (i % 7) as f32).collect();
    let expected: f64 = data.iter().map(|&v| f64::from(v)).sum();
    type Views = Vec<(f64, u64, Vec<usize>)>;
    for name in frameworks {
        // Uploaded here, read in place: the framework sees gilpool's pointer
        // and shape through both protocols.
        let buf = stage.upload(&data).unwrap().with_shape([64, 64]).unwrap();
        let views: Views = read.invoke((name.clone(), buf.clone())).unwrap();
        assert_eq!(views.len(), 2, "{name}");
        for (i, (sum, ptr, shape)) in views.into_iter().enumerate() {
            let how = ["__cuda_array_interface__", "__dlpack__"][i];
            assert_eq!(sum, expected, "{name} through {how}");
            assert_eq!(ptr, buf.device_ptr(), "{name} through {how} copied");
            assert_eq!(shape, [64, 64], "{name} through {how}");
        }
        // Staged by a commit closure, ahead of the run, with no GIL.
        let s = stage.clone();
        let sent = data.clone();
        let who = name.clone();
        let sums = read
            .submit_with(
                move || Ok((who, s.upload(&sent)?)),
                |obj| Views::from_python(&obj),
            )
            .unwrap()
            .wait()
            .unwrap();
        assert!(sums.iter().all(|v| v.0 == expected), "{name}: {sums:?}");
    }
    engine.shutdown();
}

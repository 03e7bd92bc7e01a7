//! What staging data on the GPU costs (feature `cuda`, device 0), in one run:
//! 1. `CudaStage::upload` + `synchronize` (a copy into a pooled pinned buffer,
//!    new device memory, an async copy on the stage's stream), 64 KiB to
//!    256 MiB of f32s, beside raw `cuMemcpyHtoD` from pinned and pageable
//!    memory into preallocated device memory. cudarc is no dependency of
//!    this crate: the baseline opens `libcuda.so.1` itself (`dlopen`).
//! 2. The `examples/gpu_stage.rs` pipeline (CuPy or PyTorch, SingleGil, 2
//!    workers), 64 batches of 4 MiB, at `prefetch_depth` 1 (the least `load`
//!    accepts), 2 and the default.
//!
//! `cargo bench --features cuda --bench staging` (seconds). No GPU: prints
//! `staging: skipped: <why>`, exits 0; no CuPy/PyTorch (from
//! `GILPOOL_BENCH_VENV`, `$VIRTUAL_ENV` or the interpreter's site-packages):
//! the pipeline says why it skips. Wrong results panic; failures show in the
//! tables and make the exit status 1.

mod common;

use common::fmt_duration;

use gilpool::{CudaStage, CudaVec, Engine, FromPython, Handler, Mode};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes, label, timed repetitions.
const SIZES: [(usize, &str, usize); 4] = [
    (64 << 10, "64 KiB", 21),
    (1 << 20, "1 MiB", 21),
    (16 << 20, "16 MiB", 9),
    (256 << 20, "256 MiB", 5),
];
const WORKERS: usize = 2;
const BATCHES: usize = 64;
const BATCH_LEN: usize = 1 << 20; // f32s: 4 MiB
const RUNS: usize = 5;
/// 1 is the least `load` accepts; `2 * WORKERS` the default.
const DEPTHS: [usize; 3] = [1, 2, 2 * WORKERS];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median of `reps` durations `once` measures, after 2 unmeasured calls.
fn median_of<E>(reps: usize, mut once: impl FnMut() -> Result<Duration, E>) -> Result<Duration, E> {
    for _ in 0..2 {
        once()?;
    }
    Ok(median((0..reps).map(|_| once()).collect::<Result<_, E>>()?))
}

type CuResult = c_int;
type F1<A> = unsafe extern "C" fn(A) -> CuResult;
type F2<A, B> = unsafe extern "C" fn(A, B) -> CuResult;

/// The driver calls the raw baseline makes, from `libcuda.so.1`.
struct Raw {
    mem_alloc: F2<*mut u64, usize>,
    mem_free: F1<u64>,
    host_alloc: F2<*mut *mut c_void, usize>,
    host_free: F1<*mut c_void>,
    htod: unsafe extern "C" fn(u64, *const c_void, usize) -> CuResult,
    sync: unsafe extern "C" fn() -> CuResult,
    /// "NVIDIA H200, CUDA 12.8 driver".
    about: String,
}

fn check(what: &str, r: CuResult) -> Result<(), String> {
    match r {
        0 => Ok(()),
        r => Err(format!("{what} failed: CUresult {r}")),
    }
}

/// The symbol `name` of `lib` as a `T`.
///
/// # Safety
/// `lib` is a live `dlopen` handle and `T` the function-pointer type of the
/// symbol's C signature.
unsafe fn sym<T: Copy>(lib: *mut c_void, name: &CStr) -> Result<T, String> {
    assert_eq!(size_of::<T>(), size_of::<*mut c_void>());
    // SAFETY: `lib` is live (the caller's promise); `name` ends in NUL.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    if p.is_null() {
        return Err(format!("libcuda.so.1 has no {}", name.to_string_lossy()));
    }
    // SAFETY: `p` is the symbol's address and `T` a pointer-sized function
    // pointer of its signature (the caller's promise).
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

impl Raw {
    /// Opens the driver and makes device `ordinal`'s primary context (the
    /// one gilpool's stage uses) current on this thread.
    fn open(ordinal: c_int) -> Result<Raw, String> {
        // SAFETY: a NUL-terminated name. The handle is never closed, so the
        // symbols taken from it stay valid for the whole process.
        let lib = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW) };
        if lib.is_null() {
            return Err("dlopen(libcuda.so.1) failed".into());
        }
        let mut name = [0u8; 256];
        // SAFETY: `lib` is live; each type is the signature in cuda.h
        // (CUresult, CUdevice: int; CUdeviceptr: u64; CUcontext: a pointer;
        // the `_v2` symbols are what cuda.h maps the names to). The out
        // pointers point at locals; the name buffer is longer than passed.
        unsafe {
            let init: F1<c_uint> = sym(lib, c"cuInit")?;
            let get: F2<*mut c_int, c_int> = sym(lib, c"cuDeviceGet")?;
            let retain: F2<*mut *mut c_void, c_int> = sym(lib, c"cuDevicePrimaryCtxRetain")?;
            let set: F1<*mut c_void> = sym(lib, c"cuCtxSetCurrent")?;
            let get_name: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult =
                sym(lib, c"cuDeviceGetName")?;
            let version: F1<*mut c_int> = sym(lib, c"cuDriverGetVersion")?;
            let (mut dev, mut ctx, mut v) = (0, std::ptr::null_mut(), 0);
            check("cuInit", init(0))?;
            check("cuDeviceGet", get(&mut dev, ordinal))?;
            check("cuDevicePrimaryCtxRetain", retain(&mut ctx, dev))?;
            check("cuCtxSetCurrent", set(ctx))?;
            check(
                "cuDeviceGetName",
                get_name(name.as_mut_ptr().cast(), 255, dev),
            )?;
            check("cuDriverGetVersion", version(&mut v))?;
            let name = CStr::from_bytes_until_nul(&name).map_or("?".into(), CStr::to_string_lossy);
            Ok(Raw {
                mem_alloc: sym(lib, c"cuMemAlloc_v2")?,
                mem_free: sym(lib, c"cuMemFree_v2")?,
                host_alloc: sym(lib, c"cuMemAllocHost_v2")?,
                host_free: sym(lib, c"cuMemFreeHost")?,
                htod: sym(lib, c"cuMemcpyHtoD_v2")?,
                sync: sym(lib, c"cuCtxSynchronize")?,
                about: format!("{name}, CUDA {}.{} driver", v / 1000, v % 1000 / 10),
            })
        }
    }

    /// Median `cuMemcpyHtoD` + `cuCtxSynchronize` of `data`: from pinned
    /// memory, and from `data` itself (pageable).
    fn copies(&self, data: &[f32], reps: usize) -> Result<[Duration; 2], String> {
        let n = size_of_val(data);
        let (mut dst, mut pinned) = (0u64, std::ptr::null_mut());
        // SAFETY: out pointers to locals; this thread's context is current
        // (`open`); `pinned` holds `n` bytes once allocated.
        unsafe {
            check("cuMemAlloc", (self.mem_alloc)(&mut dst, n))?;
            check("cuMemAllocHost", (self.host_alloc)(&mut pinned, n))?;
            std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), pinned.cast::<u8>(), n);
        }
        let copy = |src: *const c_void| {
            let t = Instant::now();
            // SAFETY: `dst` and `src` hold `n` bytes each and live until the
            // frees below. A pageable copy may return before its DMA is
            // done: the context synchronisation waits for it.
            unsafe {
                check("cuMemcpyHtoD", (self.htod)(dst, src, n))?;
                check("cuCtxSynchronize", (self.sync)())?;
            }
            Ok::<_, String>(t.elapsed())
        };
        let from_pinned = median_of(reps, || copy(pinned));
        let from_pageable = median_of(reps, || copy(data.as_ptr().cast()));
        // SAFETY: allocated above; every copy from or to them was waited for.
        unsafe {
            (self.host_free)(pinned);
            (self.mem_free)(dst);
        }
        Ok([from_pinned?, from_pageable?])
    }
}

/// Median `upload` + `synchronize` of `data`; then one upload read back
/// and compared.
fn upload(stage: &CudaStage, data: &[f32], reps: usize) -> gilpool::Result<Duration> {
    let d = median_of(reps, || {
        let t = Instant::now();
        let buf = stage.upload(data)?;
        stage.synchronize()?;
        let d = t.elapsed();
        drop(buf); // freed by gilpool's reaper thread, outside the timing
        Ok::<_, gilpool::Error>(d)
    })?;
    let back = stage.upload(data)?.to_vec::<f32>()?;
    assert!(
        back == data,
        "an upload of {} f32s read back wrong",
        data.len()
    );
    Ok(d)
}

/// The first table; whether every gilpool upload worked.
fn upload_table(stage: &CudaStage, raw: &Result<Raw, String>) -> bool {
    match raw {
        Ok(_) => println!("Host to device, f32, median per copy. gilpool: CudaStage::upload + synchronize (allocation included); raw: CUDA driver API via dlopen, cuMemcpyHtoD + cuCtxSynchronize into preallocated memory; ratios: gilpool's bandwidth / raw's"),
        Err(e) => println!("Host to device, f32, median per copy: gilpool's public API only (no raw baseline: {e})"),
    }
    println!();
    println!("| size | reps | gilpool upload | raw pinned | raw pageable | gilpool / pinned | gilpool / pageable |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    let mut ok = true;
    let all: Vec<f32> = (0..SIZES[3].0 / 4).map(|i| (i % 4096) as f32).collect();
    for (bytes, label, reps) in SIZES {
        let data = &all[..bytes / 4];
        let g = upload(stage, data, reps).map_err(|e| format!("failed: {e}"));
        ok &= g.is_ok();
        let dash = || Err::<Duration, _>("—".to_string());
        let [p, q] = match raw.as_ref().map(|r| r.copies(data, reps)) {
            Ok(Ok([p, q])) => [Ok(p), Ok(q)],
            Ok(Err(e)) => [Err(format!("failed: {e}")), dash()],
            Err(_) => [dash(), dash()],
        };
        let gbs = |d: &Duration| bytes as f64 / d.as_secs_f64() / 1e9;
        let cell = |r: &Result<Duration, String>| match r {
            Ok(d) => format!("{:.2} GB/s ({})", gbs(d), fmt_duration(*d)),
            Err(e) => e.clone(),
        };
        let ratio = |b: &Result<Duration, String>| match (&g, b) {
            (Ok(g), Ok(b)) => format!("{:.2}x", b.as_secs_f64() / g.as_secs_f64()),
            _ => "—".into(),
        };
        let (gc, pc, qc, rp, rq) = (cell(&g), cell(&p), cell(&q), ratio(&p), ratio(&q));
        println!("| {label} | {reps} | {gc} | {pc} | {qc} | {rp} | {rq} |");
    }
    ok
}

/// One pipeline run: every batch submitted, every result awaited (timed),
/// then checked.
fn run(h: &Handler, stage: &CudaStage, inputs: &[Arc<Vec<f32>>]) -> gilpool::Result<Duration> {
    let t = Instant::now();
    let futures = inputs
        .iter()
        .map(|input| {
            let (stage, input) = (stage.clone(), input.clone());
            h.submit_with(
                move || Ok((stage.upload(&input)?, 2.0f64)),
                |obj| CudaVec::<f32>::from_python(&obj),
            )
        })
        .collect::<gilpool::Result<Vec<_>>>()?;
    let outs = futures.into_iter().map(|f| f.wait());
    let outs = outs.collect::<gilpool::Result<Vec<_>>>()?;
    let d = t.elapsed();
    for (b, CudaVec(out)) in outs.iter().enumerate() {
        assert_eq!(out.len(), BATCH_LEN, "batch {b}: result length");
        for i in [0, 1, 999, BATCH_LEN / 2, BATCH_LEN - 1] {
            let want = ((i % 1000) + b) as f32 * 2.0 + 1.0;
            assert_eq!(out[i], want, "batch {b}, item {i}: wrong result");
        }
    }
    Ok(d)
}

/// Median run per prefetch depth, the depths' runs interleaved.
fn pipeline(engine: &Engine, stage: &CudaStage) -> gilpool::Result<Vec<Duration>> {
    let inputs: Vec<Arc<Vec<f32>>> = (0..BATCHES)
        .map(|b| Arc::new((0..BATCH_LEN).map(|i| ((i % 1000) + b) as f32).collect()))
        .collect();
    let load = |&d: &usize| {
        engine
            .handler("gilpool_gpu", "scale")
            .prefetch_depth(d)
            .load()
    };
    let handlers = DEPTHS
        .iter()
        .map(load)
        .collect::<gilpool::Result<Vec<_>>>()?;
    let mut times = vec![Vec::new(); handlers.len()];
    for rep in 0..=RUNS {
        for (h, t) in handlers.iter().zip(&mut times) {
            let d = run(h, stage, &inputs)?;
            if rep > 0 {
                t.push(d); // run 0 warms up (kernel compilation, pools)
            }
        }
    }
    Ok(times.into_iter().map(median).collect())
}

/// The second table (or why it is skipped); whether nothing failed.
fn pipeline_table(engine: &Engine, stage: &CudaStage) -> bool {
    let framework = engine.load("gilpool_gpu", "framework");
    let fw = match framework.and_then(|f| f.invoke::<_, String>(())) {
        Ok(fw) => fw,
        Err(e) => {
            println!("GPU pipeline: skipped: {e}");
            return true;
        }
    };
    println!("GPU pipeline ({fw}, SingleGil, {WORKERS} workers): {BATCHES} batches of 4 MiB f32 (commit: CudaStage::upload; Python: gilpool_gpu.scale; callback: CudaVec), median of {RUNS} runs after a warm-up; prefetch_depth 1 is the least allowed, {} the default", DEPTHS[2]);
    println!();
    println!("| prefetch_depth | median run | batches/s | speed vs prefetch_depth 1 |");
    println!("|--:|--:|--:|--:|");
    match pipeline(engine, stage) {
        Ok(times) => {
            for (d, t) in DEPTHS.iter().zip(&times) {
                let rate = BATCHES as f64 / t.as_secs_f64();
                let vs = times[0].as_secs_f64() / t.as_secs_f64();
                println!("| {d} | {} | {rate:.0} | {vs:.2}x |", fmt_duration(*t));
            }
            true
        }
        Err(e) => {
            println!("| — | failed: {e} | — | — |");
            false
        }
    }
}

fn main() {
    let stage = match CudaStage::new(0) {
        Ok(s) => s,
        Err(e) if e.is_cuda_unavailable() => {
            println!("staging: skipped: {e}");
            return;
        }
        Err(e) => {
            eprintln!("staging: CudaStage::new(0): {e}");
            std::process::exit(1);
        }
    };
    let mut b = Engine::builder()
        .mode(Mode::SingleGil)
        .workers(WORKERS)
        .pin(false)
        .sys_path(concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
        // A prebuilt binary run from a copy of the tree elsewhere.
        .sys_path(std::env::current_dir().unwrap_or_default().join("python"));
    if let Some(v) = std::env::var_os("GILPOOL_BENCH_VENV") {
        b = b.venv(v);
    }
    // Without an engine the upload table still runs.
    let engine = b.build();
    let python = match &engine {
        Ok(e) => format!("Python {} ({})", e.python_version(), e.python_executable()),
        Err(e) => format!("no Python: the engine failed to start: {e}"),
    };
    let raw = Raw::open(stage.ordinal() as c_int);
    let about = raw
        .as_ref()
        .map_or_else(|e| format!("name unknown: {e}"), |r| r.about.clone());
    println!(
        "staging: CUDA device {} ({about}); {python}",
        stage.ordinal()
    );
    println!();
    let uploads_ok = upload_table(&stage, &raw);
    println!();
    let pipeline_ok = match engine {
        Ok(engine) => {
            let ok = pipeline_table(&engine, &stage);
            engine.shutdown();
            ok
        }
        Err(e) => {
            println!("GPU pipeline: skipped: the engine failed to start: {e}");
            false
        }
    };
    if !(uploads_ok && pipeline_ok) {
        std::process::exit(1);
    }
}

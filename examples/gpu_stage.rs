//! The GPU stage pattern: each batch's commit closure copies it to the GPU
//! (pinned staging, an async copy on the stage's own stream, no GIL held),
//! Python computes on the device array (CuPy or PyTorch, on the main
//! interpreter: GPU frameworks refuse own-GIL subinterpreters), and the
//! callback brings the result back to the host.
//!
//! `cargo run --release --features cuda --example gpu_stage`
//!
//! Without a GPU, a CUDA driver, or CuPy/PyTorch it prints why and exits 0.

use gilpool::{CudaStage, CudaVec, Engine, FromPython, Mode};

fn main() -> gilpool::Result<()> {
    let stage = match CudaStage::new(0) {
        Ok(stage) => stage,
        Err(e) if e.is_cuda_unavailable() => {
            println!("gpu_stage: skipped: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let engine = Engine::builder()
        .mode(Mode::SingleGil)
        .sys_path(concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
        .build()?;
    let framework = engine.load("gilpool_gpu", "framework")?;
    match framework.invoke::<_, String>(()) {
        Ok(name) => println!("gpu_stage: device {}, {name}", stage.ordinal()),
        Err(e) => {
            println!("gpu_stage: skipped: {e}");
            return Ok(());
        }
    }
    // Committing runs ahead of execution (prefetch_depth batches), so the
    // next batch's copy overlaps the current batch's Python.
    let scale = engine
        .handler("gilpool_gpu", "scale")
        .prefetch_depth(2)
        .load()?;
    let batches = 8;
    let len = 1 << 20;
    let futures: Vec<_> = (0..batches)
        .map(|b| {
            let stage = stage.clone();
            scale.submit_with(
                move || {
                    let batch: Vec<f32> = (0..len).map(|i| (i % 1000) as f32 + b as f32).collect();
                    Ok((stage.upload(&batch)?, 2.0f64))
                },
                |obj| CudaVec::<f32>::from_python(&obj),
            )
        })
        .collect::<gilpool::Result<_>>()?;
    for (b, fut) in futures.into_iter().enumerate() {
        let CudaVec(out) = fut.wait()?;
        let expect = 1.0 + b as f32; // input item 1 of batch b
        assert_eq!(out[1], expect * 2.0 + 1.0);
        println!("batch {b}: {} results, out[1] = {}", out.len(), out[1]);
    }
    engine.shutdown();
    Ok(())
}

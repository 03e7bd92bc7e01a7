#!/usr/bin/env bash
# Builds, lints and tests gilpool with the `cuda` feature. Needs no GPU and
# no CUDA toolkit: the driver is loaded at run time, and without one the
# GPU tests print why they skip and the example exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --features cuda --all-targets
cargo clippy --workspace --all-targets --features cuda -- -D warnings
cargo test --release --features cuda --test cuda --test buffers -- --nocapture
cargo test --release --features cuda --doc
cargo run --release --features cuda --example gpu_stage
cargo bench --features cuda --bench staging

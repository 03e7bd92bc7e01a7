#!/usr/bin/env bash
# The checks that need a GPU or many cores, in one run: the GPU tests
# (tests/cuda.rs), the gpu_stage example, the staging bench, the 1..16-worker
# scaling table (heavy and trivial) and a 2-worker trivial bench. Results go
# to $OUT (default ./out/gpu_scaling); each part has its own time limit, all
# capped by TOTAL_S (default 570 s), and a part that fails or runs out of
# time does not stop the next one.
#
# With cargo, it builds first. On a machine without a Rust toolchain, BIN
# names a folder of binaries built elsewhere for this machine's CPython
# minor version: gilpool, cuda (the tests/cuda.rs test binary), gpu_stage
# and staging (the bench). The binaries find libpython through their rpath
# or LD_LIBRARY_PATH, which this script points at the libpython of the
# `python3` on PATH (that of its base installation for a virtualenv); the
# test binary reads its fixtures from the checkout it was built in, so
# build it from a checkout at the same path as this one.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu_scaling}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT
exec > >(tee "$OUT/log.txt") 2>&1
T0=$(date +%s)
TOTAL_S=${TOTAL_S:-570}
stamp() { echo "== [$(($(date +%s) - T0)) s] $*"; }
stamp facts
nproc
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
grep -m1 "model name" /proc/cpuinfo
cat /proc/loadavg
PY=$(command -v python3)
"$PY" -VV
LIBDIR=$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
BASE=$("$PY" -c "import sys; print(sys.base_prefix)")
SO=$(ls "$LIBDIR"/libpython3.*.so.1.0 "$BASE"/lib/libpython3.*.so.1.0 2>/dev/null | head -1)
echo "libpython: ${SO:-none found beside $PY}"
[ -n "$SO" ] && export LD_LIBRARY_PATH=$(dirname "$SO")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
PREFIX=$("$PY" -c "import sys; print(sys.prefix)")
[ -f "$PREFIX/pyvenv.cfg" ] && export VIRTUAL_ENV=$PREFIX

if [ -z "${BIN:-}" ]; then
    stamp build
    export PYO3_PYTHON=$PY
    BIN=$OUT/bin
    mkdir -p "$BIN"
    cargo build --release --features cuda --bin gilpool --example gpu_stage || exit 1
    cargo bench --features cuda --bench staging --no-run || exit 1
    t=target/release
    cp $t/gilpool $t/examples/gpu_stage "$BIN"/
    cp "$(ls -t $t/deps/staging-* | grep -v '\.d$' | head -1)" "$BIN"/staging
    cargo test --release --features cuda --test cuda --no-run || exit 1
    cp "$(ls -t $t/deps/cuda-* | grep -v '\.d$' | head -1)" "$BIN"/cuda
fi

# part NAME LIMIT COMMAND...: runs it for at most LIMIT s (less if the
# whole run's time is nearly spent) and prints its exit status.
part() {
    local name=$1 limit=$2
    shift 2
    local left=$((TOTAL_S - ($(date +%s) - T0)))
    ((left < limit)) && limit=$left
    if ((limit < 10)); then
        echo "== skipped $name: no time left"
        return
    fi
    stamp "$name (limit $limit s)"
    timeout "$limit" "$@"
    echo "== $name rc=$?"
}
export BIN
part doctor 30 "$BIN/gilpool" doctor
part "GPU tests" 120 "$BIN/cuda" --nocapture --test-threads=1
part "scaling, heavy" 200 bash -c 'set -o pipefail; "$BIN/gilpool" bench --workers 1,2,4,8,16 --workload heavy --tasks-heavy 300 --repeat 4 --paired 3 --latency-samples 0 --json "$OUT/scaling_heavy.json" --chart "$OUT/scaling_heavy.svg" | tee "$OUT/scaling_heavy.md"'
part "staging bench" 90 bash -c 'set -o pipefail; "$BIN/staging" | tee "$OUT/staging.md"'
part "example gpu_stage" 45 "$BIN/gpu_stage"
part "scaling, trivial" 150 bash -c 'set -o pipefail; "$BIN/gilpool" bench --workers 1,2,4,8,16 --workload trivial --tasks-trivial 100000 --repeat 4 --paired 3 --latency-samples 0 --json "$OUT/scaling_trivial.json" | tee "$OUT/scaling_trivial.md"'
part "bench, trivial, 2 workers" 120 bash -c 'set -o pipefail; "$BIN/gilpool" bench --workers 2 --workload trivial --repeat 5 --paired 3 --latency-samples 20000 | tee "$OUT/trivial2.md"'
stamp done

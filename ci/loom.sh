#!/usr/bin/env bash
# Loom models of the scheduler (loom_tests/, see docs/TESTING.md).
#
#   ci/loom.sh            # from any directory
#
# Steps:
#   1. every model, LOOM_MAX_PREEMPTIONS=2 (quick; smallest counterexamples);
#   2. the models named in SMALL_MODELS, LOOM_MAX_PREEMPTIONS=3;
#   3. the broken variant (--cfg gilpool_loom_broken_sleep): the sleep models
#      must report the lost wakeup, or this step fails.
#
# RUSTFLAGS is set per command and only inside loom_tests/, which has its own
# target directory (one per cfg set, so the steps do not rebuild each other),
# so nothing leaks into the main workspace's build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/loom_tests"

# These would override or redirect our settings.
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET_DIR
target="$root/loom_tests/target"

# Module-path filters of the models run a second time with 3 preemptions.
# Every model fits today (about 30 s in all on 2 cores): the two-worker
# shutdown models are the slowest, and the ones that need the third
# preemption (a lost job at drain needs both workers preempted around their
# last search). Drop a filter here if a model grows past that budget.
SMALL_MODELS=(models::cell models::lend models::batcher models::sleep models::queues models::permits models::shutdown)

step() { printf '\n==> loom: %s\n' "$*"; }

# cargo test that also fails when the filters matched no test at all.
loom_test() {
    local log
    log="$(mktemp)"
    if ! cargo test --release --lib "$@" 2>&1 | tee "$log"; then
        rm -f "$log"
        return 1
    fi
    local passed
    passed="$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')"
    rm -f "$log"
    if [ "$passed" -eq 0 ]; then
        echo "loom: no model ran (filters: $*)" >&2
        return 1
    fi
}

start=$SECONDS

step "every model, LOOM_MAX_PREEMPTIONS=2"
RUSTFLAGS="--cfg gilpool_loom" CARGO_TARGET_DIR="$target" LOOM_MAX_PREEMPTIONS=2 \
    loom_test
echo "==> loom: ok (LOOM_MAX_PREEMPTIONS=2), $((SECONDS - start)) s so far"

step "small models, LOOM_MAX_PREEMPTIONS=3: ${SMALL_MODELS[*]}"
RUSTFLAGS="--cfg gilpool_loom" CARGO_TARGET_DIR="$target" LOOM_MAX_PREEMPTIONS=3 \
    loom_test -- "${SMALL_MODELS[@]}"
echo "==> loom: ok (LOOM_MAX_PREEMPTIONS=3), $((SECONDS - start)) s so far"

step "broken variant (--cfg gilpool_loom_broken_sleep): the sleep models must catch the lost wakeup"
RUSTFLAGS="--cfg gilpool_loom --cfg gilpool_loom_broken_sleep" \
    CARGO_TARGET_DIR="$target/broken-sleep" LOOM_MAX_PREEMPTIONS=2 \
    loom_test -- models::sleep::broken --nocapture
echo "==> loom: ok (loom caught the broken sleep), $((SECONDS - start)) s in all"

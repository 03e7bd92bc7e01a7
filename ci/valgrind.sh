#!/usr/bin/env bash
# Memory checking: a chosen subset of the test suite under valgrind's
# memcheck, against the default build (CPython 3.13, see ci/python.sh).
#
#   ci/valgrind.sh             # from any directory; builds what it runs
#
# Each case is one test (`--exact`) run under memcheck with
# PYTHONMALLOC=malloc (so valgrind sees every Python allocation) and the
# suppressions in ci/valgrind.supp, which cover only frames inside
# libpython, ld.so and libc (CPython's intentional leaks and its known
# reads of uninitialised memory; docs/TESTING.md says why each is
# CPython's). Any error left — an invalid read or write, a use of
# uninitialised memory, an invalid free, or a definitely lost block — fails
# the case: valgrind exits with --error-exitcode, and ci/valgrind_report.py
# prints each one, marking those whose stack passes through gilpool's own
# code (gilpool:: / gilpool_ffi:: frames).
#
# The fault suite re-runs itself as child processes; here the child is run
# directly (GILPOOL_FAULT_MODE=sub|single-gil and --exact <name>).
#
# Environment: CARGO_TARGET_DIR (default target/), VALGRIND_OUT (where the
# XML and logs go; default target/valgrind), VALGRIND_CASES (a
# space-separated subset of the case names below, for a quick local run),
# VALGRIND_CASE_TIMEOUT (seconds one case may take, default 900).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v valgrind >/dev/null || { echo "ci/valgrind.sh needs valgrind (apt-get install valgrind)" >&2; exit 1; }
out="${VALGRIND_OUT:-${CARGO_TARGET_DIR:-$root/target}/valgrind}"
rm -rf "$out"
mkdir -p "$out"

# The test binaries, as cargo built them (release: line tables only): the
# test-harness artifact of the integration test named $1 (cargo also
# reports the gilpool binary the tests run, when it builds it).
binary() {
    cargo test --release --test "$1" --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and t.get("name") == sys.argv[1] \
            and "test" in t.get("kind", []) and m.get("executable"):
        print(m["executable"])' "$1" | tail -1
}
cargo test --release --test engine --test values --test faults --test exit_clean --no-run
engine=$(binary engine)
values=$(binary values)
faults=$(binary faults)
exit_clean=$(binary exit_clean)
for b in "$engine" "$values" "$faults" "$exit_clean"; do
    [ -x "$b" ] || { echo "valgrind: test binary not found ($b)" >&2; exit 1; }
done

# name | environment | binary | test. Engine start and stop in both modes,
# engines of many workers creating their interpreters at once (3.13),
# conversions both ways, Python and load errors, panics, cancellation,
# deadlines, interrupts, quarantine and bounded shutdown.
CASES=(
    "engine-start-stop||$engine|invoke_submit_and_await_in_every_mode"
    "engine-kwargs||$engine|keyword_arguments_reach_python"
    "engine-load-errors||$engine|load_errors_are_distinct_and_name_what_is_missing"
    "engine-import-error||$engine|a_module_that_raises_on_import_is_an_import_error"
    "engine-python-errors||$engine|python_exceptions_become_owned_data_and_the_worker_keeps_serving"
    "engine-conversion-errors||$engine|conversion_errors_name_the_types"
    "engine-panics||$engine|panics_in_commit_or_callback_fail_only_that_task"
    "engine-map||$engine|map_chunks_keep_order_and_fail_item_by_item"
    "engine-after-shutdown||$engine|submit_after_shutdown_is_a_shutdown_error"
    "creation-overlap|GILPOOL_EXIT_CHILD=1 GILPOOL_EXIT_ROUNDS=2|$exit_clean|many_workers_created_together_use_the_stdlib_and_exit_zero"
    "values-typed||$values|typed_containers_round_trip"
    "values-python-types||$values|python_side_types_are_the_expected_ones"
    "values-proptest|PROPTEST_CASES=64|$values|value_round_trips"
    "values-deep-proptest|PROPTEST_CASES=16|$values|deeply_wrapped_values_round_trip"
    "values-ints-proptest|PROPTEST_CASES=64|$values|integers_round_trip"
    "values-strings-proptest|PROPTEST_CASES=64|$values|strings_and_floats_round_trip"
)
# The fault cases, each in both modes.
for fault in \
    panics_in_user_code_fail_only_their_task_and_workers_survive \
    a_running_task_past_its_deadline_is_interrupted_and_the_worker_goes_on \
    tasks_past_their_deadline_or_cancelled_before_they_start_never_run \
    cancelling_a_running_task_interrupts_it_in_its_own_interpreter_only \
    a_task_that_swallows_interrupts_is_quarantined_and_replaced \
    shutdown_now_cancels_everything_queued_and_interrupts_what_runs \
    shutdown_with_a_task_that_never_ends_is_bounded; do
    for mode in sub single-gil; do
        CASES+=("faults-$fault-$mode|GILPOOL_FAULT_MODE=$mode|$faults|$fault")
    done
done

selected() {
    [ -z "${VALGRIND_CASES:-}" ] && return 0
    case " $VALGRIND_CASES " in *" $1 "*) return 0 ;; esac
    return 1
}

failed=()
start=$SECONDS
for case in "${CASES[@]}"; do
    IFS='|' read -r name env bin test <<<"$case"
    selected "$name" || continue
    t0=$SECONDS
    rc=0
    # shellcheck disable=SC2086 # $env is empty or VAR=value words
    timeout "${VALGRIND_CASE_TIMEOUT:-900}" env PYTHONMALLOC=malloc $env valgrind --tool=memcheck \
        --error-exitcode=99 \
        --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
        --track-origins=no --num-callers=60 --fair-sched=yes \
        --suppressions="$root/ci/valgrind.supp" \
        --xml=yes --xml-file="$out/$name.xml" --log-file="$out/$name.log" \
        "$bin" --exact "$test" --test-threads=1 >"$out/$name.out" 2>&1 || rc=$?
    # The report fails on any error left, even if valgrind's exit did not.
    summary=$(python3 "$root/ci/valgrind_report.py" "$out/$name.xml") || { [ "$rc" -ne 0 ] || rc=1; }
    printf '%4ds exit %3d  %s\n      %s\n' "$((SECONDS - t0))" "$rc" "$name" "$summary"
    if [ "$rc" -ne 0 ]; then
        failed+=("$name")
        python3 "$root/ci/valgrind_report.py" --details "$out/$name.xml" || true
        tail -20 "$out/$name.out"
    fi
done
echo "valgrind: $(( SECONDS - start )) s in all; XML and logs in $out"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "valgrind: failed: ${failed[*]}" >&2
    exit 1
fi

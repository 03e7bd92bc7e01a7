#!/usr/bin/env bash
# Soak: benches/soak.rs, a long mixed load (results, Python errors, panics,
# cancellations, timeouts) on a 2-worker engine per mode this build
# supports, RSS sampled as it goes (see docs/TESTING.md).
#
#   ci/soak.sh              # 1,000,000 tasks per mode
#   ci/soak.sh 100000       # a shorter soak
#
# It fails when a task's outcome is not the one its kind must have, when
# RSS grew past the bound the bench states, or when the run takes longer
# than SOAK_BUDGET seconds (default 600; the full soak takes about 30 s of
# that on the 2-core CI machine, 1 min under load).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tasks="${1:-1000000}"
budget="${SOAK_BUDGET:-600}"

cargo bench --bench soak --no-run
start=$SECONDS
rc=0
timeout "$budget" cargo bench --bench soak -- --tasks "$tasks" || rc=$?
if [ "$rc" -eq 124 ]; then
    echo "soak: past its budget of $budget s" >&2
fi
echo "soak: $tasks tasks per mode, $((SECONDS - start)) s, exit $rc"
exit "$rc"

#!/usr/bin/env python3
"""Measure the Python-side peers of gilpool on the same workload; print one JSON object.

Usage::

    python gilpool_baselines.py --workload heavy|library|trivial --tasks N --workers W
                                [--only name,name] [--repeat R]
                                [--start-method fork|spawn|forkserver]
    python gilpool_baselines.py --serve --workload ... --tasks N --workers W [--only ...]

Pure Python, standard library only, CPython 3.9-3.13.  The JSON object goes to
stdout (exactly one line); progress lines go to stderr.  Exit status 0 when
every requested entry ran (or was skipped with a reason), 1 when an entry
failed (its ``"error"`` says why; the JSON is still printed), 2 on bad usage.

Workloads (the functions live in ``gilpool_workloads.py`` next to this file):

* ``heavy``   -- task ``i`` is ``gilpool_workloads.heavy(HEAVY_N)`` (~1 ms on
  3.13 on the dev VM); every result must equal ``HEAVY_RESULT``.
* ``library`` -- task ``i`` is ``gilpool_workloads.library(LIBRARY_N)``: a
  ``difflib`` diff (a few hundred µs), a real pure-Python library that
  allocates as it goes; every result must be equal.
* ``trivial`` -- task ``i`` is ``gilpool_workloads.inc(i)``; result ``i + 1``.

Entries (``--only`` takes a comma-separated subset, in any order; the output
keeps the order below):

* ``sequential``       plain list comprehension in this process (workers = 1).
* ``threads``          ``ThreadPoolExecutor(W).map`` (one shared GIL).
* ``mp_pool_default``  ``multiprocessing.Pool(W).map`` with its default chunking
                       (``ceil(tasks / (4 * W))``).
* ``mp_pool_chunk1``   ``Pool(W).map(..., chunksize=1)``.
* ``ppe_chunk1``       ``ProcessPoolExecutor(W).map(..., chunksize=1)``.
* ``ppe_tuned``        ``ProcessPoolExecutor(W).map`` with
                       ``chunksize = max(1, tasks // (W * 4))``.
* ``interpreters``     W own-GIL subinterpreters (stdlib private module
                       ``_interpreters`` on 3.13+, ``_xxsubinterpreters`` on 3.12),
                       each driven by its own Python thread; each thread runs its
                       contiguous share of the tasks with ONE ``exec`` call and
                       the results come back to the main interpreter (marshal via
                       a temp file) inside the timed region.  Skipped (with a
                       reason) before 3.12.
* ``interpreters_per_task``  the same W interpreters, but one cross-interpreter
                       ``exec`` per task (``_interpreters.exec(id, code, {"_a": arg})``;
                       on 3.12 ``run_string`` of a source string) -- the per-call
                       dispatch cost of the stdlib API.  Skipped before 3.12.
* ``ceiling``          W independent child ``python`` processes (this script in a
                       hidden child mode), each running its share sequentially.
                       Each child imports and warms up, reports ready, waits for
                       "go" on stdin, runs, and reports its own elapsed time;
                       ``seconds`` = the slowest child's elapsed (no start-up, no
                       IPC), ``wall_s`` = parent-observed go-to-last-answer time.
* ``ceiling_sub``      the same W processes, but each runs its share inside an
                       own-GIL subinterpreter it created (``_interpreters`` /
                       ``_xxsubinterpreters``), timed inside it.  Against
                       ``ceiling`` it shows what running in a subinterpreter
                       costs by itself, with no threads and no dispatch.
                       Skipped before 3.12.

Serve mode (``--serve``, what ``gilpool bench`` uses): every requested entry
is started and warmed up once, then stdout gets one line, the header fields of
the schema below plus ``"ready"``: a list with, per entry, ``{"name",
"workers", "tasks", "startup_s", "note", extras}`` or ``{"name", "skipped"}``
or ``{"name", "error"}``.  Each ``run NAME`` line on stdin then times ONE run
of that entry and answers one line ``{"name", "seconds", "verified",
extras}`` (or ``{"name", "error"}``); ``quit`` or end of input closes every
entry and exits 0.  The caller can so interleave the entries run by run with
its own.  Because several pools live at once there, and forking a process
that runs threads is unsafe, serve mode uses the ``forkserver`` start method
unless ``--start-method`` says otherwise.

Timing: every entry's ``seconds`` is the best of R repeats of the
map/execution phase only; pools, executors, interpreters and children are
started and warmed up once before timing (``startup_s`` reports that one-time
start + warm-up; ``null`` where nothing is started).  Results are checked
against the expected values after each repeat (``verified``).

Output schema (one JSON object)::

    {
      "tool": "gilpool_baselines", "python": "3.13.0", "implementation": "CPython",
      "executable": "/path/to/python3", "cpus": 2, "affinity_cpus": 2,
      "platform": "...", "workload": "heavy" | "library" | "trivial",
      "function": "gilpool_workloads.heavy" | "...library" | "...inc",
      "arg": 4300 | 80 | "i", "heavy_n": 4300, "tasks": N, "workers": W, "repeat": R,
      "start_method": "fork", "loadavg_before": [1m, 5m, 15m] | null,
      "loadavg_after": [...] | null, "foreign_cpu_pct": float | null,
      "total_s": float, "note": "...",
      "entries": [
        {"name": str, "workers": int, "tasks": int, "seconds": float,
         "tasks_per_s": float, "per_task_us": float,    # 1e6 * seconds / tasks
         "startup_s": float | null, "speedup_vs_sequential": float | null,
         "seconds_all": [float, ...], "verified": bool, "note": str,
         "foreign_cpu_pct": float | null,
         ... entry extras: "chunksize", "module", "wall_s", "child_seconds" ...},
        {"name": str, "skipped": "reason"},              # not available here
        {"name": str, "error": "Type: message"}          # failed
      ]
    }

``per_task_us`` is inverse throughput (wall time divided by task count across
all workers), not per-task latency.  ``foreign_cpu_pct`` (Linux only, else
null) is the share of the machine's total CPU capacity that OTHER programs used
while the entry (or, top level, the whole run) ran, from /proc/stat minus this
process and its reaped children: above a few percent, the numbers are
disturbed (e.g. by a concurrent compiler) -- rerun on a quiet machine.
``loadavg_*`` is ``os.getloadavg()`` before and after the run.
"""

import argparse
import json
import marshal
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    # spawn/forkserver children re-import this file as __mp_main__, so this
    # line also makes gilpool_workloads importable in every worker process.
    sys.path.insert(0, HERE)

import gilpool_workloads as W  # noqa: E402

ENTRY_NAMES = [
    "sequential",
    "threads",
    "mp_pool_default",
    "mp_pool_chunk1",
    "ppe_chunk1",
    "ppe_tuned",
    "interpreters",
    "interpreters_per_task",
    "ceiling",
    "ceiling_sub",
]

NOTE = (
    "seconds = best of R repeats of the map/execution phase only; pools, executors, "
    "interpreters and child processes are started and warmed before timing and their "
    "one-time start + warm-up is reported separately as startup_s; per_task_us = "
    "1e6 * seconds / tasks (inverse throughput)"
)


def log(msg):
    """Write one progress line to stderr."""
    sys.stderr.write("[baselines] %s\n" % msg)
    sys.stderr.flush()


# --------------------------------------------------------------------------
# workload description


#: The workloads whose every task takes the same argument, and that argument.
CONSTANT = W.BENCH_ARGS


def workload_function(kind):
    """The name of the ``gilpool_workloads`` function of workload ``kind``."""
    return kind if kind in CONSTANT else "inc"


class Workload(object):
    """The task list of one run: function name, per-task args, expected results."""

    def __init__(self, kind, tasks):
        """Build the workload ``kind`` ("heavy", "library" or "trivial") with ``tasks`` tasks."""
        self.kind = kind
        self.tasks = tasks
        if kind in CONSTANT:
            self.fname = kind
            arg = CONSTANT[kind]
            self.args = [arg] * tasks
            value = getattr(W, kind)(arg)
            self.expected = [value] * tasks
        elif kind == "trivial":
            self.fname = "inc"
            self.args = list(range(tasks))
            self.expected = [i + 1 for i in range(tasks)]
        else:
            raise ValueError("unknown workload %r" % (kind,))
        self.fn = getattr(W, self.fname)

    def share(self, k, workers):
        """Return the half-open index range ``(lo, hi)`` of worker ``k``'s contiguous share."""
        return (k * self.tasks // workers, (k + 1) * self.tasks // workers)


def share_args(kind, lo, hi):
    """The args of tasks ``lo..hi`` (same as ``Workload.args[lo:hi]``), cheap to rebuild anywhere."""
    if kind in CONSTANT:
        return [CONSTANT[kind]] * (hi - lo)
    return list(range(lo, hi))


def run_share(fn, args):
    """Run ``fn`` over ``args`` sequentially and return the result list."""
    return [fn(a) for a in args]


def cpu_snapshot():
    """Return ``(wall, machine_busy_s, own_cpu_s)`` or None where /proc/stat is missing.

    ``machine_busy_s`` is the busy (non-idle, non-iowait) CPU time of the whole
    machine from /proc/stat; ``own_cpu_s`` is this process plus its reaped
    children (``os.times``).  The difference between two snapshots is the CPU
    time other programs used meanwhile: the noise indicator ``foreign_cpu_pct``.
    """
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
        ticks = [int(x) for x in fields[1:]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError, IndexError):
        return None
    busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / float(hz)  # minus idle, iowait
    t = os.times()
    own = t[0] + t[1] + t[2] + t[3]
    return (time.perf_counter(), busy, own)


def foreign_cpu_pct(before, after):
    """Percent of the machine's CPU capacity used by OTHER programs between two snapshots."""
    if before is None or after is None:
        return None
    wall = after[0] - before[0]
    if wall <= 0:
        return None
    foreign = (after[1] - before[1]) - (after[2] - before[2])
    return round(max(0.0, foreign) / (wall * (os.cpu_count() or 1)) * 100.0, 1)


def loadavg():
    """Return ``os.getloadavg()`` rounded, or None where unsupported."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def make_entry(name, workers, tasks, times, startup_s=None, verified=True, note="", **extra):
    """Build one result entry from the list of per-repeat timings."""
    best = min(times)
    entry = {
        "name": name,
        "workers": workers,
        "tasks": tasks,
        "seconds": round(best, 6),
        "tasks_per_s": round(tasks / best, 1) if best > 0 else None,
        "per_task_us": round(best / tasks * 1e6, 3) if tasks else None,
        "startup_s": None if startup_s is None else round(startup_s, 6),
        "speedup_vs_sequential": None,
        "seconds_all": [round(t, 6) for t in times],
        "verified": bool(verified),
        "note": note,
    }
    entry.update(extra)
    return entry


# --------------------------------------------------------------------------
# entries: each is a runner with start() (untimed set-up and warm-up),
# once() (one timed run: seconds, results as expected, extras) and close().


class Skip(Exception):
    """Raised by ``Runner.start`` when the entry cannot run here (the reason)."""


class Runner(object):
    """One entry: started once, timed any number of times, closed once."""

    name = "?"
    note = ""

    def __init__(self, wl, workers):
        """Bind the runner to the workload and the worker count."""
        self.wl = wl
        self.workers = workers
        self.startup = None  # seconds of start + warm-up; None where nothing starts
        self.extra = {}

    def start(self):
        """Start and warm up whatever the timed runs use (untimed)."""

    def once(self):
        """Time one run; return ``(seconds, verified, extras)``."""
        raise NotImplementedError

    def close(self):
        """Release what ``start`` made."""

    def entry(self, times, verified, best_extras=None):
        """The JSON entry from the per-run timings."""
        extra = dict(self.extra)
        extra.update(best_extras or {})
        return make_entry(self.name, self.workers, self.wl.tasks, times, self.startup, verified,
                          self.note, **extra)


class Sequential(Runner):
    """Plain loop in this process."""

    name = "sequential"
    note = "plain list comprehension, one thread"

    def __init__(self, wl, workers):
        """One worker whatever W is."""
        Runner.__init__(self, wl, 1)

    def start(self):
        """Warm the function's caches."""
        run_share(self.wl.fn, self.wl.args[: min(len(self.wl.args), 50)])

    def once(self):
        """One timed loop."""
        t0 = time.perf_counter()
        res = run_share(self.wl.fn, self.wl.args)
        return time.perf_counter() - t0, res == self.wl.expected, None


def warm_processes(map_fn, workers):
    """Make sure every worker process exists and has imported the workloads."""
    # spin() holds each worker ~20 ms, so W busy tasks force W distinct
    # processes to take one each; then a short burst of real calls.
    map_fn(W.spin, [20] * workers)
    map_fn(W.inc, list(range(4 * workers)))


class Threads(Runner):
    """ThreadPoolExecutor(W).map with the threads started and warmed."""

    name = "threads"
    note = "ThreadPoolExecutor(W).map, shared GIL"

    def start(self):
        """Start W threads."""
        from concurrent.futures import ThreadPoolExecutor

        t0 = time.perf_counter()
        self.ex = ThreadPoolExecutor(max_workers=self.workers)
        list(self.ex.map(W.spin, [2] * (2 * self.workers)))  # make every thread exist
        self.startup = time.perf_counter() - t0

    def once(self):
        """One timed map."""
        t0 = time.perf_counter()
        res = list(self.ex.map(self.wl.fn, self.wl.args))
        return time.perf_counter() - t0, res == self.wl.expected, None

    def close(self):
        """Join the threads."""
        if getattr(self, "ex", None) is not None:
            self.ex.shutdown(wait=True)


class MpPool(Runner):
    """multiprocessing.Pool(W).map, default chunking or chunksize=1."""

    def __init__(self, wl, workers, ctx, chunk1):
        """``chunk1``: chunksize=1, else the default ``ceil(tasks / (4 W))``."""
        Runner.__init__(self, wl, workers)
        self.ctx = ctx
        self.chunk1 = chunk1
        self.name = "mp_pool_chunk1" if chunk1 else "mp_pool_default"
        self.note = "multiprocessing.Pool(W).map, chunksize=%s" % ("1" if chunk1 else "default")
        if chunk1:
            chunk = 1
        else:
            chunk, rest = divmod(wl.tasks, workers * 4)
            chunk = chunk + 1 if rest else chunk
        self.extra = {"chunksize": chunk}

    def start(self):
        """Start the pool and warm every process."""
        t0 = time.perf_counter()
        self.pool = self.ctx.Pool(self.workers)
        warm_processes(lambda f, xs: self.pool.map(f, xs, chunksize=1), self.workers)
        self.startup = time.perf_counter() - t0

    def once(self):
        """One timed map."""
        t0 = time.perf_counter()
        if self.chunk1:
            res = self.pool.map(self.wl.fn, self.wl.args, chunksize=1)
        else:
            res = self.pool.map(self.wl.fn, self.wl.args)
        return time.perf_counter() - t0, res == self.wl.expected, None

    def close(self):
        """Close and join the pool."""
        if getattr(self, "pool", None) is not None:
            self.pool.close()
            self.pool.join()


class Ppe(Runner):
    """ProcessPoolExecutor(W).map, chunksize 1 or tasks // (W * 4)."""

    def __init__(self, wl, workers, ctx, tuned):
        """``tuned``: chunksize ``max(1, tasks // (4 W))``, else 1."""
        Runner.__init__(self, wl, workers)
        self.ctx = ctx
        self.name = "ppe_tuned" if tuned else "ppe_chunk1"
        self.chunk = max(1, wl.tasks // (workers * 4)) if tuned else 1
        self.note = "ProcessPoolExecutor(W).map, chunksize=%d" % self.chunk
        self.extra = {"chunksize": self.chunk}

    def start(self):
        """Start the executor and warm every process."""
        from concurrent.futures import ProcessPoolExecutor

        t0 = time.perf_counter()
        self.ex = ProcessPoolExecutor(max_workers=self.workers, mp_context=self.ctx)
        warm_processes(lambda f, xs: list(self.ex.map(f, xs, chunksize=1)), self.workers)
        self.startup = time.perf_counter() - t0

    def once(self):
        """One timed map."""
        t0 = time.perf_counter()
        res = list(self.ex.map(self.wl.fn, self.wl.args, chunksize=self.chunk))
        return time.perf_counter() - t0, res == self.wl.expected, None

    def close(self):
        """Shut the executor down."""
        if getattr(self, "ex", None) is not None:
            self.ex.shutdown(wait=True)
# --------------------------------------------------------------------------
# own-GIL subinterpreters via the stdlib private modules


def _step():
    """Per-task body run INSIDE a subinterpreter by ``_interpreters.exec`` (3.13).

    Only the code object travels; ``_res``, ``_f`` and ``_a`` are globals of
    the target interpreter's ``__main__``.
    """
    _res.append(_f(_a))  # noqa: F821 -- names live in the subinterpreter


class InterpAPI(object):
    """Thin adapter over ``_interpreters`` (3.13+) / ``_xxsubinterpreters`` (3.12)."""

    def __init__(self):
        """Import the module or raise ImportError with the reason to skip."""
        if sys.version_info < (3, 12):
            raise ImportError(
                "Python %d.%d has no own-GIL subinterpreters (PEP 684 needs 3.12+)" % sys.version_info[:2]
            )
        try:
            import _interpreters as mod  # 3.13+

            self.name = "_interpreters"
        except ImportError:
            try:
                import _xxsubinterpreters as mod  # 3.12

                self.name = "_xxsubinterpreters"
            except ImportError:
                raise ImportError("neither _interpreters nor _xxsubinterpreters can be imported")
        self.mod = mod
        self.accepts_code = self.name == "_interpreters"

    def create(self):
        """Create one isolated (own-GIL) interpreter and return its id."""
        return self.mod.create()

    def destroy(self, iid):
        """Destroy interpreter ``iid``."""
        self.mod.destroy(iid)

    def run(self, iid, code, shared=None):
        """Run ``code`` (source str, or a no-arg function on 3.13) in ``iid``; raise on error."""
        if self.name == "_interpreters":
            err = self.mod.exec(iid, code, shared)
            if err is not None:
                raise RuntimeError("in interpreter %s: %s" % (iid, getattr(err, "formatted", err)))
        else:
            # 3.12: run_string raises RunFailedError itself; shared may not be None.
            self.mod.run_string(iid, code, shared or {})


SUB_SETUP = """
import sys
if {here!r} not in sys.path:
    sys.path.insert(0, {here!r})
import marshal
import gilpool_workloads as _W
_f = getattr(_W, {fname!r})

def _run_share(fn, args):
    return [fn(a) for a in args]

def _share_args(kind, lo, hi):
    if kind in _W.BENCH_ARGS:
        return [_W.BENCH_ARGS[kind]] * (hi - lo)
    return list(range(lo, hi))

def _dump(path, value):
    with open(path, "wb") as fh:
        fh.write(marshal.dumps(value))

_run_share(_f, _share_args({kind!r}, 0, 20))
_run_share(_W.spin, [20])
"""

SUB_PREPARE = "_args = _share_args(_kind, _lo, _hi)\n_res = []\n"
SUB_RUN_SHARE = "_res = _run_share(_f, _args)\n_dump(_out, _res)\n"
SUB_STEP_SRC = "_res.append(_f(_a))\n"
SUB_DUMP = "_dump(_out, _res)\n"


def run_threads_timed(targets):
    """Start one thread per callable, release them together, return (seconds, errors)."""
    go = threading.Event()
    errors = []

    def wrap(fn):
        go.wait()
        try:
            fn()
        except BaseException as e:  # reported after join
            errors.append("%s: %s" % (type(e).__name__, e))

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in targets]
    for th in threads:
        th.start()
    t0 = time.perf_counter()
    go.set()
    for th in threads:
        th.join()
    return time.perf_counter() - t0, errors


class Interpreters(Runner):
    """W own-GIL subinterpreters, each driven by its own Python thread."""

    def __init__(self, wl, workers, per_task):
        """``per_task``: one cross-interpreter exec per task, else one per share."""
        Runner.__init__(self, wl, workers)
        self.per_task = per_task
        self.name = "interpreters_per_task" if per_task else "interpreters"
        self.ids = []
        self.tmpdir = None

    def start(self):
        """Create W interpreters and import the workloads in each."""
        try:
            self.api = api = InterpAPI()
        except ImportError as e:
            raise Skip(str(e))
        self.extra = {"module": api.name}
        if self.per_task:
            how = "exec(id, code, {'_a': arg})" if api.accepts_code else "run_string(id, src, {'_a': arg})"
            self.note = ("%s.%s once per task from W Python threads; results marshalled back at the "
                         "end (timed)" % (api.name, how))
        else:
            how = "exec" if api.name == "_interpreters" else "run_string"
            self.note = ("%s.create() x W (own GIL), one Python thread each; one %s per share, results "
                         "marshalled back to the main interpreter (timed)" % (api.name, how))
        self.tmpdir = tempfile.mkdtemp(prefix="gilpool_baselines_")
        t0 = time.perf_counter()
        setup = SUB_SETUP.format(here=HERE, fname=self.wl.fname, kind=self.wl.kind)
        for _ in range(self.workers):
            iid = api.create()
            self.ids.append(iid)
            api.run(iid, setup)
        self.startup = time.perf_counter() - t0
        self.outs = [os.path.join(self.tmpdir, "share%d.marshal" % k) for k in range(self.workers)]

    def once(self):
        """One timed run of every share, results back in the main interpreter."""
        api, wl, workers, outs = self.api, self.wl, self.workers, self.outs
        # untimed: build each interpreter's argument list
        for k, iid in enumerate(self.ids):
            lo, hi = wl.share(k, workers)
            api.run(iid, SUB_PREPARE, {"_kind": wl.kind, "_lo": lo, "_hi": hi, "_out": outs[k]})
        results = [None] * workers

        def make_target(k, iid):
            lo, hi = wl.share(k, workers)

            def whole_share():
                api.run(iid, SUB_RUN_SHARE)
                with open(outs[k], "rb") as fh:
                    results[k] = marshal.loads(fh.read())

            def task_by_task():
                run = api.run
                args = wl.args[lo:hi]
                if api.accepts_code:
                    for a in args:
                        run(iid, _step, {"_a": a})
                else:
                    for a in args:
                        run(iid, SUB_STEP_SRC, {"_a": a})
                run(iid, SUB_DUMP)
                with open(outs[k], "rb") as fh:
                    results[k] = marshal.loads(fh.read())

            return task_by_task if self.per_task else whole_share

        secs, errors = run_threads_timed([make_target(k, iid) for k, iid in enumerate(self.ids)])
        if errors:
            raise RuntimeError("; ".join(errors))
        merged = []
        for part in results:
            merged.extend(part or [])
        return secs, merged == wl.expected, None

    def close(self):
        """Destroy the interpreters and the scratch files."""
        for iid in self.ids:
            try:
                self.api.destroy(iid)
            except Exception as e:  # keep destroying the others
                log("destroy(%s) failed: %s" % (iid, e))
        self.ids = []
        if self.tmpdir is not None:
            for fname in os.listdir(self.tmpdir):
                os.unlink(os.path.join(self.tmpdir, fname))
            os.rmdir(self.tmpdir)
            self.tmpdir = None


# --------------------------------------------------------------------------
# ceiling: independent processes, no IPC inside the timed region


CHILD_SUB_RUN = """
import time as _time
_t0 = _time.perf_counter()
_res = _run_share(_f, _args)
_dump(_out, (len(_res), sum(_res), _time.perf_counter() - _t0))
"""


def ceiling_child(kind, lo, hi, where="main"):
    """Hidden child mode: warm up, say "ready", then for each "go" run the share and report.

    ``where`` is ``main`` (this interpreter) or ``sub`` (an own-GIL
    subinterpreter this child creates; the share runs and is timed there).
    """
    out = sys.stdout
    if where == "sub":
        api = InterpAPI()
        iid = api.create()
        tmpdir = tempfile.mkdtemp(prefix="gilpool_ceiling_sub_")
        path = os.path.join(tmpdir, "share.marshal")
        api.run(iid, SUB_SETUP.format(here=HERE, fname=workload_function(kind), kind=kind))
        api.run(iid, SUB_PREPARE, {"_kind": kind, "_lo": lo, "_hi": hi, "_out": path})

        def run():
            api.run(iid, CHILD_SUB_RUN)
            with open(path, "rb") as fh:
                return marshal.loads(fh.read())
    else:
        fn = getattr(W, workload_function(kind))
        args = share_args(kind, lo, hi)
        run_share(fn, args[:20])

        def run():
            t0 = time.perf_counter()
            res = run_share(fn, args)
            return len(res), sum(res), time.perf_counter() - t0
    try:
        run()  # warm up (the sub-interpreter's set-up already ran 20 calls)
        out.write("ready\n")
        out.flush()
        for line in sys.stdin:
            cmd = line.strip()
            if cmd != "go":
                break
            n, total, elapsed = run()
            out.write(json.dumps({"elapsed": elapsed, "n": n, "sum": total}) + "\n")
            out.flush()
    finally:
        if where == "sub":
            api.destroy(iid)
            if os.path.exists(path):
                os.unlink(path)
            os.rmdir(tmpdir)
    return 0


class Ceiling(Runner):
    """W independent interpreters in W processes, each timing its own share."""

    def __init__(self, wl, workers, in_sub=False):
        """No processes yet. ``in_sub``: each child runs its share in a subinterpreter."""
        Runner.__init__(self, wl, workers)
        self.procs = []
        self.where = "sub" if in_sub else "main"
        self.name = "ceiling_sub" if in_sub else "ceiling"
        self.note = (
            "W independent processes (%s), each runs its share sequentially after 'go'%s; seconds = slowest "
            "child's own elapsed (no start-up, no IPC); wall_s = go-to-last-answer seen by the parent"
            % (os.path.basename(sys.executable),
               " inside an own-GIL subinterpreter it created" if in_sub else ""))

    def start(self):
        """Start W children and wait until each has warmed up."""
        if self.where == "sub":
            try:
                InterpAPI()
            except ImportError as e:
                raise Skip(str(e))
        t0 = time.perf_counter()
        for k in range(self.workers):
            lo, hi = self.wl.share(k, self.workers)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), "--ceiling-child", self.wl.kind, str(lo), str(hi),
                     self.where],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    universal_newlines=True,
                    bufsize=1,
                )
            )
        for p in self.procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError("ceiling child did not start (got %r)" % (line,))
        self.startup = time.perf_counter() - t0
        self.expected_sums = []
        for k in range(self.workers):
            lo, hi = self.wl.share(k, self.workers)
            self.expected_sums.append((hi - lo, sum(self.wl.expected[lo:hi])))

    def once(self):
        """Release every child at once; the slowest child's own time counts."""
        t0 = time.perf_counter()
        for p in self.procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        answers = []
        for p in self.procs:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("a ceiling child exited (status %s)" % (p.poll(),))
            answers.append(json.loads(line))
        wall = time.perf_counter() - t0
        elapsed = [a["elapsed"] for a in answers]
        ok = [(a["n"], a["sum"]) for a in answers] == self.expected_sums
        return max(elapsed), ok, {"wall_s": round(wall, 6), "child_seconds": [round(x, 6) for x in elapsed]}

    def close(self):
        """Tell every child to quit; kill one that does not."""
        for p in self.procs:
            try:
                p.stdin.write("quit\n")
                p.stdin.close()
            except (OSError, ValueError):
                pass
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()
        self.procs = []


def make_runners(names, wl, workers, ctx):
    """The runners of ``names`` (in ``ENTRY_NAMES`` order), not started."""
    makers = {
        "sequential": lambda: Sequential(wl, workers),
        "threads": lambda: Threads(wl, workers),
        "mp_pool_default": lambda: MpPool(wl, workers, ctx, chunk1=False),
        "mp_pool_chunk1": lambda: MpPool(wl, workers, ctx, chunk1=True),
        "ppe_chunk1": lambda: Ppe(wl, workers, ctx, tuned=False),
        "ppe_tuned": lambda: Ppe(wl, workers, ctx, tuned=True),
        "interpreters": lambda: Interpreters(wl, workers, per_task=False),
        "interpreters_per_task": lambda: Interpreters(wl, workers, per_task=True),
        "ceiling": lambda: Ceiling(wl, workers),
        "ceiling_sub": lambda: Ceiling(wl, workers, in_sub=True),
    }
    return [makers[n]() for n in names]


def error_text(e):
    """``Type: message`` of an exception."""
    return "%s: %s" % (type(e).__name__, e)


def run_batch(runner, repeat):
    """Start ``runner``, time it ``repeat`` times, close it; return its entry."""
    try:
        runner.start()
        times, ok, extras = [], True, []
        for _ in range(repeat):
            secs, good, extra = runner.once()
            times.append(secs)
            extras.append(extra)
            ok = ok and good
    except Skip as e:
        return {"name": runner.name, "skipped": str(e)}
    finally:
        runner.close()
    return runner.entry(times, ok, extras[times.index(min(times))])


# --------------------------------------------------------------------------
# driver


def parse_args(argv):
    """Parse the command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description="Measure Python-side baselines for gilpool; prints one JSON object on stdout.")
    p.add_argument("--workload", choices=["heavy", "library", "trivial"], default="heavy")
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=3, help="best of R (default 3)")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(ENTRY_NAMES))
    p.add_argument("--start-method", default=None,
                   help="multiprocessing start method (default: the platform default)")
    p.add_argument("--serve", action="store_true",
                   help="start every entry, then time one run per 'run NAME' line on stdin")
    p.add_argument("--ceiling-child", nargs=4, metavar=("KIND", "LO", "HI", "WHERE"), help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.ceiling_child:
        return ns
    if ns.tasks < 1 or ns.workers < 1 or ns.repeat < 1:
        p.error("--tasks, --workers and --repeat must be >= 1")
    names = [n.strip() for n in ns.only.split(",") if n.strip()] if ns.only else list(ENTRY_NAMES)
    unknown = [n for n in names if n not in ENTRY_NAMES]
    if unknown:
        p.error("unknown entry name(s) %s; known: %s" % (",".join(unknown), ",".join(ENTRY_NAMES)))
    ns.names = [n for n in ENTRY_NAMES if n in names]
    if ns.start_method is not None and ns.start_method not in multiprocessing.get_all_start_methods():
        p.error("start method %r not available here (%s)" % (
            ns.start_method, ",".join(multiprocessing.get_all_start_methods())))
    return ns


def report_header(ns, wl, start_method):
    """The fields that describe the run (both modes)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "tool": "gilpool_baselines",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "cpus": os.cpu_count(),
        "affinity_cpus": affinity,
        "platform": platform.platform(),
        "workload": ns.workload,
        "function": "gilpool_workloads." + wl.fname,
        "arg": CONSTANT.get(ns.workload, "i"),
        "heavy_n": W.HEAVY_N,
        "tasks": ns.tasks,
        "workers": ns.workers,
        "start_method": start_method,
    }


def write_line(obj):
    """One JSON object on one stdout line."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(ns, wl, runners, header):
    """Start every runner, say so, then time one run per ``run NAME`` line until ``quit``/EOF.

    The first stdout line is the header plus ``"ready"``: per entry its
    ``startup_s``, note and extras, or ``"skipped"``/``"error"``.  Each
    ``run NAME`` answers one line ``{"name", "seconds", "verified", ...}`` or
    ``{"name", "error"}``.  Unknown commands answer ``{"error": ...}``.
    """
    started, ready = {}, []
    try:
        for r in runners:
            try:
                r.start()
                started[r.name] = r
                status = {"name": r.name, "workers": r.workers, "tasks": wl.tasks,
                          "startup_s": None if r.startup is None else round(r.startup, 6), "note": r.note}
                status.update(r.extra)
                log("%-22s started%s" % (r.name, "" if r.startup is None else " in %.3fs" % r.startup))
            except Skip as e:
                r.close()
                status = {"name": r.name, "skipped": str(e)}
                log("%-22s skipped: %s" % (r.name, e))
            except Exception as e:
                r.close()
                status = {"name": r.name, "error": error_text(e)}
                log("%-22s ERROR: %s" % (r.name, status["error"]))
            ready.append(status)
        header = dict(header, ready=ready, note=NOTE)
        write_line(header)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] != "run" or len(words) != 2:
                write_line({"error": "unknown command %r (want 'run NAME' or 'quit')" % line.strip()})
                continue
            r = started.get(words[1])
            if r is None:
                write_line({"name": words[1], "error": "entry %r is not running here" % words[1]})
                continue
            try:
                secs, ok, extra = r.once()
            except Exception as e:
                write_line({"name": r.name, "error": error_text(e)})
                continue
            answer = {"name": r.name, "seconds": round(secs, 6), "verified": bool(ok)}
            answer.update(extra or {})
            write_line(answer)
    finally:
        for r in started.values():
            r.close()
    return 0


def main(argv=None):
    """Run the requested entries and print the JSON report."""
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    if ns.ceiling_child:
        kind, lo, hi, where = ns.ceiling_child
        return ceiling_child(kind, int(lo), int(hi), where)

    t_all = time.perf_counter()
    before = loadavg()
    method = ns.start_method
    if ns.serve and method is None and "forkserver" in multiprocessing.get_all_start_methods():
        method = "forkserver"  # pools live side by side here: no fork of a threaded process
    ctx = multiprocessing.get_context(method)
    start_method = ctx.get_start_method()
    wl = Workload(ns.workload, ns.tasks)
    workers, repeat = ns.workers, ns.repeat
    runners = make_runners(ns.names, wl, workers, ctx)
    header = report_header(ns, wl, start_method)
    if ns.serve:
        log("python %s, %s x %d tasks, %d workers, serving, start method %s" % (
            platform.python_version(), ns.workload, ns.tasks, workers, start_method))
        return serve(ns, wl, runners, header)
    log("python %s, %s x %d tasks, %d workers, best of %d, start method %s" % (
        platform.python_version(), ns.workload, ns.tasks, workers, repeat, start_method))

    entries, failed = [], False
    snap_all = cpu_snapshot()
    for runner in runners:
        name = runner.name
        t0 = time.perf_counter()
        snap = cpu_snapshot()
        try:
            entry = run_batch(runner, repeat)
        except Exception as e:
            entry = {"name": name, "error": error_text(e)}
            failed = True
        if "seconds" in entry:
            entry["foreign_cpu_pct"] = foreign_cpu_pct(snap, cpu_snapshot())
        if "skipped" in entry:
            log("%-22s skipped: %s" % (name, entry["skipped"]))
        elif "error" in entry:
            log("%-22s ERROR: %s" % (name, entry["error"]))
        else:
            if not entry["verified"]:
                failed = True
            log("%-22s best %.4fs  %10.1f tasks/s  %9.2f us/task  startup %s  (%.1fs total, foreign cpu %s%%)%s" % (
                name, entry["seconds"], entry["tasks_per_s"], entry["per_task_us"],
                "-" if entry["startup_s"] is None else "%.3fs" % entry["startup_s"],
                time.perf_counter() - t0, entry["foreign_cpu_pct"],
                "" if entry["verified"] else "  WRONG RESULTS"))
        entries.append(entry)

    seq = [e for e in entries if e["name"] == "sequential" and "seconds" in e]
    if seq:
        for e in entries:
            if "seconds" in e and e["seconds"] > 0:
                e["speedup_vs_sequential"] = round(seq[0]["seconds"] / e["seconds"], 3)

    report = dict(header)
    report.update({
        "repeat": repeat,
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "foreign_cpu_pct": foreign_cpu_pct(snap_all, cpu_snapshot()),
        "total_s": round(time.perf_counter() - t_all, 3),
        "note": NOTE,
        "entries": entries,
    })
    write_line(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

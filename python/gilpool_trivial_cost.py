#!/usr/bin/env python3
"""What the trivial workload's timed region holds, per input, in one thread.

Usage::

    python gilpool_trivial_cost.py [--tasks N] [--chunk C] [--rounds R] [--sub]

The ``ceiling`` of ``gilpool bench`` times, in each child process, only
``[inc(a) for a in args]`` over a list of ``int`` arguments built before its
clock starts, and frees the results after it stops.  A ``map`` through gilpool
has more inside its clock: each input ``int`` is made from a Rust ``i64`` in
the worker's interpreter, and the chunk's inputs and results are freed there.
This script times, on this one thread (no scheduling, no other process), the
ceiling's loop and then the same loop with each of those steps added, over
``N`` inputs (default 20,000) in chunks of ``C`` (default 1,024, gilpool's
largest guided chunk), and prints the median over the rounds of the time per
input and its ratio to the ceiling's:

* ``ceiling``          ``[inc(a) for a in args]``, arguments made and results
                       freed outside the clock;
* ``+ results freed``  the result lists freed inside it;
* ``+ inputs made``    the argument ints made inside it too (from ``range``,
                       a chunk at a time) and freed;
* ``gilpool's loop``   what a gilpool chunk runs in Python: the inputs made
                       into a list, ``each(inc, iter(xs), out)`` (gilpool's
                       loop, with ``out.append``, which keeps the results
                       before an input that raises), both lists freed.  (A
                       chunk reads the results back in Rust, not timed here.)

One warm-up round runs first, and each round runs the four in a rotated
order.

``--sub`` runs the same in an own-GIL subinterpreter (CPython 3.13+,
``_interpreters``), where gilpool's workers run.
"""

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

BODY = r"""
import sys, time
sys.path.insert(0, {here!r})
from gilpool_workloads import inc

def each(f, inputs, out):
    for x in inputs:
        out.append(f(x))

def chunks(n, c):
    return [(lo, min(lo + c, n)) for lo in range(0, n, c)]

def ceiling(n, c):
    args = [list(range(lo, hi)) for lo, hi in chunks(n, c)]
    t0 = time.perf_counter()
    res = [[inc(a) for a in xs] for xs in args]
    t = time.perf_counter() - t0
    del res
    return t

def results_freed(n, c):
    args = [list(range(lo, hi)) for lo, hi in chunks(n, c)]
    t0 = time.perf_counter()
    for xs in args:
        res = [inc(a) for a in xs]
        del res
    return time.perf_counter() - t0

def inputs_made(n, c):
    spans = chunks(n, c)
    t0 = time.perf_counter()
    for lo, hi in spans:
        xs = list(range(lo, hi))
        res = [inc(a) for a in xs]
        del xs, res
    return time.perf_counter() - t0

def gilpool_loop(n, c):
    spans = chunks(n, c)
    t0 = time.perf_counter()
    for lo, hi in spans:
        xs = list(range(lo, hi))
        out = []
        each(inc, iter(xs), out)
        del xs, out
    return time.perf_counter() - t0

def run(n, c, rounds):
    fs = [("ceiling", ceiling), ("results_freed", results_freed),
          ("inputs_made", inputs_made), ("gilpool_loop", gilpool_loop)]
    rows = {{k: [] for k, _ in fs}}
    for _, f in fs:
        f(n, c)
    for r in range(rounds):
        for k, f in fs[r % 4:] + fs[:r % 4]:
            rows[k].append(f(n, c))
    return rows
"""

LABELS = (
    ("ceiling", "ceiling"),
    ("results_freed", "+ results freed"),
    ("inputs_made", "+ inputs made"),
    ("gilpool_loop", "gilpool's loop"),
)


def in_main(n, c, rounds):
    """The rows, timed in this (main) interpreter."""
    ns = {}
    exec(BODY.format(here=HERE), ns)
    return ns["run"](n, c, rounds)


def in_sub(n, c, rounds):
    """The rows, timed in an own-GIL subinterpreter."""
    try:
        import _interpreters
    except ImportError:
        sys.exit("--sub needs CPython 3.13+ (_interpreters); this is %s" % sys.version.split()[0])
    import json
    import tempfile

    iid = _interpreters.create("isolated")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rows.json")
        code = BODY.format(here=HERE) + (
            "\nimport json\nwith open(%r, 'w') as _f:\n    json.dump(run(%d, %d, %d), _f)\n"
            % (out, n, c, rounds)
        )
        err = _interpreters.exec(iid, code)
        _interpreters.destroy(iid)
        if err is not None:
            sys.exit("the subinterpreter failed: %s" % (err,))
        with open(out) as f:
            return json.load(f)


def main():
    """Time the rows and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=20000, help="inputs per timed run (default 20000)")
    p.add_argument("--chunk", type=int, default=1024, help="inputs per chunk (default 1024)")
    p.add_argument("--rounds", type=int, default=41, help="rounds (default 41)")
    p.add_argument("--sub", action="store_true", help="run in an own-GIL subinterpreter (3.13+)")
    ns = p.parse_args()
    if ns.tasks < 1 or ns.chunk < 1 or ns.rounds < 1:
        p.error("--tasks, --chunk and --rounds must be >= 1")
    rows = (in_sub if ns.sub else in_main)(ns.tasks, ns.chunk, ns.rounds)
    where = "an own-GIL subinterpreter" if ns.sub else "the main interpreter"
    print("Python %s, %s, %d inputs in chunks of %d, median of %d rounds"
          % (sys.version.split()[0], where, ns.tasks, ns.chunk, ns.rounds))
    base = statistics.median(rows["ceiling"])
    for key, label in LABELS:
        med = statistics.median(rows[key])
        print("%-18s %7.1f ns per input  %5.2fx the ceiling's" % (label, med / ns.tasks * 1e9, med / base))


if __name__ == "__main__":
    main()

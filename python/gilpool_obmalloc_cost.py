#!/usr/bin/env python3
"""Time one function in the main interpreter and in subinterpreters of four configs.

Usage::

    python gilpool_obmalloc_cost.py [--calls N] [--rounds R] [--function NAME]

CPython 3.13+ (``_interpreters``).  Everything runs on this one thread, so the
comparison is free of scheduling: each round times ``N`` calls of
``gilpool_workloads.NAME()`` (default ``heavy``) in the main interpreter, then
in each subinterpreter, and the report gives, per config, the median over the
rounds of ``main seconds / subinterpreter seconds`` (below 1: the
subinterpreter is slower) with the middle half of the ratios.  The configs
differ in the two settings an own-GIL interpreter needs:

* ``legacy``               main's allocator (obmalloc) and main's GIL;
* ``legacy+own_obmalloc``  its own obmalloc state, main's GIL;
* ``isolated+shared_gil``  the isolated config with main's GIL (own obmalloc);
* ``isolated``             own obmalloc and own GIL (what gilpool creates).

An interpreter with its own GIL must also have its own obmalloc state, so a
cost that follows ``use_main_obmalloc`` is one every own-GIL subinterpreter
pays, whoever creates it.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gilpool_workloads as W  # noqa: E402

SETUP = """
import sys, time
sys.path.insert(0, {here!r})
import gilpool_workloads as _W
_f = getattr(_W, {name!r})

def _time(n):
    t0 = time.perf_counter()
    for _ in range(n):
        _f()
    return time.perf_counter() - t0
"""


def main():
    """Run the rounds and print one line per config."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=20, help="calls per timed run (default 20)")
    p.add_argument("--rounds", type=int, default=60, help="rounds (default 60)")
    p.add_argument("--function", default="heavy", help="a no-argument function of gilpool_workloads")
    ns = p.parse_args()
    if ns.calls < 1 or ns.rounds < 1:
        p.error("--calls and --rounds must be >= 1")
    try:
        import _interpreters as interp
    except ImportError:
        p.error("Python %d.%d has no _interpreters module (3.13+ needed)" % sys.version_info[:2])
    fn = getattr(W, ns.function, None)
    if not callable(fn):
        p.error("gilpool_workloads has no function %r" % ns.function)
    configs = {
        "legacy": interp.new_config("legacy"),
        "legacy+own_obmalloc": interp.new_config(
            "legacy", use_main_obmalloc=False, check_multi_interp_extensions=True),
        "isolated+shared_gil": interp.new_config("isolated", gil="shared"),
        "isolated": interp.new_config("isolated"),
    }
    out = tempfile.NamedTemporaryFile(prefix="gilpool_obmalloc_", delete=False)
    out.close()
    ids = {}
    try:
        for name, cfg in configs.items():
            iid = interp.create(cfg)
            ids[name] = iid
            interp.exec(iid, SETUP.format(here=HERE, name=ns.function))

        def in_main():
            t0 = time.perf_counter()
            for _ in range(ns.calls):
                fn()
            return time.perf_counter() - t0

        def in_sub(name):
            err = interp.exec(ids[name], "open(%r, 'w').write(repr(_time(%d)))" % (out.name, ns.calls))
            if err is not None:
                raise RuntimeError("in %s: %s" % (name, err.formatted))
            with open(out.name) as fh:
                return float(fh.read())

        in_main()
        for name in ids:
            in_sub(name)
        mains, subs = [], {name: [] for name in ids}
        for _ in range(ns.rounds):
            mains.append(in_main())
            for name in ids:
                subs[name].append(in_sub(name))
    finally:
        for iid in ids.values():
            interp.destroy(iid)
        os.unlink(out.name)
    print("Python %s, %d rounds of %d calls of gilpool_workloads.%s(); main interpreter median %.4f s"
          % (sys.version.split()[0], ns.rounds, ns.calls, ns.function, statistics.median(mains)))
    for name, times in subs.items():
        ratios = sorted(m / s for m, s in zip(mains, times))
        q = len(ratios) // 4
        print("%-20s main/sub median %.3f (middle half %.3f-%.3f)"
              % (name, statistics.median(ratios), ratios[q], ratios[len(ratios) - 1 - q]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

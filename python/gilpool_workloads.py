"""Workloads for gilpool's tests, demo and benchmarks.

Pure Python, standard library only, runs on CPython 3.9-3.13.  The module is
imported inside embedded main interpreters *and* own-GIL subinterpreters, so it
has no side effects at import time: no threads, no I/O, no extension modules
beyond ``time`` (stdlib modules needed by one function are imported inside that
function).

Functions
---------
``inc(x)``                 -> ``x + 1`` (the "trivial" task).
``heavy(n=HEAVY_N)``       -> deterministic CPU-bound integer loop, ~1 ms at
                              ``HEAVY_N`` under CPython 3.13 on the 2-vCPU dev VM.
``heavy_batch(xs)``        -> ``[heavy(x) for x in xs]`` (batched handlers).
``library(n=LIBRARY_N)``   -> diffs two generated word lists with ``difflib`` (a real
                              pure-Python library that allocates as it goes), ~0.3-1 ms.
``spin(ms)``               -> busy-waits ``ms`` milliseconds of wall time, returns ``ms``.
``fib(n)``                 -> naive recursive Fibonacci (CPU load; exponential).
``fib_fast(n)``            -> iterative Fibonacci (big values, e.g. ``fib_fast(200)``).
``echo(*args, **kwargs)``  -> ``[list(args), kwargs]``.
``add(a, b)``              -> ``a + b``.
``fail(msg)``              -> raises ``ValueError(msg)``.
``kinds()``                -> dict with one value of every convertible kind.
``use_stdlib(x)``          -> uses datetime, json, re, decimal, hashlib; returns a str.
``interp_id()``            -> id of the running interpreter (0 = main), ``-1`` if unknowable.
``nest(n, kind="list")``   -> ``n`` levels of nested lists, tuples or dicts (built iteratively).
``depth(v)``               -> how deeply lists, tuples and dicts nest in ``v`` (iterative).
``cycle(kind="list")``     -> a list or dict that contains itself.
``NOT_CALLABLE``           -> ``42``, a module attribute that is not callable.
"""

import time

__all__ = [
    "HEAVY_N",
    "HEAVY_MS",
    "HEAVY_RESULT",
    "NOT_CALLABLE",
    "inc",
    "heavy",
    "heavy_batch",
    "LIBRARY_N",
    "library",
    "BENCH_ARGS",
    "spin",
    "fib",
    "fib_fast",
    "echo",
    "add",
    "fail",
    "kinds",
    "use_stdlib",
    "interp_id",
    "nest",
    "depth",
    "cycle",
]

#: Iteration count for :func:`heavy` used by the benches.  Calibrated so one
#: ``heavy(HEAVY_N)`` call takes about 1 ms under CPython 3.13.0 on the 2-vCPU
#: development VM (median of 15x100 calls: 3.13.0 1.00-1.02 ms, 3.12.1 0.95 ms,
#: 3.11.7 0.70 ms, 3.10.13 0.85 ms, 3.9.18 0.99 ms).
HEAVY_N = 4300

#: The nominal cost of ``heavy(HEAVY_N)`` in milliseconds (documentation only).
HEAVY_MS = 1.0

#: ``heavy(HEAVY_N)`` -- the value every bench task must return (checked by tests).
HEAVY_RESULT = 792586349

#: A module-level attribute that is not callable (for "not callable" error tests).
NOT_CALLABLE = 42

_MASK = 0x3FFFFFFF  # keep the accumulator a small (one-digit, 30-bit) int
_MOD = 2147483647  # 2**31 - 1, the MINSTD Lehmer generator modulus


def inc(x):
    """Return ``x + 1``: the trivial task, dominated by dispatch overhead."""
    return x + 1


def heavy(n=HEAVY_N):
    """Run ``n`` rounds of a deterministic integer loop and return its checksum.

    Each round advances a MINSTD-style generator (``x = (x * 48271 + i) %
    (2**31 - 1)``) and folds it into a 30-bit accumulator, so the result
    depends on every round and cannot be short-circuited.  Pure Python, no
    allocation beyond small ints, no I/O, no GIL release: the canonical
    CPU-bound task.  ``heavy(HEAVY_N)`` takes about 1 ms under CPython 3.13 on
    the development VM and returns :data:`HEAVY_RESULT`.

    ``n`` must be a non-negative int; the result is an int in ``[0, 2**30)``.
    """
    acc = n & _MASK
    x = 1
    for i in range(n):
        x = (x * 48271 + i) % _MOD
        acc = (acc * 31 + (x ^ (acc >> 11))) & _MASK
    return acc


def heavy_batch(xs):
    """Batched form of :func:`heavy`: list in, list out, same order."""
    return [heavy(x) for x in xs]


#: Word count for :func:`library` used by the benches: 0.59 ms per call
#: (sequential, 3.13.0, ``gilpool bench --workload library`` at 18:05 UTC on
#: 2026-12-02, the development VM running about 3x slower than when quiet).
LIBRARY_N = 80


def library(n=LIBRARY_N):
    """Diff two generated lists of ``n`` words with :mod:`difflib`; return a checksum.

    The "real library" workload: ``difflib.SequenceMatcher`` and
    ``difflib.unified_diff`` are pure Python and build dicts, lists, tuples and
    strings as they go, so -- unlike :func:`heavy` -- the object allocator is
    on the hot path.  The words come from the same MINSTD generator as
    :func:`heavy`; the second list has every 7th word replaced and every 29th
    (from the 4th) removed.  Deterministic: the result depends on ``n`` only.
    """
    import difflib

    words = []
    x = 12345
    for _ in range(n):
        x = (x * 48271) % _MOD
        words.append("w%d" % (x % 4099))
    other = list(words)
    for i in range(0, n, 7):
        other[i] = "x%d" % (i % 13)
    del other[3::29]
    matcher = difflib.SequenceMatcher(None, words, other, autojunk=False)
    blocks = matcher.get_matching_blocks()
    lines = sum(1 for _ in difflib.unified_diff(words, other, lineterm="", n=1))
    return sum(b.size for b in blocks) * 1000003 + len(blocks) * 1009 + lines


#: The bench workloads whose every task takes the same argument: function
#: name -> that argument (the benches and ``gilpool_baselines.py`` use it).
BENCH_ARGS = {"heavy": HEAVY_N, "library": LIBRARY_N}


def spin(ms):
    """Busy-loop (holding the GIL) for ``ms`` milliseconds of wall time; return ``ms``.

    Uses ``time.perf_counter``; ``ms`` may be an int or a float.  Used to build
    skewed loads (a few long tasks among many short ones).
    """
    deadline = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < deadline:
        pass
    return ms


def fib(n):
    """Naive doubly-recursive Fibonacci: ``fib(0) == 0``, ``fib(1) == 1``.

    Exponential on purpose (a CPU-bound, call-heavy load): ``fib(25)`` takes
    tens of milliseconds.  Use :func:`fib_fast` for large ``n``.
    """
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def fib_fast(n):
    """Iterative Fibonacci, same values as :func:`fib`; big ints for ``n > 92``."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def echo(*args, **kwargs):
    """Return ``[list(args), kwargs]`` -- checks argument passing both ways."""
    return [list(args), kwargs]


def add(a, b):
    """Return ``a + b``."""
    return a + b


def fail(msg):
    """Always raise ``ValueError(msg)`` -- checks exception capture."""
    raise ValueError(msg)


def kinds():
    """Return a dict with one value of each kind a converter must handle.

    Keys and values (deterministic, the same on every call and version)::

        "none": None, "bool": True, "false": False, "int": 42, "neg": -7,
        "bigint": 2**100, "float": 1.5, "str": "h\\u00e9llo \\u2603",
        "bytes": b"\\x00\\x01\\xff", "list": [1, "two", None],
        "tuple": (1, 2.5, "x"), "dict": {"a": 1, "b": [True]}
    """
    return {
        "none": None,
        "bool": True,
        "false": False,
        "int": 42,
        "neg": -7,
        "bigint": 2**100,
        "float": 1.5,
        "str": "h\u00e9llo \u2603",
        "bytes": b"\x00\x01\xff",
        "list": [1, "two", None],
        "tuple": (1, 2.5, "x"),
        "dict": {"a": 1, "b": [True]},
    }


def use_stdlib(x):
    """Really use datetime, json, re, decimal and hashlib; return a deterministic str.

    ``x`` must be an int.  The result is
    ``"<date>|<json>|<regex>|<decimal>|<sha256[:16]>"``, e.g. for ``x = 3``::

        '2024-01-04|{"x": 3, "sq": [0, 1, 4]}|3-3|4.29|607e16d06f293091'

    The five modules are imported inside the call (not at module import).
    They are the ones behind DESIGN.md pitfalls 1 and 5: concurrent
    subinterpreters crash in ``Py_EndInterpreter`` after importing
    ``datetime``/``decimal``/``hashlib`` unless the main interpreter imported
    them first; 3.12.1 refuses ``_decimal`` in an own-GIL interpreter
    (``decimal`` falls back to ``_pydecimal``) and, without that prelude,
    aborts at exit ("double free or corruption") after ``hashlib`` was used
    in a subinterpreter (reproduced here).  The returned value is the same in
    every interpreter and version.
    """
    import datetime
    import decimal
    import hashlib
    import json
    import re

    day = (datetime.date(2024, 1, 1) + datetime.timedelta(days=x)).isoformat()
    doc = json.dumps(json.loads(json.dumps({"x": x, "sq": [i * i for i in range(3)]})))
    m = re.fullmatch(r"(\d+)-(\d+)", "%d-%d" % (x, x))
    matched = "%s-%s" % m.groups() if m else "nomatch"
    ctx = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN)
    dec = ctx.divide(decimal.Decimal(x) * 10, decimal.Decimal(7)).quantize(
        decimal.Decimal("0.01"), rounding=decimal.ROUND_HALF_EVEN, context=ctx
    )
    digest = hashlib.sha256(("gilpool:%d" % x).encode("ascii")).hexdigest()[:16]
    return "|".join([day, doc, matched, str(dec), digest])


def interp_id():
    """Return the id of the interpreter running this call, or ``-1`` if unknowable.

    0 is the main interpreter.  Uses ``_interpreters.get_current()`` (3.13+,
    returns ``(id, whence)``) or else ``_xxsubinterpreters.get_current()``
    (3.9-3.12, returns an ``InterpreterID``; on 3.9-3.11 it exists too and
    reports 0 in the main interpreter).  Every import and call is guarded:
    where neither module can be imported (or the call fails) the result is
    ``-1``.
    """
    try:
        import _interpreters as mod  # CPython 3.13+
    except Exception:
        try:
            import _xxsubinterpreters as mod  # CPython 3.12
        except Exception:
            return -1
    try:
        cur = mod.get_current()
        if isinstance(cur, tuple):
            cur = cur[0]
        return int(cur)
    except Exception:
        return -1


def nest(n, kind="list"):
    """Return ``n`` levels of nested containers around ``0``, built without recursion.

    ``kind`` is ``"list"`` (``[[...[0]...]]``), ``"tuple"`` (``((...(0,)...),)``)
    or ``"dict"`` (``{"k": {"k": ... {"k": 0}}}``).  ``depth(nest(n, kind)) == n``.
    """
    v = 0
    for _ in range(n):
        if kind == "list":
            v = [v]
        elif kind == "tuple":
            v = (v,)
        elif kind == "dict":
            v = {"k": v}
        else:
            raise ValueError("kind must be list, tuple or dict, not %r" % (kind,))
    return v


def depth(v):
    """Return how deeply lists, tuples and dicts nest in ``v`` (``[]`` is 1, ``0`` is 0).

    Iterative (an explicit stack), so any depth works; dict keys and values both count.
    """
    deepest = 0
    stack = [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, (list, tuple)):
            children = x
        elif isinstance(x, dict):
            children = [c for kv in x.items() for c in kv]
        else:
            continue
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in children)
    return deepest


def cycle(kind="list"):
    """Return a container that holds itself: ``l = []; l.append(l)`` or ``d["self"] = d``."""
    if kind == "list":
        v = []
        v.append(v)
    elif kind == "dict":
        v = {}
        v["self"] = v
    else:
        raise ValueError("kind must be list or dict, not %r" % (kind,))
    return v


def buffer_head(mv):
    """Return ``(mv.format, list(mv.shape), mv.readonly, first item)`` of a buffer argument."""
    mv = memoryview(mv)
    first = mv[(0,) * mv.ndim] if mv.nbytes else None
    return (mv.format, list(mv.shape), bool(mv.readonly), first)


def buffer_len(mv):
    """Return ``memoryview(mv).nbytes``: touches the buffer's header, not its bytes."""
    return memoryview(mv).nbytes


def buffer_sum(mv):
    """Return the sum of a buffer's items with ``numpy.frombuffer`` (no copy): needs numpy."""
    import numpy

    mv = memoryview(mv)
    return float(numpy.frombuffer(mv, dtype=mv.format).sum())

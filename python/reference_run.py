#!/usr/bin/env python3
"""Plain-Python reference for ``gilpool run``: call a function once per JSON Lines task.

Usage::

    python reference_run.py TARGET TASKS [-o OUT] [--bytes error|list|hex|latin1]

``TARGET`` is ``path/to/file.py:function`` or ``pkg.module:function``; the part
after the LAST ``:`` may be a dotted attribute path (``mod:Class.method``).  A
target whose module part ends in ``.py`` or contains a path separator is loaded
from that file (its directory is put first on ``sys.path`` so it can import its
siblings; the module is registered in ``sys.modules`` under the file's stem);
otherwise the module is imported by name with the current directory first on
``sys.path`` (this script's own directory, which holds ``gilpool_workloads``,
is on it too).  The target must be callable.

``TASKS`` is a UTF-8 JSON Lines file (``-`` = stdin).  Each non-blank line is
one task:

* a JSON array -> positional arguments: ``[1, 2]`` calls ``f(1, 2)``;
* a JSON object with optional keys ``"args"`` (array, default ``[]``) and
  ``"kwargs"`` (object, default ``{}``) and no other keys:
  ``{"args": [1], "kwargs": {"b": 2}}`` calls ``f(1, b=2)``.

Lines are split on ``\\n`` only (a trailing ``\\r`` is ignored as whitespace).
Blank (whitespace-only) lines are skipped and produce no output.  Arguments are
decoded with ``json.loads`` (ints of any size, floats, str, bool, None, lists,
dicts with str keys).  Tasks run one after another in this one process.

Output: exactly one line per task, in input order, on stdout (or ``-o OUT``):

* ``{"ok": <result>}`` when the call returned, or
* ``{"error": {"type": <exception class __name__>, "message": str(exc)}}``
  when it raised (any ``Exception``; e.g. ``fail("boom")`` gives
  ``{"error": {"type": "ValueError", "message": "boom"}}``), or
* ``{"error": {"type": "InvalidTask", "message": ...}}`` for a line that is
  not valid JSON or not of the two task shapes above (the run goes on), or
* ``{"error": {"type": "TypeError", "message": "result is not JSON
  serializable: ..."}}`` when the function returned something JSON cannot
  represent (see below).

Exact text formatting -- compare PARSED JSON values, not text.  Each line is
``json.dumps(record)`` with Python's DEFAULT settings plus ``"\\n"``:

* separators ``", "`` and ``": "`` (a space after every comma and colon);
* ``ensure_ascii=True``: every non-ASCII character is escaped as ``\\uXXXX``
  (surrogate pairs above U+FFFF), so the output is pure ASCII;
* keys in the dict's insertion order (``sort_keys=False``); record keys are
  ``ok`` / ``error``, and ``type`` before ``message``;
* ints in full decimal precision (``2**100`` -> ``1267650600228229401496703205376``;
  a parser that maps numbers to f64 loses digits beyond 2**53);
* floats via ``float.__repr__`` (shortest round-trip: ``1.5``, ``0.1``,
  ``1e+100``, ``-0.0``); ``nan``/``inf`` become the NON-standard tokens ``NaN``,
  ``Infinity``, ``-Infinity`` (``allow_nan=True``);
* tuples become arrays; ``True``/``False``/``None`` become ``true``/``false``/``null``;
* dict keys that are int, float, bool or None become strings (``{1: 2}`` ->
  ``{"1": 2}``, ``True`` -> ``"true"``); other key types are not serializable;
* ``bytes``/``bytearray``/``memoryview`` are not serializable by default
  (``--bytes error``); ``--bytes list`` gives an array of ints 0-255,
  ``--bytes hex`` a lowercase hex string, ``--bytes latin1`` a str with one
  code point per byte.

Exit status: 0 after all tasks (per-task errors are data, not failures); 2 when
the arguments are bad, the target cannot be imported or found, or it is not
callable (message on stderr, no output lines).
"""

import argparse
import importlib
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class UsageError(Exception):
    """A bad command line or target; reported on stderr with exit status 2."""


def load_target(target):
    """Import ``TARGET`` (``file.py:name`` or ``pkg.mod:name``) and return the callable."""
    modpart, sep, attrpath = target.rpartition(":")
    if not sep or not modpart or not attrpath:
        raise UsageError("target must be 'path/to/file.py:function' or 'pkg.module:function', got %r" % target)
    is_path = modpart.endswith(".py") or "/" in modpart or os.sep in modpart
    try:
        if is_path:
            path = os.path.abspath(modpart)
            if not os.path.isfile(path):
                raise UsageError("no such file: %s" % modpart)
            folder = os.path.dirname(path)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            name = os.path.splitext(os.path.basename(path))[0]
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise UsageError("cannot load %s as a Python module" % modpart)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            cwd = os.getcwd()
            if cwd not in sys.path:
                sys.path.insert(0, cwd)
            if HERE not in sys.path:
                sys.path.append(HERE)
            module = importlib.import_module(modpart)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError("cannot import %s: %s: %s" % (modpart, type(e).__name__, e))
    obj = module
    for part in attrpath.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError("%s has no attribute %r" % (modpart, attrpath))
    if not callable(obj):
        raise UsageError("%s:%s is not callable (it is a %s)" % (modpart, attrpath, type(obj).__name__))
    return obj


def parse_task(line):
    """Return ``(args, kwargs)`` for one JSON Lines task or raise ValueError."""
    try:
        task = json.loads(line)
    except ValueError as e:
        raise ValueError("not valid JSON: %s" % e)
    if isinstance(task, list):
        return task, {}
    if isinstance(task, dict):
        extra = sorted(set(task) - {"args", "kwargs"})
        if extra:
            raise ValueError("unknown task key(s): %s" % ", ".join(extra))
        args = task.get("args", [])
        kwargs = task.get("kwargs", {})
        if not isinstance(args, list):
            raise ValueError('"args" must be an array')
        if not isinstance(kwargs, dict):
            raise ValueError('"kwargs" must be an object')
        return args, kwargs
    raise ValueError("a task must be a JSON array or an object with args/kwargs, got %s" % type(task).__name__)


def bytes_encoder(mode):
    """Return the ``default=`` hook for json.dumps implementing ``--bytes MODE``."""

    def default(obj):
        if isinstance(obj, (bytes, bytearray, memoryview)) and mode != "error":
            data = bytes(obj)
            if mode == "list":
                return list(data)
            if mode == "hex":
                return data.hex()
            return data.decode("latin-1")
        raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)

    return default


def error_record(type_name, message):
    """The ``{"error": {"type": ..., "message": ...}}`` record."""
    return {"error": {"type": type_name, "message": message}}


def run_one(fn, line, default):
    """Run one task line and return its output line (without the newline)."""
    try:
        args, kwargs = parse_task(line)
    except ValueError as e:
        return json.dumps(error_record("InvalidTask", str(e)))
    try:
        result = fn(*args, **kwargs)
    except Exception as e:
        return json.dumps(error_record(type(e).__name__, str(e)))
    try:
        return json.dumps({"ok": result}, default=default)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        return json.dumps(error_record("TypeError", "result is not JSON serializable: %s" % e))


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(description="Reference runner: one JSON line out per JSON Lines task in.")
    p.add_argument("target", help="path/to/file.py:function or pkg.module:function")
    p.add_argument("tasks", help="JSON Lines file of tasks ('-' for stdin)")
    p.add_argument("-o", "--output", help="write results here instead of stdout")
    p.add_argument("--bytes", choices=["error", "list", "hex", "latin1"], default="error",
                   help="how to write bytes results (default: error)")
    ns = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        fn = load_target(ns.target)
        if ns.tasks == "-":
            data = sys.stdin.buffer.read().decode("utf-8")
        else:
            try:
                with open(ns.tasks, "rb") as fh:
                    data = fh.read().decode("utf-8")
            except OSError as e:
                raise UsageError("cannot read %s: %s" % (ns.tasks, e))
    except UsageError as e:
        sys.stderr.write("reference_run: %s\n" % e)
        return 2
    default = bytes_encoder(ns.bytes)
    # split on "\n" only: str.splitlines() would also split inside JSON strings
    # holding raw U+2028/U+2029/U+0085 characters.
    out = open(ns.output, "w", encoding="ascii", newline="\n") if ns.output else sys.stdout
    try:
        for line in data.split("\n"):
            if line.strip():
                out.write(run_one(fn, line, default) + "\n")
    finally:
        if out is sys.stdout:
            out.flush()
        else:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Baselines for benches/buffers.rs: handing N bytes to another process.

Runs in a plain ``python`` process (the same interpreter gilpool embeds, or a
virtualenv's with numpy) and prints one JSON object of per-call medians in
seconds:

- ``pickle_big`` / ``pickle_small``: ``ProcessPoolExecutor(1).submit(len, data)``
  with ``data`` of ``--bytes`` bytes and of 64 bytes (pickled to the worker,
  which returns ``len``).
- ``shm_big`` / ``shm_small``: the data already in a
  ``multiprocessing.shared_memory`` block; the worker attaches by name,
  takes ``memoryview(shm.buf).nbytes`` and closes it. ``shm_setup`` is the
  one-time cost of creating the big block and copying the data into it.
- ``numpy_sum``: ``a.sum()`` of a float64 array of ``--bytes`` bytes
  (``numpy.arange``), or ``null`` with ``numpy_error`` when numpy is missing.

Usage: ``python gilpool_buffer_baselines.py --bytes 67108864 --reps 20``
"""

import argparse
import concurrent.futures
import json
import statistics
import time
from multiprocessing import shared_memory


def _nbytes(data):
    return len(data)


def _attach(name):
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # 3.13+
    except TypeError:
        return shared_memory.SharedMemory(name=name)


def _shm_len(name):
    shm = _attach(name)
    try:
        view = memoryview(shm.buf)
        n = view.nbytes
        view.release()
        return n
    finally:
        shm.close()


def _median(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, default=64 << 20)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    big = bytes(args.bytes)
    small = bytes(64)
    out = {"bytes": args.bytes, "reps": args.reps}
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as ex:
        assert ex.submit(_nbytes, small).result() == 64  # start the worker
        out["pickle_small"] = _median(lambda: ex.submit(_nbytes, small).result(), args.reps * 10)
        out["pickle_big"] = _median(lambda: ex.submit(_nbytes, big).result(), args.reps)
        t = time.perf_counter()
        shm = shared_memory.SharedMemory(create=True, size=args.bytes)
        shm.buf[: args.bytes] = big
        out["shm_setup"] = time.perf_counter() - t
        tiny = shared_memory.SharedMemory(create=True, size=64)
        try:
            assert ex.submit(_shm_len, shm.name).result() >= args.bytes
            out["shm_small"] = _median(lambda: ex.submit(_shm_len, tiny.name).result(), args.reps * 10)
            out["shm_big"] = _median(lambda: ex.submit(_shm_len, shm.name).result(), args.reps * 10)
        finally:
            for s in (shm, tiny):
                s.close()
                s.unlink()
    try:
        import numpy

        a = numpy.arange(args.bytes // 8, dtype=numpy.float64)
        a.sum()
        out["numpy_sum"] = _median(a.sum, args.reps)
        out["numpy_version"] = numpy.__version__
    except ImportError as e:
        out["numpy_sum"] = None
        out["numpy_error"] = str(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Python peers of the SVD pipeline (benches/pipeline.rs): the same two
stages, ``svd.generate`` then ``svd.compute_svd_rank`` in batches of 32,
on one thread, a ThreadPoolExecutor and a ProcessPoolExecutor (matrices
pickled from the first stage to the second, as a pool must).

    python svd_baselines.py N WORKERS   -> one JSON object: seconds per peer
"""

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svd  # noqa: E402

BATCH = 32


def batches(n):
    return [list(range(i, min(i + BATCH, n))) for i in range(0, n, BATCH)]


def one_thread(n):
    ranks = []
    for b in batches(n):
        ranks.extend(svd.compute_svd_rank(svd.generate(b)))
    return ranks


def pooled(pool, n):
    generated = [pool.submit(svd.generate, b) for b in batches(n)]
    ranked = [pool.submit(svd.compute_svd_rank, f.result()) for f in generated]
    return [r for f in ranked for r in f.result()]


def main():
    n, workers = int(sys.argv[1]), int(sys.argv[2])
    expected = svd.reference(n)
    out = {}
    t = time.perf_counter()
    assert one_thread(n) == expected
    out["one thread"] = time.perf_counter() - t
    with ThreadPoolExecutor(workers) as pool:
        t = time.perf_counter()
        assert pooled(pool, n) == expected
        out[f"ThreadPoolExecutor({workers})"] = time.perf_counter() - t
    with ProcessPoolExecutor(workers) as pool:
        pool.submit(int).result()  # started before timing
        t = time.perf_counter()
        assert pooled(pool, n) == expected
        out[f"ProcessPoolExecutor({workers})"] = time.perf_counter() - t
    print(json.dumps(out))


if __name__ == "__main__":
    main()

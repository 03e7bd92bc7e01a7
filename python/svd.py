"""The SVD pipeline of the reference engine's example, for
examples/svd_pipeline.rs and benches/pipeline.rs.

Both functions are vectorized: they take a batch (a list) and return a list
of the same length.

``generate(items)``          -> one 100x100 float64 matrix per seed; every
                                third one has 10 duplicated columns (rank 90).
``compute_svd_rank(ms)``     -> ``numpy.linalg.matrix_rank`` of each matrix.
``reference(n)``             -> the ranks of seeds ``0..n`` computed in one
                                plain loop (what the pipeline must equal).
"""

import numpy as np

SIZE = 100


def _matrix(seed):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((SIZE, SIZE))
    if seed % 3 == 0:
        m[:, -10:] = m[:, :10]
    return m


def generate(items):
    return [_matrix(int(seed)) for seed in items]


def compute_svd_rank(matrices):
    return [int(np.linalg.matrix_rank(m)) for m in matrices]


def reference(n):
    return [int(np.linalg.matrix_rank(_matrix(seed))) for seed in range(n)]

"""memstream: event-driven memory service for AI agents."""

import os

# numpy's OpenBLAS runs a matrix-vector product on every core it finds, and its threads spin while
# they wait: on a busy 2-core host that took the gateway's vector scoring of 32k memories from
# 0.7 ms to 6-19 ms (docs/performance.md). memstream's products are small and each process serves
# many requests at once, so one BLAS thread per process is faster. Set before numpy is imported
# (every entry point imports this package first); an explicit setting is kept.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

__version__ = "0.1.0"

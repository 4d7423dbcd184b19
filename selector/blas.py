"""BLAS on one thread for the heads' scikit-learn fits.

The bag of words and the TF-IDF baselines are fitted by L-BFGS on sparse
rows: thousands of iterations, each a few dot products and vector updates
over some 20,000 weights. OpenBLAS splits each of those across its threads
and wakes them for every call; on the demo's 2-core machine that hand-off
costs more than the arithmetic, and far more when other work shares the
cores. Measured there (2026-12-07, the demo's selector rows, 2^18
buckets): `bag.fit` 51-76 s with the default two threads, 2.4 s with one,
the same regularisation chosen and the same outputs to 1e-6; both heads
of the demo 178 s -> 90 s. The probe's Newton steps (dense, 1,153 columns)
are no faster on two threads there either (15 s on one, 19-23 s on two,
beside other work).
"""

import functools


def one_thread(fn):
  """`fn` run with the BLAS libraries numpy and scipy load on one thread
  (threadpoolctl; the limit is lifted when `fn` returns)."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    # pylint: disable-next=import-outside-toplevel
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
      return fn(*args, **kwargs)

  return wrapped

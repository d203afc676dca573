"""The local process pool that renders a training set and computes its chroma (no Spark:
one machine's cores)."""

from __future__ import annotations

import os

__all__ = ["pool_map"]


def pool_map(fn, items: list, *, workers: int, ordered: bool):
    """``fn`` over ``items`` in a pool of ``workers`` processes (in this one for 1), as they
    finish or, when ``ordered``, in order; each worker is replaced after 200 tasks."""
    import multiprocessing as mp

    if workers <= 1:
        yield from map(fn, items)
        return
    ctx = mp.get_context("spawn" if os.environ.get("KEYLIB_SPAWN") else "fork")
    pool = ctx.Pool(workers, maxtasksperchild=200)
    try:
        yield from (pool.imap(fn, items, chunksize=4) if ordered else pool.imap_unordered(fn, items, chunksize=1))
    except BaseException:  # an error, or the caller stopped early: the rest is not wanted
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()

"""The local process pool that renders a training set and computes its chroma (no Spark:
one machine's cores).

It runs on :class:`concurrent.futures.ProcessPoolExecutor`, not :class:`multiprocessing.Pool`:
a worker that dies hard (a segfault in a native renderer, the OOM killer) leaves
``multiprocessing.Pool`` waiting forever for that worker's task, while the executor reports
it (``BrokenProcessPool``), so the work left can go on in a fresh pool.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

__all__ = ["TASKS_PER_POOL", "pool_map"]

TASKS_PER_POOL = 200  # tasks per worker before a fresh pool takes over (what native renderers leak goes too)


def pool_map(fn, items: list, *, workers: int, ordered: bool, on_crash=None):
    """``fn`` over ``items`` in a pool of ``workers`` processes (in this one for 1), as they
    finish or, when ``ordered``, in order.

    A worker that dies breaks the pool: the items not finished run again in a fresh pool,
    those that were in flight first and one at a time, so that a second death names its
    item. That item's result is then ``on_crash(item, message)`` (``message``: "worker
    process died (signal SIGKILL)" or the like); without ``on_crash``, a ``RuntimeError``.
    Stopping the iteration early stops the workers. ``KEYLIB_SPAWN`` set: spawned workers,
    not forked ones.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    results = _unordered(fn, list(items), workers, on_crash or _give_up)
    try:
        if not ordered:
            yield from (result for _, result in results)
            return
        ready, turn = {}, 0
        for i, result in results:
            ready[i] = result
            while turn in ready:
                yield ready.pop(turn)
                turn += 1
    finally:
        results.close()  # stops the workers when the caller stopped early


def _give_up(item, message: str):
    raise RuntimeError(f"{message} twice while working on {item!r}")


def _unordered(fn, items: list, workers: int, on_crash):
    """(index, result) pairs as they finish, pool after pool (see :func:`pool_map`)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn" if os.environ.get("KEYLIB_SPAWN") else "fork")
    left = dict(enumerate(items))  # not finished yet, in order
    strikes: dict[int, int] = {}  # index: the breaks it was in flight for
    while left:
        queue = sorted(left, key=lambda i: (not strikes.get(i), i))  # suspects first
        pool = ProcessPoolExecutor(workers, mp_context=ctx)
        running: dict = {}  # future: index
        budget, lost = TASKS_PER_POOL * workers, []
        try:
            while queue or running:
                # a suspect runs alone: a death while it runs is its own
                while (queue and budget and len(running) < workers and not any(strikes.get(i) for i in running)
                       and not (running and strikes.get(queue[0]))):
                    i = queue.pop(0)
                    running[pool.submit(fn, left[i])] = i
                    budget -= 1
                if not running:
                    break  # this pool's budget is spent
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    done, _ = wait(running)  # a broken pool fails all its unfinished tasks
                for fut in done:
                    i = running.pop(fut)
                    if isinstance(fut.exception(), BrokenProcessPool):
                        lost.append(i)
                        continue
                    result = fut.result()  # fn's own error is raised here
                    del left[i]
                    yield i, result
                if lost:
                    break
        except BaseException:  # an error, or the caller stopped early: the rest is not wanted
            _kill(pool)
            raise
        finally:
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=True, cancel_futures=True)
        for i in lost:
            strikes[i] = strikes.get(i, 0) + 1
            if strikes[i] >= 2:
                result = on_crash(left.pop(i), _death(processes))
                yield i, result


def _kill(pool: ProcessPoolExecutor) -> None:
    """Terminates the workers of ``pool`` (the executor has no public way before Python 3.14)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


def _death(processes) -> str:
    """How a worker of a broken pool died, from the exit codes (the executor terminates the
    others with SIGTERM)."""
    for process in processes:
        code = process.exitcode
        if code and code != -signal.SIGTERM:
            if code > 0:
                return f"worker process died (exit code {code})"
            try:
                return f"worker process died (signal {signal.Signals(-code).name})"
            except ValueError:
                return f"worker process died (signal {-code})"
    return "worker process died"

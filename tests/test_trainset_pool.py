"""The render pool survives a worker that dies (real processes, killed for real)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from keylib.training.trainset.pool import pool_map


@pytest.fixture(autouse=True)
def deadline(monkeypatch):
    """A hang (the defect this pool fixes) fails the test instead of stalling the run; the
    workers fork (they run this module's functions)."""
    monkeypatch.delenv("KEYLIB_SPAWN", raising=False)

    def expire(signum, frame):
        raise TimeoutError("pool_map hung")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _square_or_die(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def _die_once(x: int, marker: str) -> int:
    """Kills its worker the first time it sees 5 (a flaky crash: the retry succeeds)."""
    if x == 5 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def _slow(x: int) -> int:
    time.sleep(0.5)
    return x


def _lost(item, message):
    return ("lost", item, message)


@pytest.mark.parametrize("ordered", [True, False])
def test_a_worker_that_dies_costs_its_item_only(ordered):
    t0 = time.monotonic()
    got = list(pool_map(_square_or_die, list(range(10)), workers=2, ordered=ordered, on_crash=_lost))
    assert time.monotonic() - t0 < 60
    expected = [("lost", 3, "worker process died (signal SIGKILL)") if x == 3 else x * x for x in range(10)]
    if ordered:
        assert got == expected
    else:
        assert sorted(got, key=str) == sorted(expected, key=str)
    assert not mp.active_children()


def test_an_item_whose_worker_died_once_is_run_again(tmp_path):
    import functools

    fn = functools.partial(_die_once, marker=str(tmp_path / "died"))
    got = list(pool_map(fn, list(range(12)), workers=3, ordered=True, on_crash=_lost))
    assert (tmp_path / "died").exists()  # it did die once
    assert got == [x * x for x in range(12)]


def test_without_on_crash_a_lost_item_is_an_error():
    with pytest.raises(RuntimeError, match="SIGKILL.*twice while working on 3"):
        list(pool_map(_square_or_die, list(range(6)), workers=2, ordered=True))
    assert not mp.active_children()


def test_stopping_early_stops_the_workers():
    results = pool_map(_slow, list(range(40)), workers=2, ordered=True)
    assert next(results) == 0
    t0 = time.monotonic()
    results.close()
    assert time.monotonic() - t0 < 5  # the workers are stopped, not waited for
    assert not mp.active_children()

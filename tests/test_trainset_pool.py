"""The render pool survives a worker that dies (real processes, killed for real), and a
render stopped part way goes on from where it stopped."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time

import pandas as pd
import pytest

from keylib.training.trainset import make
from keylib.training.trainset.journal import JOURNAL
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


def _chroma_or_die(rel, root, feature_version):
    if rel == "audio/p2.flac":
        os.kill(os.getpid(), signal.SIGKILL)
    return None


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


def _plan(seed: int = 11) -> dict:
    return dict(pop909=None, n_procedural=4, n_chorales=0, n_folk=0, n_heldout_folk=0, transpositions=1,
                pop909_renders=1, pop909_holdout_from=0, seed=seed)


def test_an_interrupted_render_resumes_where_it_stopped(tmp_path, monkeypatch):
    straight = make.make_training_set(tmp_path / "straight", workers=1, progress=False, **_plan())
    assert len(pd.read_csv(straight)) == 4
    rendered = []
    run_job = make.run_job

    def stopped_at_the_third(job, *args, **kwargs):
        if len(rendered) == 2:
            raise KeyboardInterrupt
        rendered.append(job.ref)
        return run_job(job, *args, **kwargs)

    out = tmp_path / "resumed"
    monkeypatch.setattr(make, "run_job", stopped_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        make.make_training_set(out, workers=1, progress=False, **_plan())
    assert not (out / "manifest.csv").exists() and (out / JOURNAL).exists()
    first = {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.flac")}
    assert len(first) == 2

    again = []

    def counted(job, *args, **kwargs):
        again.append(job.ref)
        return run_job(job, *args, **kwargs)

    monkeypatch.setattr(make, "run_job", counted)
    manifest = make.make_training_set(out, workers=1, progress=False, **_plan())
    assert sorted(again + rendered) == sorted(f"{i:05d}" for i in range(4)) and not set(again) & set(rendered)
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # not rendered again
    assert pd.read_csv(manifest).equals(pd.read_csv(straight))
    a, b = pd.read_parquet(out / "chroma_cache.parquet"), pd.read_parquet(tmp_path / "straight" / "chroma_cache.parquet")
    assert list(a.track_id) == list(b.track_id) and list(a.key) == list(b.key)
    assert all((x == y).all() for x, y in zip(a.chroma, b.chroma))
    assert not (out / JOURNAL).exists()


def test_a_job_that_kills_its_worker_is_an_error_row(tmp_path, monkeypatch):
    run_job = make.run_job

    def crashing(job, *args, **kwargs):  # forked workers inherit the patch
        if job.ref == "00001":
            os.kill(os.getpid(), signal.SIGKILL)
        return run_job(job, *args, **kwargs)

    monkeypatch.setattr(make, "run_job", crashing)
    manifest = make.make_training_set(tmp_path, workers=2, progress=False, with_chroma=False, **_plan())
    assert len(pd.read_csv(manifest)) == 3
    assert (tmp_path / "errors.txt").read_text() == "procedural 00001 (train): worker process died (signal SIGKILL)\n"
    assert not (tmp_path / JOURNAL).exists()


def test_a_file_that_kills_its_chroma_worker_is_an_input_error(tmp_path, monkeypatch):
    from keylib.errors import InputError
    from keylib.training.trainset import chroma_cache

    (tmp_path / "manifest.csv").write_text("path\n" + "".join(f"audio/p{i}.flac\n" for i in range(4)))

    monkeypatch.setattr(chroma_cache, "_chroma_of_file", _chroma_or_die)
    with pytest.raises(InputError, match=r"p2\.flac: cannot read its audio \(worker process died \(signal SIGKILL\)"):
        chroma_cache.refresh_chroma_cache(tmp_path, workers=2, progress=False)
    assert not mp.active_children()


def test_the_journal_reads_past_a_cut_line_and_keeps_other_renders_lines(tmp_path):
    import numpy as np

    from keylib.training.trainset.journal import RenderJournal

    chroma = np.random.default_rng(0).random((12, 7)).astype(np.float32)
    journal = RenderJournal(tmp_path, chroma="v2")
    journal.append("a", [{"track_id": "t", "duration_s": 21.37, "chroma": chroma}])
    journal.append("other", [{"track_id": "o"}])
    with (tmp_path / JOURNAL).open("a") as f:
        f.write('{"job": "b", "rows": [')  # the render stopped mid-line
    journal = RenderJournal(tmp_path, chroma="v2")
    assert journal.rows_of("b") is None
    [row] = journal.rows_of("a")
    assert row["duration_s"] == 21.37 and row["chroma"].dtype == np.float32 and np.array_equal(row["chroma"], chroma)
    assert RenderJournal(tmp_path, chroma=None).rows_of("a") is None  # rendered with chroma, asked without
    journal.append("b", [{"track_id": "u"}])
    assert RenderJournal(tmp_path, chroma="v2").rows_of("b") == [{"track_id": "u"}]
    journal.finish({"a", "b"})
    assert [json.loads(line)["job"] for line in (tmp_path / JOURNAL).read_text().splitlines()] == ["other"]
    RenderJournal(tmp_path, chroma="v2").finish({"other"})
    assert not (tmp_path / JOURNAL).exists()


def test_a_render_stopped_by_sigterm_leaves_no_scratch_folder(tmp_path):
    """A worker stopped with SIGTERM (``kill``, or the pool stopping its workers) removes its
    job's scratch folder and still dies of the signal."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import sys, time\n"
              "from keylib.training.trainset import make\n"
              "with make._scratch() as tmp:\n"
              "    open(tmp + '/x.wav', 'wb').write(b'0' * 1000)\n"
              "    print(tmp, flush=True)\n"
              "    time.sleep(60)\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    scratch = Path(child.stdout.readline().strip())
    assert scratch.parent == tmp_path and (scratch / "x.wav").is_file()
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == -signal.SIGTERM
    assert not scratch.exists() and list(tmp_path.iterdir()) == []

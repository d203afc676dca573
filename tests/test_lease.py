"""One run at a time per output: the lease in OUT/_lease/, on a local folder and on moto's S3
server (real HTTP), held by real processes; racing Delta commits. Whole nightly runs that
contend for it: tests/test_lease_nightly.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from servers import ACCESS_KEY_ID, REPO, SECRET_ACCESS_KEY, local_or_s3, wait_for

SCHEMA = ("track_id string, uri string, status string, error string, n long, "
          "chroma array<float>, extracted_at timestamp")

# A process that holds the lease until it loses it, then says so and what a commit would get;
# given a host name, it holds it as a run on that machine would.
HOLDER = r"""
import json, socket, sys, time
from keylib.storage import lease
output, settings, ttl, beat = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
if len(sys.argv) > 5:  # as if on another machine
    socket.gethostname = lambda: sys.argv[5]
with lease.hold(output, run_id="child-run", job="child", s3_settings=settings, ttl_s=ttl, heartbeat_s=beat) as held:
    print("held", held.generation, flush=True)
    while held.lost is None:
        time.sleep(0.05)
    print("lost:", held.lost, flush=True)
    try:
        held.check(before="committing")
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", flush=True)
"""

# A process that tries to take the lease once.
CONTENDER = r"""
import json, sys
from keylib.storage import lease
from keylib.errors import OutputBusyError
try:
    with lease.hold(sys.argv[1], run_id="other-run", job="other", s3_settings=json.loads(sys.argv[2])) as held:
        print("took generation", held.generation)
except OutputBusyError as exc:
    print(f"busy: {exc}")
"""


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    """An output root and the [s3] settings to reach it."""
    with local_or_s3(request.param, tmp_path, local=tmp_path / "out", s3_uri="s3://out/night") as root:
        yield root


def spawn(script, *args, log):
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def run_child(script, *args, timeout=60):
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def start_holder(tmp_path, out, s3, *, ttl_s, heartbeat_s, host=None):
    log = tmp_path / f"holder-{time.time_ns()}.log"
    proc = spawn(HOLDER, out, json.dumps(s3), ttl_s, heartbeat_s, *([host] if host else []), log=log)
    wait_for(lambda: "held" in log.read_text() or proc.poll() is not None, timeout=60, what="the holder")
    assert proc.poll() is None, log.read_text()
    return proc, log


def try_acquire(out, s3, run_id="mine"):
    """The lease, taken as another run would take it (bypassing this process's re-entry)."""
    from keylib.storage import lease
    from keylib.errors import OutputBusyError

    try:
        return lease.acquire(out, run_id=run_id, job="test", s3_settings=s3, ttl_s=30, heartbeat_s=10)
    except OutputBusyError:
        return None


def test_acquire_refuse_reenter_release(output, lease_store):
    from keylib.storage import lease
    from keylib.errors import OutputBusyError

    out, s3 = output
    with lease.hold(out, run_id="r1", job="nightly", s3_settings=s3, ttl_s=30, heartbeat_s=10) as first:
        assert first.generation == 1
        with lease.hold(out, run_id="r1", job="nightly", s3_settings=s3) as inner:  # nightly -> annotate
            assert inner is first
        assert lease.held(f"{out}/chroma") is first
        assert lease_store(out, s3).generations() == [1]

        said = run_child(CONTENDER, out, json.dumps(s3))  # another process
        assert said.count("\n") == 1 and said.startswith("busy: "), said
        assert (f"is held by run r1 (job nightly, host {socket.gethostname()}, pid {os.getpid()}) since "
                in said) and "its lease expires at " in said
        assert ACCESS_KEY_ID not in said and SECRET_ACCESS_KEY not in said

        refused = []
        thread = threading.Thread(target=lambda: refused.append(try_thread(out, s3)))
        thread.start()
        thread.join()
        assert isinstance(refused[0], OutputBusyError) and "run r1 (job nightly" in str(refused[0])
        assert not lease_store(out, s3).read(1).record["released"]
    assert lease_store(out, s3).read(1).record["released"] and lease.held(out) is None
    # Released: the next run takes it at once, as the next generation.
    assert run_child(CONTENDER, out, json.dumps(s3)).strip() == "took generation 2"
    assert lease_store(out, s3).generations() == [1, 2]


def try_thread(out, s3):
    from keylib.storage import lease
    from keylib.errors import OutputBusyError

    try:
        with lease.hold(out, run_id="thread", job="test", s3_settings=s3):
            return None
    except OutputBusyError as exc:
        return exc


def test_heartbeat_keeps_the_lease_past_its_ttl(output, lease_store):
    from keylib.storage import lease

    out, s3 = output
    with lease.hold(out, run_id="r1", job="test", s3_settings=s3, ttl_s=1.0, heartbeat_s=0.2) as mine:
        time.sleep(3.5)  # well past ttl_s (and S3's one second of slack)
        assert try_acquire(out, s3) is None
        assert mine.lost is None
        mine.check(before="committing")
        assert lease_store(out, s3).generations() == [1]


def test_holder_killed_on_this_machine_is_followed_at_once(tmp_path, output):
    """A run killed here frees the lease at once (its pid is gone, even as an unreaped
    zombie); until then its staging files are not touched."""
    from keylib.storage import locations, staging
    from keylib.errors import OutputBusyError

    out, s3 = output
    uri = locations.table_uri(out, "chroma")
    fs, root = locations.filesystem(uri, s3)
    fs.create_dir(f"{root}/run=child-run", recursive=True)
    with fs.open_output_stream(f"{root}/run=child-run/part-0.parquet") as f:  # what the live run is writing
        f.write(b"PAR1")

    child, log = start_holder(tmp_path, out, s3, ttl_s=60, heartbeat_s=10)
    try:
        with pytest.raises(OutputBusyError, match=rf"held by run child-run \(job child, host .*, pid {child.pid}\)"):
            staging.clear_staging(uri, s3_settings=s3)
        assert fs.get_file_info(f"{root}/run=child-run/part-0.parquet").size == 4  # untouched
        os.kill(child.pid, signal.SIGKILL)
        wait_for(lambda: open(f"/proc/{child.pid}/stat").read().split(") ")[1][0] == "Z", timeout=10,
                 what="the child to die")
        mine = try_acquire(out, s3)  # a zombie: dead, not yet reaped
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    assert mine is not None and mine.generation == 2
    mine.release()
    assert staging.clear_staging(uri, s3_settings=s3) == ["run=child-run"]
    assert fs.get_file_info(f"{root}/run=child-run").type.name == "NotFound"


def test_holder_on_another_machine_lapses_after_its_ttl(tmp_path, output):
    """Of a holder elsewhere nothing can be known but its heartbeat: killed, its lease is
    taken over ttl_s after its last heartbeat, not before."""
    out, s3 = output
    child, log = start_holder(tmp_path, out, s3, ttl_s=2.0, heartbeat_s=0.4, host="elsewhere")
    try:
        assert try_acquire(out, s3) is None
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    killed = time.monotonic()
    assert try_acquire(out, s3) is None  # its last heartbeat is younger than its ttl
    mine = wait_for(lambda: try_acquire(out, s3), timeout=15, interval=0.1, what="the lease to lapse")
    assert time.monotonic() - killed > 2.0 - 0.4 - 0.2  # not before the ttl after its last heartbeat
    assert mine.generation == 2
    mine.release()


def test_frozen_holder_finds_its_lease_lost(tmp_path, output, lease_store):
    """A holder paused past its ttl (SIGSTOP: a long GC pause, a suspended VM) is overtaken;
    when it resumes its heartbeat marks the lease lost and its commit check refuses."""
    out, s3 = output
    child, log = start_holder(tmp_path, out, s3, ttl_s=1.5, heartbeat_s=0.3)
    try:
        os.kill(child.pid, signal.SIGSTOP)
        mine = wait_for(lambda: try_acquire(out, s3), timeout=15, interval=0.1, what="the lease to lapse")
        mine.start()
        os.kill(child.pid, signal.SIGCONT)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    said = log.read_text()
    assert "lost: " in said, said
    assert "StorageError: lost the lease on " in said and " before committing: " in said, said
    mine.check(before="committing")  # the resumed holder left the new holder's lease alone
    assert mine.generation == 2 and not lease_store(out, s3).read(2).record["released"]
    mine.release()


def rows(spark, ids, *, n=0, status="ok"):
    at = datetime(2026, 11, 28, tzinfo=timezone.utc)
    data = [(t, f"/music/{t}", status, None if status == "ok" else "boom", n, [float(n)] * 24, at) for t in ids]
    return spark.createDataFrame(data, SCHEMA).repartition(3)


def test_commit_refused_once_the_lease_is_lost(spark, tmp_path, lease_store):
    from keylib.spark import frames
    from keylib.storage import lease, locations, tables
    from keylib.errors import StorageError

    out = str(tmp_path / "out")
    uri = locations.table_uri(out, "keys")
    with lease.hold(out, run_id="r1", job="test", ttl_s=30, heartbeat_s=10) as mine:
        frames.commit_run(rows(spark, ["a", "b"], n=1), uri, run_id="r1")
        # Another run found this lease expired (this process paused past its ttl, say) and
        # took it over, as lease.acquire does: by creating the next generation.
        rival = {"generation": mine.generation + 1, "run_id": "rival-run", "job": "nightly", "host": "elsewhere",
                 "pid": 4242, "since": "2026-12-01T02:30:00Z", "expires": "2999-01-01T00:00:00Z", "ttl_s": 120.0,
                 "released": False}
        assert lease_store(out, {}).create(mine.generation + 1, json.dumps(rival), token="rival")
        with pytest.raises(StorageError) as info:
            frames.commit_run(rows(spark, ["b", "c"], n=2), uri, run_id="r2")
        assert str(info.value).startswith(f"lost the lease on {out} before committing run r2 to {uri}: taken over by "
                                          "run rival-run (job nightly, host elsewhere, pid 4242)"), info.value
        assert mine.lost
    current = tables.read_rows(uri).set_index("track_id")
    assert sorted(current.index) == ["a", "b"] and set(current["n"]) == {1}  # nothing of r2 is visible
    assert tables.committed_runs(uri) == ["r1"]
    assert not lease_store(out, {}).read(2).record["released"]  # the rival's lease is left alone


def test_racing_commits_leave_one_current_row_per_track(spark, output):
    """Two runs that read the table at the same version both add track c, new to it: the
    later one finds the table moved, reads it again and replaces the earlier one's row of c
    (delta-rs alone would rebase one append onto the other: two current rows of c)."""
    from keylib.spark import frames
    from keylib.storage import commit, lease, locations, tables
    from keylib.errors import StorageError

    out, s3 = output
    uri = locations.table_uri(out, "keys")
    frames.commit_run(rows(spark, ["a", "b"], n=0), uri, run_id="r0", s3_settings=s3)
    first, second = tables.open_table(uri, s3_settings=s3), tables.open_table(uri, s3_settings=s3)
    assert first.version() == second.version() == 0
    schema = frames.arrow_schema(rows(spark, ["x"]).schema)

    def stage(run_id, ids, n):
        writer = commit.part_writer(uri, s3, run_id, schema)
        return [m.asDict() for m in rows(spark, ids, n=n).mapInArrow(writer, commit.FILE_META).collect()]

    with lease.hold(out, run_id="race", job="test", s3_settings=s3) as held:
        args = dict(schema=schema, settings=s3, check=held.check, run_tasks=frames.executor_tasks(spark))
        one = commit.commit_files(uri, first, stage("r1", ["c", "e"], 1), run_id="r1", **args)
        two = commit.commit_files(uri, second, stage("r2", ["c", "d"], 2), run_id="r2", **args)
        assert (one[0], one[1]) == (1, 0) and (two[0], two[1]) == (2, 1)  # r2 replaced r1's row of c

        parts = stage("r3", ["e"], 3)
        fs, root = locations.filesystem(uri, s3)
        fs.delete_file(f"{root}/{parts[0]['path']}")
        with pytest.raises(StorageError, match="files are missing or changed"):
            commit.commit_files(uri, tables.open_table(uri, s3_settings=s3), parts, run_id="r3", **args)

    current = tables.read_rows(uri, s3_settings=s3)
    assert sorted(current["track_id"]) == ["a", "b", "c", "d", "e"]  # one current row each
    assert dict(zip(current["track_id"], current["n"])) == {"a": 0, "b": 0, "c": 2, "d": 2, "e": 1}
    assert tables.committed_runs(uri, s3_settings=s3) == ["r0", "r1", "r2"]

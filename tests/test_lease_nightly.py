"""Whole nightly runs through ./submit.sh that contend for one output's lease: two started
together (on a local folder and on moto's S3 server), and one killed holding it. The lease
itself: tests/test_lease.py."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from pyarrow.fs import FileSelector

from servers import (  # noqa: F401 - moto_server is a fixture
    ACCESS_KEY_ID, SECRET_ACCESS_KEY, fill_bucket, kill_group, make_model, moto_server, start_submit, submit,
    wait_for, write_conf,
)

# Bounds on waits, not timings (a loaded 2-core machine).
RUN_TIMEOUT_S = 600
N_TRACKS = 8


def catalogue(folder: Path, n: int = N_TRACKS) -> Path:
    from keylib.synth import chord_progression, write_audio

    for i in range(n):
        write_audio(folder / f"t{i:02d}.wav", chord_progression(i % 24, duration_s=3.0, seed=i), sr=22050)
    return folder


def lease_conf(path: Path, *, ttl_s: float, heartbeat_s: float, **kwargs) -> Path:
    conf = write_conf(path, tracks_per_partition=2, **kwargs)
    conf.write_text(conf.read_text() + f"[lease]\nttl_s = {ttl_s}\nheartbeat_s = {heartbeat_s}\n")
    return conf


def one_row_per_track(out: str, s3: dict, expected: list[str]) -> None:
    from keylib.storage import locations, tables

    for table in ("chroma", "keys"):
        rows = tables.read_rows(locations.table_uri(out, table), columns=["track_id", "status"], s3_settings=s3)
        assert sorted(rows["track_id"]) == sorted(expected), table
        assert set(rows["status"]) == {"ok"}, table


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_concurrent_nightly_runs_one_waits_its_turn(tmp_path, where, request):
    """Two nightly runs started together on one output: one holds the lease and commits; the
    other exits 6 with one line naming it, having written nothing (or, had it started after
    the first finished, finds nothing new)."""
    from keylib.storage import files, locations, tables

    env, s3 = None, {}
    model = make_model(tmp_path)
    if where == "local":
        source, out = str(catalogue(tmp_path / "catalogue")), str(tmp_path / "out")
        conf = lease_conf(tmp_path / "t.toml", ttl_s=30, heartbeat_s=2, model=model)
        expected = [f"t{i:02d}.wav" for i in range(N_TRACKS)]
    else:
        server = request.getfixturevalue("moto_server")
        fill_bucket(server, "music", "catalogue", N_TRACKS)
        server.client().create_bucket(Bucket="out")
        source, out, env = "s3://music/catalogue", "s3://out/keylib", server.env()
        s3 = {"endpoint_url": server.endpoint, "region": "us-east-1"}
        conf = lease_conf(tmp_path / "t.toml", ttl_s=30, heartbeat_s=2, model=model, endpoint=server.endpoint)
        expected = [f"catalogue/track{i:04d}.wav" for i in range(N_TRACKS)]
    args = ("--conf", str(conf), "--input", source, "--output", out)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_submit("nightly", *args, env=env, log=log) for log in logs]
    try:
        for proc in procs:
            proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill_group(proc)
    codes = [proc.returncode for proc in procs]
    texts = [log.read_text(errors="replace") for log in logs]
    assert sorted(codes) in ([0, 6], [0, 0]), texts
    winner = texts[codes.index(0)]
    winner_run = re.search(r"run_id (\S+),", winner).group(1)
    assert f"listed {N_TRACKS}, new {N_TRACKS}, skipped 0, failed 0" in winner, winner
    if 6 in codes:
        loser = texts[codes.index(6)]
        busy = [line for line in loser.splitlines() if "output busy" in line]
        assert len(busy) == 1 and "Traceback" not in loser, loser
        assert busy[0].startswith(f"keylib nightly: output busy: {locations.resolve_output(out)} is held by run "
                                  f"{winner_run} (job nightly, host {socket.gethostname()}, pid "), busy[0]
        assert " since " in busy[0] and "its lease expires at " in busy[0]
        manifests = files.read_texts(f"{locations.resolve_output(out)}/_runs", s3_settings=s3)
        assert [json.loads(m)["run_id"] for m in manifests] == [winner_run]  # the busy run wrote nothing
    else:  # the second started after the first had finished
        assert f"listed {N_TRACKS}, new 0, skipped {N_TRACKS}" in texts[1 - codes.index(0)]
    one_row_per_track(out, s3, expected)
    for table in ("chroma", "keys"):
        uri = locations.table_uri(out, table)
        fs, root = locations.filesystem(uri, s3)
        folders = {i.base_name for i in fs.get_file_info(FileSelector(root)) if i.base_name.startswith("run=")}
        assert folders == {f"run={r}" for r in tables.committed_runs(uri, s3_settings=s3)}, table
    for text in texts:
        assert ACCESS_KEY_ID not in text and SECRET_ACCESS_KEY not in text


@pytest.mark.slow
def test_nightly_killed_holding_the_lease_then_a_new_run_completes(tmp_path, lease_store):
    from keylib.storage import tables

    out = tmp_path / "out"
    # A ttl far longer than the rerun's start: the rerun proceeds because the killed run's
    # process is gone from this machine, not because its lease expired.
    conf = lease_conf(tmp_path / "t.toml", ttl_s=300, heartbeat_s=5, model=make_model(tmp_path))
    args = ("--conf", str(conf), "--input", str(catalogue(tmp_path / "catalogue")), "--output", str(out))
    proc = start_submit("nightly", *args, log=tmp_path / "killed.log")
    wait_for(lambda: any((out / "chroma").glob("run=*/*.parquet")) or proc.poll() is not None,
             timeout=RUN_TIMEOUT_S, interval=0.05, what="the run to start writing")
    assert proc.poll() is None, (tmp_path / "killed.log").read_text()
    kill_group(proc)  # holding the lease, its tasks writing Parquet parts
    leases = lease_store(str(out), {})
    top = leases.read(leases.generations()[-1])
    killed_run = top.record["run_id"]
    assert top.record["job"] == "nightly" and not top.released and not top.expired
    wait_for(lambda: top.gone, timeout=30, what="the killed driver to be gone")

    code, log = submit("nightly", *args, timeout=RUN_TIMEOUT_S)
    assert code == 0, log
    took_over = (rf"took over the lease on {re.escape(str(out))} from run {killed_run} "
                 rf"\(job nightly, host .*, pid \d+\) since \S+: its process is gone")
    assert re.search(took_over, log), log
    assert f"listed {N_TRACKS}, new {N_TRACKS}, skipped 0, failed 0" in log, log
    one_row_per_track(str(out), {}, [f"t{i:02d}.wav" for i in range(N_TRACKS)])
    for table in ("chroma", "keys"):
        runs = set(tables.committed_runs(str(out / table)))
        assert {p.name[len("run="):] for p in (out / table).glob("run=*")} == runs, "the killed run's files are left"
    now = leases.read(leases.generations()[-1])
    assert now.generation == top.generation + 1 and now.record["released"]

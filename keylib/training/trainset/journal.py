"""``render_journal.jsonl``: the rows of each rendered job, appended as the job finishes, so
that a render stopped part way (a crash, Ctrl-C) goes on from where it stopped when the same
command runs again into the same folder (:class:`RenderJournal`)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["JOURNAL", "RenderJournal", "job_id"]

JOURNAL = "render_journal.jsonl"


def job_id(job) -> str:
    """A job's id: a hash of everything that makes the job (kind, piece, key, variants and
    their seeds, split, soundfonts), the same for the same plan."""
    text = json.dumps(dataclasses.astuple(job), default=int)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


class RenderJournal:
    """The journal in ``out_dir``: one line per finished job, ``{"job", "chroma", "rows"}``
    (a row's chroma as base64 ``.npy`` bytes, so the cache is the one a straight render
    writes). ``chroma`` names the features the rows' chroma was computed with (none:
    rendered without), and only entries of the same ``chroma`` are used."""

    def __init__(self, out_dir: Path, *, chroma: str | None):
        self.path = Path(out_dir) / JOURNAL
        self.chroma = chroma
        self._lines: dict[str, str] = {}  # job id: its line (the last one, if there are several)
        text = self.path.read_text() if self.path.exists() else ""
        if text and not text.endswith("\n"):
            with self.path.open("a") as f:
                f.write("\n")  # the next line starts on its own
        for line in text.splitlines():
            try:
                self._lines[json.loads(line)["job"]] = line
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short when the render stopped

    def rows_of(self, job: str) -> list[dict] | None:
        """The rows journaled for job id ``job``, or None (not rendered, or with other chroma)."""
        line = self._lines.get(job)
        if line is None:
            return None
        entry = json.loads(line)
        if entry.get("chroma") != self.chroma:
            return None
        return [{k: _array(v) if k == "chroma" else v for k, v in row.items()} for row in entry["rows"]]

    def append(self, job: str, rows: list[dict]) -> None:
        """Journals ``rows`` as job ``job``'s (in the file once this returns)."""
        rows = [{k: _text(v) if k == "chroma" else v for k, v in row.items()} for row in rows]
        line = json.dumps({"job": job, "chroma": self.chroma, "rows": rows})
        with self.path.open("a") as f:
            f.write(line + "\n")
        self._lines[job] = line

    def finish(self, jobs: set[str]) -> None:
        """The render of ``jobs`` is written out: their lines go; the file goes when no other
        render's lines are left in it (another ``--only-split``'s, stopped part way)."""
        rest = [line for job, line in self._lines.items() if job not in jobs]
        if rest:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in rest))
            os.replace(tmp, self.path)
        else:
            self.path.unlink(missing_ok=True)


def _text(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _array(text: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)

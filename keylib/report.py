"""MIREX evaluation reports: ``report.json``, ``report.md``, ``report.html`` and PNG plots.

The folder written by :func:`write_report`::

    report.json         the full summary (both fifth conventions, counts, confusion, by source,
                        exclusions with reasons), plus per-track scored and excluded rows
    report.md           the same for people, as Markdown tables
    report.html         self-contained page showing confusion.png and key_distribution.png
    confusion.png       24 x 24 confusion matrix (rows = reference, columns = estimate)
    key_distribution.png  reference vs estimated keys of the scored tracks
    reliability.png     accuracy against confidence in 15 bins (calibration), with the ECE

Plots use matplotlib's Agg backend (no display needed). Every text the report takes from
the data (track ids, sources, error details, metadata) is redacted
(:func:`keylib.redact.redact`) and escaped for where it goes: Markdown table cells and
code spans in ``report.md`` (a ``|`` or a newline in a track id cannot break a table),
HTML in ``report.html``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .evaluate import EXCLUSION_REASONS, Evaluation
from .keys import KEY_NAMES
from .mirex import CATEGORIES, WEIGHTS
from .redact import redact
from .storage.io import atomic_write_text

__all__ = ["REPORT_FILES", "write_report", "plot_confusion", "plot_distribution"]

REPORT_FILES = ("report.json", "report.md", "report.html", "confusion.png", "key_distribution.png",
                "reliability.png")

_REASON_TEXT = {
    "no_label": "no key label in the truth manifest",
    "unparseable_label": "label is not one of the 24 major/minor keys (X, -, None, modal, ...)",
    "not_predicted": "no keys row for the track",
    "no_estimate": "the keys row has no key (failed or silent track)",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: np.ndarray, path: str | Path, *, title: str = "Confusion matrix") -> Path:
    """Save a 24 x 24 confusion matrix (``confusion[ref, est]`` counts) as a PNG."""
    conf = np.asarray(confusion)
    if conf.shape != (24, 24):
        raise ValueError(f"confusion must have shape (24, 24), got {conf.shape}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 8), dpi=100)
    image = ax.imshow(conf, cmap="Blues", interpolation="nearest")
    ax.set_xticks(range(24), KEY_NAMES, rotation=90, fontsize=7)
    ax.set_yticks(range(24), KEY_NAMES, fontsize=7)
    ax.set_xlabel("estimated key")
    ax.set_ylabel("reference key")
    ax.set_title(title)
    peak = conf.max(initial=0)
    for r, e in zip(*np.nonzero(conf)):
        ax.text(e, r, str(int(conf[r, e])), ha="center", va="center", fontsize=6,
                color="white" if conf[r, e] > peak / 2 else "black")
    ax.axhline(11.5, color="grey", lw=0.5)
    ax.axvline(11.5, color="grey", lw=0.5)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_distribution(reference: np.ndarray, estimate: np.ndarray, path: str | Path, *,
                      title: str = "Key distribution") -> Path:
    """Save a bar chart of key counts (24 each, index order), reference beside estimate."""
    ref = np.asarray(reference)
    est = np.asarray(estimate)
    if ref.shape != (24,) or est.shape != (24,):
        raise ValueError(f"distributions must have shape (24,), got {ref.shape} and {est.shape}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4), dpi=100)
    x = np.arange(24)
    ax.bar(x - 0.2, ref, width=0.4, label="reference", color="#4c72b0")
    ax.bar(x + 0.2, est, width=0.4, label="estimate", color="#dd8452")
    ax.set_xticks(x, KEY_NAMES, rotation=90, fontsize=8)
    ax.set_ylabel("tracks")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_reliability(calibration: Mapping[str, Any], path: str | Path, *, title: str = "Reliability") -> Path:
    """Reliability diagram: accuracy in each confidence bin against the diagonal.

    Parameters
    ----------
    calibration : mapping
        :func:`keylib.mirex.calibration_error`'s result (``ece``, ``bins``).
    """
    plt = _pyplot()
    bins = calibration["bins"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    used = [b for b in bins if b["n"]]
    width = bins[0]["hi"] - bins[0]["lo"] if bins else 1 / 15
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in used], [b["accuracy"] for b in used], width=width * 0.9,
           color="#4c72b0", alpha=0.8, label="accuracy in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {calibration['ece']:.3f} ({len(bins)} bins)", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return Path(path)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _summary_rows(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("tracks scored", _fmt(s["scored"])),
        ("tracks excluded", _fmt(s["excluded_total"])),
        ("weighted score, fifth above only (MIREX/NEMA, mir_eval 0.8.2)", _fmt(s["weighted_score"])),
        ("weighted score, fifth above or below", _fmt(s["weighted_score_both_fifths"])),
        ("accuracy", _fmt(s["accuracy"])),
        ("expected calibration error of confidence (15 bins)", _fmt((s.get("calibration") or {}).get("ece"))),
    ]


# What the keys columns beyond the key mean, and what this catalogue's rows say.
_BEYOND_TEXT = {
    "tonal": "share of tracks with a clear key (tonal = true); false for noise, drums, speech, atonal music",
    "tuning_cents": "reference pitch against A440 in cents: median and share more than 10 cents off",
    "segments": "share of tracks with more than one key segment (a key change)",
}


def _beyond_rows(s: Mapping[str, Any]) -> list[list[str]]:
    b = s.get("beyond_key") or {}
    return [
        ["tonal", _fmt(b.get("tonal_share")), _BEYOND_TEXT["tonal"]],
        ["tuning_cents", f"{_fmt(b.get('tuning_median_cents'), 1)} / {_fmt(b.get('tuning_off_share'))}",
         _BEYOND_TEXT["tuning_cents"]],
        ["segments", _fmt(b.get("modulating_share")), _BEYOND_TEXT["segments"]],
    ]


def _source_rows(s: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for source, part in s["by_source"].items():
        rows.append([source, str(part["n"]), str(part["excluded"]), _fmt(part["weighted_score"]),
                     _fmt(part["weighted_score_both_fifths"]), _fmt(part["accuracy"]),
                     *(str(part["counts"][c]) for c in CATEGORIES)])
    return rows


_SOURCE_HEADER = ["source", "scored", "excluded", "score (fifth up)", "score (both fifths)", "accuracy",
                  *CATEGORIES]


# Characters that Markdown would read as syntax in a table cell: the cell separator, the
# backslash itself, emphasis, code, links and inline HTML.
_MD_SPECIAL = re.compile(r"([\\|*`\[\]<>])")


def _md_cell(value: Any) -> str:
    """``value`` as the text of one Markdown table cell: syntax characters backslash-escaped,
    line breaks as ``\\n`` (a raw newline would end the row)."""
    text = _MD_SPECIAL.sub(r"\\\1", str(value))
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def _md_row(cells: list[Any]) -> str:
    return "| " + " | ".join(_md_cell(c) for c in cells) + " |"


def _md_code(value: Any) -> str:
    """``value`` as a Markdown code span on one line, fenced by more backticks than it holds
    (inside a code span no escape works)."""
    text = " ".join(str(value).splitlines())
    fence = "`" * (max(map(len, re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _markdown(result: Evaluation, meta: Mapping[str, Any]) -> str:
    s = result.summary
    lines = [f"# {_md_cell(meta['title'])}", ""]
    lines += [f"- {_md_cell(k)}: {_md_code(v)}" for k, v in meta.items() if k not in ("title",) and v is not None]
    lines += ["", "## Summary", "", "| measure | value |", "|---|---|"]
    lines += [_md_row(list(row)) for row in _summary_rows(s)]
    lines += ["", "## Categories", "",
              "| category | weight | count (fifth up) | count (both fifths) |", "|---|---|---|---|"]
    lines += [f"| {c} | {WEIGHTS[c]} | {s['counts'][c]} | {s['counts_both_fifths'][c]} |" for c in CATEGORIES]
    lines += ["", "## Excluded tracks", "", "| reason | count | meaning |", "|---|---|---|"]
    lines += [f"| {r} | {s['excluded'][r]} | {_REASON_TEXT[r]} |" for r in EXCLUSION_REASONS]
    if len(result.excluded):
        lines += ["", "| track | reason | detail |", "|---|---|---|"]
        for r in result.excluded.head(200).itertuples(index=False):
            lines.append(_md_row([r.track_id, r.reason, r.detail]))
    if s["by_source"]:
        lines += ["", "## By source", "", _md_row(_SOURCE_HEADER), "|" + "---|" * len(_SOURCE_HEADER)]
        lines += [_md_row(row) for row in _source_rows(s)]
    lines += ["", "## Beyond the key", "", "| column | value | meaning |", "|---|---|---|"]
    lines += [_md_row(row) for row in _beyond_rows(s)]
    lines += ["", "## Plots", "", "![confusion matrix](confusion.png)", "",
              "![key distribution](key_distribution.png)", "",
              "![reliability diagram: accuracy against confidence](reliability.png)", ""]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(result: Evaluation, meta: Mapping[str, Any]) -> str:
    s = result.summary
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(meta['title'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:left}th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(meta['title'])}</h1>",
        "<ul>" + "".join(f"<li>{html.escape(k)}: <code>{html.escape(str(v))}</code></li>"
                         for k, v in meta.items() if k != "title" and v is not None) + "</ul>",
        "<h2>Summary</h2>", _table(["measure", "value"], [list(r) for r in _summary_rows(s)]),
        "<h2>Categories</h2>",
        _table(["category", "count (fifth up)", "count (both fifths)"],
               [[c, str(s["counts"][c]), str(s["counts_both_fifths"][c])] for c in CATEGORIES]),
        "<h2>Excluded tracks</h2>",
        _table(["reason", "count", "meaning"], [[r, str(s["excluded"][r]), _REASON_TEXT[r]] for r in EXCLUSION_REASONS]),
    ]
    if len(result.excluded):
        parts.append(_table(["track", "reason", "detail"],
                            [[r.track_id, r.reason, r.detail] for r in result.excluded.head(200).itertuples(index=False)]))
    if s["by_source"]:
        parts += ["<h2>By source</h2>", _table(_SOURCE_HEADER, _source_rows(s))]
    parts += ["<h2>Beyond the key</h2>", _table(["column", "value", "meaning"], _beyond_rows(s))]
    parts += [
        "<h2>Calibration</h2>",
        "<img src='reliability.png' alt='reliability diagram: accuracy against confidence in 15 bins'>",
        "<h2>Confusion matrix</h2>",
        "<img src='confusion.png' alt='24 x 24 confusion matrix, rows reference, columns estimate'>",
        "<h2>Key distribution</h2>",
        "<img src='key_distribution.png' alt='reference and estimated key counts'>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _redacted(value: Any) -> Any:
    """A string redacted; anything else (numbers, lists of segments, None) as it is."""
    return redact(value) if isinstance(value, str) else value


def _redacted_evaluation(result: Evaluation) -> Evaluation:
    """``result`` with every string the data brought in redacted: the text columns of the
    scored and excluded rows and the source names of ``by_source``."""
    def frame(rows):
        rows = rows.copy()
        for name in rows.select_dtypes(include=["object", "string"]).columns:
            rows[name] = rows[name].map(_redacted)
        return rows

    summary = {**result.summary,
               "by_source": {redact(str(k)): v for k, v in result.summary.get("by_source", {}).items()}}
    return dataclasses.replace(result, scored=frame(result.scored), excluded=frame(result.excluded),
                               summary=summary)


def write_report(result: Evaluation, folder: str | Path, *, title: str = "keylib MIREX key evaluation",
                 metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the report files (:data:`REPORT_FILES`) of an evaluation into ``folder``.

    Parameters
    ----------
    result : Evaluation
        From :func:`keylib.evaluate.evaluate_keys`.
    folder : str or Path
        Created if needed; existing report files are replaced.
    metadata : mapping, optional
        Extra facts shown at the top (keys table, truth manifest, model version, ...).

    Returns
    -------
    Path
        The path of ``report.html``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"title": title, "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **dict(metadata or {})}
    meta = {k: _redacted(v) for k, v in meta.items()}
    result = _redacted_evaluation(result)
    s = result.summary
    plot_confusion(np.array(s["confusion"]), folder / "confusion.png")
    plot_distribution(np.array(s["reference_distribution"]), np.array(s["estimate_distribution"]),
                      folder / "key_distribution.png")
    plot_reliability(s["calibration"], folder / "reliability.png", title="Calibration of confidence")
    payload = {
        "metadata": meta,
        "summary": s,
        "exclusion_reasons": _REASON_TEXT,
        "scored_tracks": json.loads(result.scored.to_json(orient="records")),
        "excluded_tracks": json.loads(result.excluded.to_json(orient="records")),
    }
    atomic_write_text(folder / "report.json", json.dumps(payload, indent=2, default=str))
    atomic_write_text(folder / "report.md", _markdown(result, meta))
    atomic_write_text(folder / "report.html", _html(result, meta))
    return folder / "report.html"

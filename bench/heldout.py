"""The held-out rows of one or more training-set folders, with the path of each audio file.

    from heldout import load_heldout
    df = load_heldout([Path("DATA/ts3"), Path("DATA/heldout-b")])
    # the chroma cache's columns, plus ``render`` (index of the folder) and ``path`` (its FLAC)

Several folders are held-out renders with other seeds, scored as one set. Paths are built
from the folder given, not read from the cache's ``uri``, so a moved folder still works.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keylib.features import FEATURE_VERSION  # noqa: E402
from keylib.training.data import load_dataset  # noqa: E402


def load_heldout(roots: Sequence[Path], feature_version: str = FEATURE_VERSION, *,
                 cache: str = "chroma_cache.parquet"):
    """``split == heldout`` rows of ``feature_version`` (the scored model's) of each folder's
    chroma cache (``cache``: its file name, for a folder that keeps another feature
    version's cache beside the one ``make-training-set`` writes), in folder order."""
    import pandas as pd

    parts = []
    for i, root in enumerate(Path(r) for r in roots):
        part = load_dataset([root / cache], feature_version=feature_version)
        part = part[part["split"] == "heldout"].assign(render=i)
        part["path"] = [root / "audio" / "heldout" / s / f"{t}.flac" for s, t in zip(part["source"], part["track_id"])]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)

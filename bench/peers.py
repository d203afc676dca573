"""Peer key estimators for the benchmarks only (never a dependency of keylib).

Essentia is AGPL: keylib must not depend on it, so the benchmarks install it on demand
into ``build/bench-peers/`` (outside the project's environment, ``pip install --target``)
and put that folder on ``sys.path`` for the benchmark process alone.

    from peers import essentia_key, ESSENTIA_PROFILES
    key = essentia_key("song.mp3", profile="bgate")   # "C# minor" (mir_eval spelling)
"""

from __future__ import annotations

import functools
import importlib
import subprocess
import sys
from pathlib import Path

__all__ = ["ESSENTIA_PROFILES", "essentia", "essentia_key", "essentia_keys", "essentia_command"]

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "build" / "bench-peers"
ESSENTIA_SPEC = "essentia==2.1b6.dev1389"
# KeyExtractor profiles worth comparing on pop and classical material; bgate is Essentia's
# default in KeyExtractor, edma/edmm target electronic music, temperley/krumhansl the
# classical templates, shaath pop.
ESSENTIA_PROFILES = ("bgate", "edma", "edmm", "temperley", "krumhansl", "shaath")
_SPELL = {"A#": "Bb", "C#": "Db", "D#": "Eb", "F#": "Gb", "G#": "Ab"}


@functools.lru_cache(maxsize=1)
def essentia():
    """``essentia.standard``, installed into ``build/bench-peers`` on first use."""
    if str(PEERS_DIR) not in sys.path:
        sys.path.insert(0, str(PEERS_DIR))
    try:
        import essentia.standard  # noqa: F401
    except ImportError:
        PEERS_DIR.mkdir(parents=True, exist_ok=True)
        print(f"bench: installing {ESSENTIA_SPEC} into {PEERS_DIR} (benchmark only)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(PEERS_DIR), ESSENTIA_SPEC, "pyyaml"], check=True)
        importlib.invalidate_caches()  # the folder did not exist when the path was first searched
    import essentia

    essentia.log.warningActive = False
    essentia.log.infoActive = False
    import essentia.standard as es

    return es


def _name(key: str, scale: str) -> str:
    key = _SPELL.get(key, key)
    return f"{key} {'minor' if scale == 'minor' else 'major'}"


def essentia_key(path: str | Path, *, profile: str = "bgate") -> str:
    """Essentia's ``KeyExtractor`` key of one audio file (decoding included), mir_eval spelling."""
    es = essentia()
    audio = es.MonoLoader(filename=str(path), sampleRate=44100)()
    key, scale, _strength = es.KeyExtractor(profileType=profile, sampleRate=44100)(audio)
    return _name(key, scale)


def essentia_keys(path: str | Path, *, profiles=ESSENTIA_PROFILES) -> dict[str, str]:
    """One decode, then ``KeyExtractor`` with each profile: ``{profile: key}``."""
    es = essentia()
    audio = es.MonoLoader(filename=str(path), sampleRate=44100)()
    out = {}
    for profile in profiles:
        key, scale, _strength = es.KeyExtractor(profileType=profile, sampleRate=44100)(audio)
        out[profile] = _name(key, scale)
    return out


def essentia_command(path: str | Path, *, profile: str = "bgate") -> list[str]:
    """A fresh Python process that prints Essentia's key of ``path`` (for start-up timing)."""
    code = (
        f"import sys; sys.path.insert(0, {str(PEERS_DIR)!r}); import essentia; "
        "essentia.log.warningActive = False; import essentia.standard as es; "
        f"a = es.MonoLoader(filename={str(path)!r}, sampleRate=44100)(); "
        f"print(*es.KeyExtractor(profileType={profile!r}, sampleRate=44100)(a)[:2])"
    )
    return [sys.executable, "-c", code]

"""Job-level flows over Spark: list -> select what is new -> transform in the workers -> commit.

The only part of keylib that holds a Spark session. Each flow is one job's logic, called
by its thin ``jobs/*.py`` entry point, by other flows and by the tests alike:

- :func:`run_extract` (:mod:`.extract`): catalogue -> ``OUT/chroma``
- :func:`run_infer` (:mod:`.infer`): ``OUT/chroma`` -> ``OUT/keys``
- :func:`run_annotate` (:mod:`.annotate`): catalogue -> chroma and keys in one pass (-> report)
- :func:`run_evaluate` (:mod:`.evaluate`): keys + truth manifest -> report
- :func:`run_nightly` (:mod:`.nightly`): annotate incrementally, then the run manifest

Below the flows, nothing imports them: the pure modules (rows, features, scoring,
reports) and the worker steps (:mod:`keylib.spark.workers`) know nothing of the jobs.
"""

from .annotate import manifest_has_keys, run_annotate, summarize_keys
from .evaluate import run_evaluate
from .extract import CHROMA_TABLE, run_extract
from .infer import read_keys, run_infer
from .nightly import run_nightly

__all__ = [
    "CHROMA_TABLE", "run_extract", "run_infer", "read_keys", "run_annotate", "summarize_keys",
    "manifest_has_keys", "run_evaluate", "run_nightly",
]

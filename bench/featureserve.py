"""`cavra-ingest serve` with features switched off that no setting switches off: the feature-cost bench's.

BENCH_FEATURES_OFF is a comma-separated list of `received_at`, `metrics`, `plain_counts`, `summed_counts`,
`pair_counts`; the server's defaults are untouched (this runs only under bench/featurecost.py).
"""

from __future__ import annotations

import os
import sys

from cavra_ingest.cli.main import main
from cavra_ingest.core import validate
from cavra_ingest.http.metrics import Metrics
from cavra_ingest.store.sqlite import counts

STAMP = "2026-01-01T00:00:00.000000+00:00"


def switch_off(names: set[str]) -> None:
    """Patch the named features out of this process."""
    if "received_at" in names:
        validate.utc_text = lambda moment: STAMP  # type: ignore[assignment]
    if "metrics" in names:
        for method in ("observe_request", "observe_batch", "count_records"):
            setattr(Metrics, method, lambda self, *args, **kwargs: None)
    if "summed_counts" in names:
        counts.ADD_DELTA = tuple(sql for sql in counts.ADD_DELTA if f"'{counts.ANY_OUTCOME}', field" not in sql)
    if "plain_counts" in names:
        # The day and all-time rows per outcome go; the sums are made from the delta as before, when kept.
        counts.ADD_DELTA = tuple(sql for sql in counts.ADD_DELTA if "'*', field" in sql or sql.startswith("DROP"))
    if "pair_counts" in names:
        counts.PAIR_BATCH = 1 << 62


if __name__ == "__main__":
    switch_off({name for name in os.environ.get("BENCH_FEATURES_OFF", "").split(",") if name})
    sys.exit(main())

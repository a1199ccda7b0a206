"""A short power-loss campaign (`make powerloss` runs the full one): every store keeps what it acknowledged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import powerloss
from tests.conftest import REQUIRE_SERVICES
from tests.lossyfs import fuse_missing

pytestmark = [pytest.mark.powerloss, pytest.mark.timeout(240)]


def test_short_campaign_loses_nothing_acknowledged_where_the_store_syncs(tmp_path: Path) -> None:
    reason = fuse_missing()
    if reason is not None:
        if REQUIRE_SERVICES:
            pytest.fail(reason + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
        pytest.skip(reason)
    output = tmp_path / "powerloss.json"
    results = powerloss.main(["--rounds", "2", "--other-rounds", "2", "--output", str(output)])
    assert json.loads(output.read_text()) == results
    for name, tally in results.items():
        assert tally["rounds"] == 2, name
        assert tally["acked"] > 0, name
        assert tally["corrupt"] == 0 and tally["duplicated"] == 0, (name, tally)
        if name != "sqlite-normal":
            assert tally["lost"] == 0, (name, tally)


def test_the_committed_full_campaign_saw_loss_where_nothing_is_synced() -> None:
    """synchronous=NORMAL must lose commits to a cut: if the full campaign never saw it, the harness is broken."""
    results = json.loads(powerloss.RESULTS.read_text())
    assert results["sqlite-normal"]["lost"] > 0, results
    for name in ("sqlite-full", "json", "audit-log", "client-spool"):
        assert results[name]["rounds"] > 0 and results[name]["lost"] == 0, (name, results[name])
    assert results["audit-log"]["checkpoints"] > 0 and results["audit-log"]["forks"] == 0, results
    for name, tally in results.items():
        assert tally["corrupt"] == 0, (name, tally)

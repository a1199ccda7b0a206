"""A short power-loss campaign of every target (`make powerloss` runs the full one): a 2xx survives a cut."""

from __future__ import annotations

import os

import pytest

from tests.lossyfs.mount import require_fuse
from tests.powerloss import TARGETS, campaign

ROUNDS = int(os.environ.get("CAVRA_POWERLOSS_ROUNDS", "3"))


@pytest.mark.slow
@pytest.mark.powerloss
async def test_every_acknowledged_decision_survives_a_power_cut_and_the_harness_sees_loss() -> None:
    require_fuse()
    results = await campaign(list(TARGETS), lambda _: ROUNDS, seed=20261207)
    for name, result in results.items():
        assert result["rounds"] == ROUNDS and result["acked"] > 0, (name, result)
        assert result["corrupt"] == 0 and result["duplicated"] == 0, (name, result)
    assert results["sqlite-full"]["lost"] == 0, results
    assert results["json"]["lost"] == 0, results
    # synchronous=NORMAL syncs the WAL only at checkpoints: a cut mid-load loses the newest commits. Seeing
    # that loss shows the harness can fail; a harness that never sees it would prove nothing above.
    assert results["sqlite-normal"]["lost"] > 0, results

"""A short power-loss campaign of every target (`make powerloss` runs the full one): every store keeps what it
acknowledged; JetStream with its default sync is the one allowed to lose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import powerloss
from tests.conftest import REQUIRE_SERVICES, require_postgres
from tests.lossyfs import fuse_missing
from tests.natscluster import require_nats
from tests.powerloss_pg import postgres_missing

pytestmark = [pytest.mark.powerloss, pytest.mark.timeout(600)]

# Targets that may lose acknowledged records: what the full campaign must show they do.
LOSSY = {"sqlite-normal", "jetstream-default"}
# A cluster on NATS's default sync may also not come back after a cut (a stream's files half written): its round
# counts as corrupt (tests/powerloss_js.py). A finding of that target, like its losses; no other target may.
MAY_BREAK = {"jetstream-default"}
GROUPS = {
    "files": (["sqlite-full", "sqlite-full-torn", "sqlite-normal", "json", "audit-log", "client-spool"], 2),
    "postgres": (["postgres"], 2),
    "jetstream": (["jetstream-default", "jetstream-always"], 1),
}


def require(reason: str | None) -> None:
    if reason is not None:
        if REQUIRE_SERVICES:
            pytest.fail(reason + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
        pytest.skip(reason)


@pytest.mark.parametrize("group", GROUPS)
def test_short_campaign_loses_nothing_acknowledged_where_the_store_syncs(tmp_path: Path, group: str) -> None:
    require(fuse_missing())
    if group == "postgres":
        require(postgres_missing())
    if group == "jetstream":
        require_nats()
        require_postgres()
    targets, rounds = GROUPS[group]
    output = tmp_path / "powerloss.json"
    argv = ["--rounds", str(rounds), "--other-rounds", str(rounds), "--targets", ",".join(targets)]
    results = powerloss.main([*argv, "--output", str(output)])
    assert json.loads(output.read_text()) == results
    assert set(results) == set(targets)
    for name, tally in results.items():
        assert tally["rounds"] == rounds, name
        assert tally["acked"] > 0, name
        assert tally["duplicated"] == 0, (name, tally)
        if name not in MAY_BREAK:
            assert tally["corrupt"] == 0, (name, tally)
        if name not in LOSSY:
            assert tally["lost"] == 0, (name, tally)


def test_the_committed_full_campaign_covers_every_target_and_saw_loss_only_where_nothing_is_synced() -> None:
    """synchronous=NORMAL must lose commits to a cut (else the harness is broken), and so must JetStream on its
    default 2-minute sync timer (Jepsen's finding); everything else loses nothing."""
    results = json.loads(powerloss.RESULTS.read_text())
    assert set(results) == set(powerloss.TARGETS), sorted(results)
    for name in LOSSY:
        assert results[name]["lost"] > 0, (name, results[name])
    for name, tally in results.items():
        assert tally["rounds"] > 0, (name, tally)
        if name not in MAY_BREAK:
            assert tally["corrupt"] == 0, (name, tally)
        if name not in LOSSY:
            assert tally["lost"] == 0 and tally["duplicated"] == 0, (name, tally)
    assert results["audit-log"]["checkpoints"] > 0 and results["audit-log"]["forks"] == 0, results

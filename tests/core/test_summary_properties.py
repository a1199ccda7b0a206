"""Session summaries stored batch by batch equal a recount from scratch, whatever the order, batching, replays."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cavra_ingest.core.models import DECISION_DECODER, ENCODER, DecisionRecord, SessionIn, SessionRecord, normalize
from cavra_ingest.core.sink import WriteItem
from cavra_ingest.core.summary import recount
from cavra_ingest.store.base import Store
from cavra_ingest.store.jsonfile import JsonStore
from cavra_ingest.store.sqlite.store import SqliteStore

SESSIONS = ["s1", "s2", "s3"]
# One tenant per session, or none: the summary keeps "the latest decision's tenant, else any", so sessions whose
# decisions named different tenants would have an order-dependent tenant. Mixing a tenant with no tenant is covered.
TENANT = {"s1": "tenant-a", "s2": None, "s3": "tenant-c"}
# fsync costs nothing on tmpfs: many small stores per test stay fast; the write path is the same.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def decision(draw: st.DrawFn, decision_id: str) -> dict[str, Any]:
    session_id = draw(st.sampled_from(SESSIONS))
    body: dict[str, Any] = {
        "decision_id": decision_id,
        "session_id": session_id,
        "correlation_id": f"corr-{decision_id}",
        "decision": draw(st.sampled_from(["allow", "block", "require_approval", "warn"])),
        # Few distinct moments, so equal timestamps (ties broken by decision_id) are common.
        "timestamp": f"2026-03-01T10:00:0{draw(st.integers(0, 4))}+0{draw(st.integers(0, 1))}:00",
        "agent_id": draw(st.sampled_from(["agent-a", "agent-b", "agent-c"])),
        "actor": draw(st.sampled_from(["ai-agent", "human"])),
        "repository": draw(st.sampled_from(["acme/api", "acme/web"])),
        "policy_pack": draw(st.sampled_from(["baseline", "strict"])),
        "evidence_refs": draw(st.lists(st.sampled_from(["ev-1", "ev-2", "ev-3", "ev-4"]), max_size=3)),
    }
    if TENANT[session_id] and draw(st.booleans()):
        body["tenant_id"] = TENANT[session_id]
        body["workspace_id"] = f"ws-{session_id}"
    return body


@st.composite
def histories(draw: st.DrawFn, with_states: bool = True) -> tuple[dict[str, dict[str, Any]], list[list[Any]]]:
    """A set of decisions, a sequence that sends them in any order with replays, cut into batches."""
    ids = draw(st.lists(st.text("abcdef0123", min_size=1, max_size=6), min_size=1, max_size=25, unique=True))
    universe = {decision_id: draw(decision(decision_id)) for decision_id in ids}
    sends: list[Any] = draw(st.lists(st.sampled_from(ids), min_size=len(ids), max_size=3 * len(ids)))
    sends += [i for i in ids if i not in sends]  # every decision is sent at least once
    sends = draw(st.permutations(sends))
    if with_states:
        for _ in range(draw(st.integers(0, 3))):
            state = ("state", draw(st.sampled_from(SESSIONS)), draw(st.sampled_from(["completed", "failed"])))
            sends.insert(draw(st.integers(0, len(sends))), state)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(sends) - 1)), max_size=len(sends))))
    batches = [sends[a:b] for a, b in zip([0, *cuts], [*cuts, len(sends)], strict=True) if sends[a:b]]
    return universe, batches


def write_item(universe: dict[str, dict[str, Any]], entry: Any) -> WriteItem:
    if isinstance(entry, tuple):
        return SessionIn(session_id=entry[1], state=entry[2])
    item = DECISION_DECODER.decode(ENCODER.encode(universe[entry]))
    return normalize(item, [])


async def store_history(store: Store, universe: dict[str, dict[str, Any]], batches: list[list[Any]]) -> None:
    await store.open()
    try:
        for batch in batches:
            outcomes = await store.write([write_item(universe, entry) for entry in batch])
            # A refused state change (completed -> failed) is a conflict; decisions are never one here.
            assert {outcome.status for outcome in outcomes} <= {"created", "duplicate", "updated", "conflict"}
            assert all(o.status != "conflict" for o, e in zip(outcomes, batch, strict=True) if isinstance(e, str))
        summaries = {}
        for session_id in SESSIONS:
            raw = await store.get_session(session_id)
            if raw is not None:
                summaries[session_id] = msgspec.json.decode(raw, type=SessionRecord)
        assert_summaries(summaries, universe, batches)
        for decision_id, sent in universe.items():
            stored = msgspec.json.decode(await store.get_decision(decision_id) or b"null", type=DecisionRecord)
            assert stored.decision == sent["decision"] and stored.session_id == sent["session_id"]
    finally:
        await store.close()


def assert_summaries(
    summaries: dict[str, SessionRecord], universe: dict[str, dict[str, Any]], batches: list[list[Any]]
) -> None:
    sends = [entry for batch in batches for entry in batch]
    for session_id in SESSIONS:
        decisions = [
            normalize(DECISION_DECODER.decode(ENCODER.encode(d)), []).record
            for d in universe.values()
            if d["session_id"] == session_id
        ]
        states = [entry[2] for entry in sends if isinstance(entry, tuple) and entry[1] == session_id]
        stored = summaries.get(session_id)
        if not decisions:
            assert stored is None or stored.decision_count == 0
            continue
        assert stored is not None
        # completed and failed are final but for archived (summary.TRANSITIONS): the first one sent stays.
        expected = recount(session_id, decisions, state=states[0] if states else "active")
        got = msgspec.structs.asdict(stored)
        history = got.pop("state_history") or []
        assert [(c.from_state, c.to_state) for c in history] == ([("active", states[0])] if states else [])
        expected_fields = msgspec.structs.asdict(expected)
        expected_fields.pop("state_history")
        assert got == expected_fields


def run(store_factory: Any, universe: dict[str, dict[str, Any]], batches: list[list[Any]]) -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
        asyncio.run(store_history(store_factory(Path(folder)), universe, batches))


@pytest.mark.slow
@PROPERTIES
@given(histories())
def test_sqlite_summary_equals_recount(history: Any) -> None:
    run(lambda folder: SqliteStore(folder / "activity.db"), *history)


@pytest.mark.slow
@PROPERTIES
@given(histories())
def test_json_store_summary_equals_recount(history: Any) -> None:
    run(lambda folder: JsonStore(folder / "activity.json"), *history)


@pytest.mark.slow
@PROPERTIES
@given(histories(with_states=False), st.randoms(use_true_random=False))
def test_summary_is_the_same_for_any_order_and_batching(history: Any, rnd: Any) -> None:
    """The same decisions sent in another order and other batches give byte-identical stored summaries."""
    universe, batches = history
    sends = [entry for batch in batches for entry in batch]
    rnd.shuffle(sends)
    size = rnd.randint(1, len(sends))
    reordered = [sends[i : i + size] for i in range(0, len(sends), size)]

    async def summaries(batches: list[list[Any]], folder: Path) -> dict[str, bytes | None]:
        store = SqliteStore(folder / "activity.db")
        await store.open()
        try:
            for batch in batches:
                await store.write([write_item(universe, entry) for entry in batch])
            return {session_id: await store.get_session(session_id) for session_id in SESSIONS}
        finally:
            await store.close()

    with tempfile.TemporaryDirectory(dir=SCRATCH) as one, tempfile.TemporaryDirectory(dir=SCRATCH) as two:
        assert asyncio.run(summaries(batches, Path(one))) == asyncio.run(summaries(reordered, Path(two)))

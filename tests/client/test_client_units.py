"""The client's pure parts: id order, backoff arithmetic, Retry-After, record preparation, the spool file."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import msgspec

from cavra_ingest.client import Client
from cavra_ingest.client.ids import IdGenerator, id_time_ms, new_decision_id
from cavra_ingest.client.items import prepare
from cavra_ingest.client.retry import backoff_delay, parse_retry_after
from cavra_ingest.client.spool import Spool
from cavra_ingest.core.models import DecisionIn


def test_ids_are_uuid7_and_fit_the_id_rules():
    decision_id = new_decision_id()
    assert decision_id.startswith("dec_") and len(decision_id) == 36
    value = uuid.UUID(hex=decision_id[4:])
    assert value.version == 7 and value.variant == uuid.RFC_4122
    msgspec.json.decode(
        msgspec.json.encode({"decision": "allow", "session_id": "s", "decision_id": decision_id}), type=DecisionIn
    )


def test_string_order_is_time_order():
    times = sorted(random.Random(7).sample(range(1_700_000_000_000, 1_800_000_000_000), 200))
    ids = [IdGenerator().new_decision_id(ms) for ms in reversed(times)][::-1]  # fresh state: no clamping
    assert sorted(ids) == ids
    assert [id_time_ms(i) for i in ids] == times


def test_ids_increase_within_one_millisecond_and_past_the_counter():
    ms, ids_ = 1_900_000_000_000, IdGenerator()
    ids = [ids_.new_decision_id(ms) for _ in range(10_000)]  # more than the 12-bit counter holds
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert id_time_ms(ids[0]) == ms and id_time_ms(ids[-1]) <= ms + 3


def test_a_clock_stepping_back_does_not_break_order():
    ids = IdGenerator()
    first = ids.new_decision_id(1_950_000_000_000)
    assert ids.new_decision_id(1_940_000_000_000) > first


def test_backoff_is_full_jitter_under_a_growing_ceiling_and_a_cap():
    rand = random.Random(1)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (8, 10.0), (200, 10.0)]:
        delays = [backoff_delay(attempt, 0.1, 10.0, rand=rand) for _ in range(500)]
        assert 0 <= min(delays) < ceiling * 0.1 and ceiling * 0.9 < max(delays) <= ceiling


def test_backoff_never_goes_below_retry_after():
    rand = random.Random(2)
    assert all(backoff_delay(a, 0.1, 10.0, 1.0, rand) >= 1.0 for a in range(1, 20) for _ in range(50))
    assert max(backoff_delay(1, 0.1, 10.0, 3.0, rand) for _ in range(50)) == 3.0


def test_retry_after_seconds_and_dates():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-1") is None


def test_prepare_names_and_dates_a_copy_and_keeps_what_was_given():
    given = {"decision": "allow", "session_id": "s"}
    decision_id, body = prepare(given)
    record = msgspec.json.decode(body)
    assert given == {"decision": "allow", "session_id": "s"}
    assert record["decision_id"] == decision_id and decision_id.startswith("dec_")
    assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None
    kept = {"decision": "allow", "session_id": "s", "decision_id": "mine", "timestamp": "2026-01-01T00:00:00Z"}
    assert prepare(kept) == ("mine", msgspec.json.encode(kept))
    assert "timestamp" not in msgspec.json.decode(prepare(given, stamp_time=False)[1])


def test_spool_keeps_records_until_removed_across_reopening(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    seqs = [spool.add(f"d{n}", b'{"n": %d}' % n) for n in range(5)]
    assert seqs == sorted(seqs)
    spool.remove(seqs[:2])
    spool.close()
    spool = Spool(tmp_path / "spool.db")
    assert spool.count() == (3, seqs[-1])
    assert [row[1] for row in spool.after(0, 10)] == ["d2", "d3", "d4"]
    assert [row[1] for row in spool.after(seqs[2], 1)] == ["d3"]
    assert spool.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert spool.conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    spool.close()


def test_token_comes_from_the_argument_or_cavra_token(monkeypatch):
    monkeypatch.setenv("CAVRA_TOKEN", "from-env")
    assert Client("http://x").token == "from-env"
    assert Client("http://x", token="given").token == "given"
    monkeypatch.delenv("CAVRA_TOKEN")
    assert Client("http://x").token is None

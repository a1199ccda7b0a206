"""Sign-in sessions and access events on SQLite and PostgreSQL (migration 022): hashed cookies, ending by sub/sid."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cavra_ingest.store import make_store
from cavra_ingest.store.signin import AccessEvent, SigninSession, digest, signin_store
from tests.conftest import drop_schema, require_postgres, store_settings


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_sessions_are_kept_hashed_and_end_by_cookie_sub_or_sid(kind: str, tmp_path: Path) -> None:
    if kind == "postgres":
        require_postgres()
    settings = store_settings(kind, tmp_path)
    await make_store(settings).migrate()
    signins = signin_store(settings)
    assert signins is not None
    await signins.open()
    try:
        alice = SigninSession("alice", ["read"], 100.0, 100.0, "sid-a", "alice@acme.test", "acme")
        cookie, csrf = await signins.create(alice)
        other, _ = await signins.create(SigninSession("alice", ["read"], 100.0, 100.0, "sid-b", tenant_id="acme"))
        bob, _ = await signins.create(SigninSession("bob", ["admin"], 100.0, 100.0, "sid-c"))
        found = await signins.find(cookie)
        assert found is not None and found.tenant_id == "acme" and found.scopes == ["read"]
        assert found.csrf_hash == digest(csrf) and found.email == "alice@acme.test"
        await signins.seen(cookie, 150.0)
        assert (await signins.find(cookie)).seen_s == 150.0  # type: ignore[union-attr]
        assert await signins.find("made-up") is None
        # A back-channel logout naming a provider session ends that one only; naming a person ends all theirs.
        assert await signins.end_person(200.0, "backchannel", sub="alice", sid="sid-b") == 1
        assert await signins.find(other) is None and await signins.find(cookie) is not None
        assert await signins.end_person(200.0, "backchannel", sub="alice", sid=None) == 1
        assert await signins.find(cookie) is None and await signins.find(bob) is not None
        assert await signins.end(bob, 210.0, "logout") and not await signins.end(bob, 211.0, "logout")

        for tenant in ("acme", "globex", None):
            await signins.record(AccessEvent("sign-in", "ok", sub="alice", remote="127.0.0.1", tenant_id=tenant))
        events = await signins.events(None)
        assert [e.tenant_id for e in events] == [None, "globex", "acme"] and events[0].at
        assert [e.tenant_id for e in await signins.events("acme")] == ["acme"]
        assert len(await signins.events(None, before=events[0].id, limit=1)) == 1
        if kind == "sqlite":
            with sqlite3.connect(settings.store.path) as conn:
                stored = str(conn.execute("SELECT * FROM signin_sessions").fetchall())
            assert cookie not in stored and csrf not in stored and digest(cookie) in stored
    finally:
        await signins.close()
        if kind == "postgres":
            await drop_schema(settings.store.postgres_schema)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_sign_ins_under_way_are_hashed_used_once_stale_after_their_ttl_and_bounded(
    kind: str, tmp_path: Path
) -> None:
    if kind == "postgres":
        require_postgres()
    settings = store_settings(kind, tmp_path)
    await make_store(settings).migrate()
    signins = signin_store(settings)
    assert signins is not None
    await signins.open()
    try:
        assert await signins.begin_login("state-1", "binding-1", 100.0, 600.0, 2)
        assert await signins.begin_login("state-2", "binding-2", 100.0, 600.0, 2)
        assert not await signins.begin_login("state-3", "binding-3", 101.0, 600.0, 2)  # two under way at most
        assert await signins.take_login("state-1", 150.0, 600.0) == digest("binding-1")
        assert await signins.take_login("state-1", 150.0, 600.0) is None  # used up
        assert await signins.take_login("made-up", 150.0, 600.0) is None
        assert await signins.take_login("state-2", 701.0, 600.0) is None  # stale
        # Stale ones are dropped when a new one begins, so they never hold the bound.
        assert await signins.begin_login("state-4", "binding-4", 800.0, 600.0, 1)
        if kind == "sqlite":
            with sqlite3.connect(settings.store.path) as conn:
                stored = str(conn.execute("SELECT * FROM signin_logins").fetchall())
            assert "state-4" not in stored and "binding-4" not in stored and digest("state-4") in stored
    finally:
        await signins.close()
        if kind == "postgres":
            await drop_schema(settings.store.postgres_schema)

"""The audit log: leaves written with their decisions, Ed25519-signed checkpoints, proofs over cached subtrees."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from cavra_ingest.auditlog import merkle
from cavra_ingest.auditlog.notes import Signer, checkpoint_text, key_path, load_signer
from cavra_ingest.auditlog.tables import (
    COUNT_NODES,
    INSERT_CHECKPOINT,
    INSERT_NODE,
    NEXT_INDEX,
    SELECT_CHECKPOINT,
    SELECT_LATEST,
    SELECT_LEAF_HASHES,
    SELECT_LEAF_INDEX,
    SELECT_NODE,
    PostgresLog,
    SqliteLog,
)
from cavra_ingest.core.models import now_text
from cavra_ingest.settings import Settings

log = logging.getLogger(__name__)

# Complete aligned subtrees of 2^TILE_LEVEL leaves and more are cached, so a proof reads O(log n) rows.
TILE_LEVEL = 8
TILE = 1 << TILE_LEVEL


class LogError(Exception):
    """The log's own tables are not what the writer left (a gap, a bad note): nothing is signed or proven."""


@dataclass
class Memo:
    """Subtree hashes and leaf tiles already read, for proofs on one tree size."""

    nodes: dict[tuple[int, int], bytes | None] = field(default_factory=dict)
    tiles: dict[int, list[bytes]] = field(default_factory=dict)


class AuditLog:
    """Proofs and checkpoints over the log's tables."""

    def __init__(self, db: SqliteLog | PostgresLog, signer: Signer, origin: str) -> None:
        self.db = db
        self.signer = signer
        self.origin = origin

    async def size(self) -> int:
        return int((await self.db.fetch(NEXT_INDEX))[0][0])

    async def leaf_index(self, decision_id: str) -> int | None:
        rows = await self.db.fetch(SELECT_LEAF_INDEX, decision_id)
        return int(rows[0][0]) if rows else None

    async def leaves(self, start: int, end: int) -> list[bytes]:
        hashes = [bytes(row[0]) for row in await self.db.fetch(SELECT_LEAF_HASHES, start, end)]
        if len(hashes) != end - start:
            raise LogError(f"leaves {start}..{end - 1} are not all in the log")
        return hashes

    async def checkpoint(self, size: int | None = None) -> tuple[int, str] | None:
        """Return (size, note) of the latest checkpoint, or of the one of this size."""
        if size is None:
            rows = await self.db.fetch(SELECT_LATEST)
            return (int(rows[0][0]), rows[0][1]) if rows else None
        rows = await self.db.fetch(SELECT_CHECKPOINT, size)
        return (size, rows[0][0]) if rows else None

    async def hashes(self, ranges: Iterable[merkle.Range], size: int, memo: Memo | None = None) -> list[bytes]:
        """MTH of each range within the tree of `size`, from cached subtrees and at most a few leaf tiles.

        `memo` carries what was read across calls on the same tree (an evidence bundle's many proofs).
        """
        memo = memo if memo is not None else Memo()
        out = []
        for start, end in ranges:
            parts = []
            for first, count in merkle.subtrees(start, end):
                level = count.bit_length() - 1
                key = (level, first >> level)
                if level >= TILE_LEVEL and key not in memo.nodes:
                    cached = await self.db.fetch(SELECT_NODE, *key)
                    memo.nodes[key] = bytes(cached[0][0]) if cached else None
                known = memo.nodes.get(key)
                if known is not None:
                    parts.append(known)
                    continue
                # Below a tile (or not cached yet): from the leaves of the tiles it spans, each read once.
                leaves = []
                for tile in range(first // TILE, (first + count - 1) // TILE + 1):
                    if tile not in memo.tiles:
                        memo.tiles[tile] = await self.leaves(tile * TILE, min((tile + 1) * TILE, size))
                    leaves.extend(memo.tiles[tile])
                offset = first - (first // TILE) * TILE
                parts.append(merkle.root(leaves[offset : offset + count]))
            out.append(merkle.fold(parts))
        return out

    async def inclusion(self, index: int, size: int, memo: Memo | None = None) -> list[bytes]:
        return await self.hashes(merkle.inclusion_ranges(index, size), size, memo)

    async def consistency(self, first: int, second: int) -> list[bytes]:
        return await self.hashes(merkle.consistency_ranges(first, second), second)

    async def make_checkpoint(self) -> int | None:
        """Sequence queued leaves (PostgreSQL), cache the new complete subtrees, then sign and keep a checkpoint
        of the whole log when it grew."""
        await self.db.sequence()
        size = await self.size()
        latest = await self.checkpoint()
        if latest is not None and size <= latest[0]:
            if size < latest[0]:
                raise LogError(f"the log has {size} leaves, fewer than checkpoint {latest[0]} signed")
            return None
        await self.db.write([(INSERT_NODE, await self._new_subtrees(size))])
        root_hash = (await self.hashes([(0, size)], size))[0] if size else merkle.EMPTY_ROOT
        note = self.signer.sign(checkpoint_text(self.origin, size, root_hash))
        await self.db.write([(INSERT_CHECKPOINT, [(size, root_hash, note, now_text())])])
        return size

    async def _new_subtrees(self, size: int) -> list[tuple[int, int, bytes]]:
        have = {int(level): int(count) for level, count in await self.db.fetch(COUNT_NODES)}
        made: dict[tuple[int, int], bytes] = {}
        level = TILE_LEVEL
        while size >> level:
            for index in range(have.get(level, 0), size >> level):
                if level == TILE_LEVEL:
                    made[level, index] = merkle.root(await self.leaves(index * TILE, (index + 1) * TILE))
                    continue
                children = []
                for child in (2 * index, 2 * index + 1):
                    known = made.get((level - 1, child))
                    if known is None:
                        known = bytes((await self.db.fetch(SELECT_NODE, level - 1, child))[0][0])
                    children.append(known)
                made[level, index] = merkle.node_hash(*children)
            level += 1
        return [(level, index, value) for (level, index), value in made.items()]


async def open_log(settings: Settings, store: Any) -> AuditLog | None:
    """Open the log of a SQL store when CAVRA_AUDIT_LOG is on; the JSON store keeps none."""
    if not settings.audit.enabled or store.kind not in ("sqlite", "postgres"):
        return None
    signer = load_signer(key_path(settings), settings.audit.audit_log_origin, create=True)
    return AuditLog(log_db(store), signer, settings.audit.audit_log_origin)


def log_db(store: Any) -> SqliteLog | PostgresLog:
    """The log's tables beside an open SQL store's own."""
    if store.kind == "sqlite":
        return SqliteLog(store.path, store.busy_timeout_ms, store.write_statements)
    return PostgresLog(store.pool)


class CheckpointLoop:
    """Sign a checkpoint every interval while leaves arrive; started after the writer, stopped before it."""

    def __init__(self, audit: AuditLog, interval_s: float) -> None:
        self.audit = audit
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""

    async def start(self) -> None:
        """Sign what the log holds now (so a checkpoint exists once serving starts), then every interval."""
        await self.step()
        self._task = asyncio.create_task(self._run(), name="cavra-checkpoints")

    async def step(self) -> int | None:
        try:
            size = await self.audit.make_checkpoint()
        except Exception as exc:
            # A lock held elsewhere or a damaged log: keep serving; `cavra-ingest verify` says what is wrong.
            # Each new fault is logged once, not every interval.
            if str(exc) != self._last_error:
                log.exception("checkpoint failed")
            self._last_error = str(exc)
            return None
        self._last_error = ""
        return size

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.step()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.step()


@asynccontextmanager
async def audit_log(settings: Settings, store: Any) -> AsyncIterator[AuditLog | None]:
    """Open the audit log and run its checkpoint loop (after the writer starts, stopped before it stops)."""
    audit = await open_log(settings, store)
    if audit is None:
        yield None
        return
    loop = CheckpointLoop(audit, settings.audit.checkpoint_interval_s)
    await loop.start()
    try:
        yield audit
    finally:
        await loop.stop()
        await audit.db.close()

"""The audit log: leaves written with their decisions, Ed25519-signed checkpoints, proofs over cached subtrees."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cavra_ingest.auditlog import merkle
from cavra_ingest.auditlog.jcs import canonical
from cavra_ingest.core.models import Accepted, now_text
from cavra_ingest.settings import Settings

log = logging.getLogger(__name__)

# Complete aligned subtrees of 2^TILE_LEVEL leaves and more are cached, so a proof reads O(log n) rows.
TILE_LEVEL = 8
TILE = 1 << TILE_LEVEL
ED25519 = b"\x01"  # the signed-note signature type of Ed25519 keys

NEXT_INDEX = "SELECT coalesce(max(leaf_index) + 1, 0) FROM audit_leaves"
INSERT_LEAF = "INSERT INTO audit_leaves (leaf_index, decision_id, leaf_hash) VALUES (?, ?, ?)"
SELECT_LEAF_INDEX = "SELECT leaf_index FROM audit_leaves WHERE decision_id = ?"
SELECT_LEAF_HASHES = "SELECT leaf_hash FROM audit_leaves WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index"
SELECT_NODE = "SELECT hash FROM audit_subtrees WHERE level = ? AND node_index = ?"
COUNT_NODES = "SELECT level, count(*) FROM audit_subtrees GROUP BY level"
INSERT_NODE = "INSERT INTO audit_subtrees (level, node_index, hash) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
SELECT_LATEST = "SELECT tree_size, note FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1"
SELECT_CHECKPOINT = "SELECT note FROM audit_checkpoints WHERE tree_size = ?"
INSERT_CHECKPOINT = (
    "INSERT INTO audit_checkpoints (tree_size, root_hash, note, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


# PostgreSQL (migration 014): writers queue created decisions; one sequencer at a time numbers them.
QUEUE_LEAVES = "INSERT INTO audit_pending (decision_id) SELECT unnest($1::text[])"
SEQUENCER_LOCK = 0x63617673 + 1
# Queue order; a queued decision pruned before it was sequenced has no payload and is dropped from the queue.
SELECT_QUEUED = """
SELECT p.seq, p.decision_id, d.payload FROM audit_pending p
LEFT JOIN activity_decisions d ON d.decision_id = p.decision_id ORDER BY p.seq LIMIT $1
"""
DELETE_QUEUED = "DELETE FROM audit_pending WHERE seq = ANY($1::bigint[])"
SELECT_QUEUED_ONE = "SELECT 1 FROM audit_pending WHERE decision_id = $1"
# Leaves numbered per sequencer transaction: bounded so one transaction never holds a huge backlog.
SEQUENCE_BATCH = 10_000


class LogError(Exception):
    """The log's own tables are not what the writer left (a gap, a bad note): nothing is signed or proven."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def record_leaf(payload: bytes) -> bytes:
    """Return the leaf hash of a stored record: SHA-256(0x00 || JCS(record))."""
    return merkle.leaf_hash(canonical(payload))


def leaf_rows(start: int, inserts: Sequence[Accepted]) -> list[tuple[int, str, bytes]]:
    """INSERT_LEAF parameters for a batch's created decisions, numbered from `start` in commit order."""
    return [(start + n, item.record.decision_id, record_leaf(item.payload)) for n, item in enumerate(inserts)]


def append_leaves_sqlite(db: sqlite3.Connection, inserts: Sequence[Accepted]) -> None:
    """Append leaves inside the writer's open transaction (BEGIN IMMEDIATE: no other writer in between)."""
    start = db.execute(NEXT_INDEX).fetchone()[0]
    db.executemany(INSERT_LEAF, leaf_rows(start, inserts))


# -- keys and notes (C2SP signed-note, tlog-checkpoint) ---------------------------------------------------------


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """A note verifier key: `<name>+<8 hex key id>+<base64(0x01 || key)>`."""

    name: str
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.public)

    def text(self) -> str:
        return f"{self.name}+{self.id.hex()}+{b64(ED25519 + self.public)}"

    @classmethod
    def parse(cls, text: str) -> Verifier:
        name, hex_id, key = text.strip().split("+", 2)
        raw = base64.b64decode(key, validate=True)
        if raw[:1] != ED25519 or len(raw) != 33:
            raise ValueError("not an Ed25519 note verifier key")
        verifier = cls(name, raw[1:])
        if verifier.id.hex() != hex_id:
            raise ValueError("key id does not match the name and key")
        return verifier

    def open(self, note: str) -> str:
        """Return a signed note's text when it carries a valid signature by this key; raise ValueError if not."""
        text, sep, signatures = note.partition("\n\n")
        if not sep:
            raise ValueError("not a signed note")
        text += "\n"
        public = Ed25519PublicKey.from_public_bytes(self.public)
        for line in signatures.splitlines():
            dash, name, sig = (line.split(" ") + ["", ""])[:3]
            if dash != "\u2014" or name != self.name:
                continue
            raw = base64.b64decode(sig)
            if raw[:4] != self.id:
                continue
            try:
                public.verify(raw[4:], text.encode())
            except InvalidSignature:
                raise ValueError(f"bad signature by {self.name}") from None
            return text
        raise ValueError(f"no signature by {self.name}")


@dataclass(frozen=True)
class Signer:
    name: str
    private: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.private.public_key().public_bytes_raw())

    def sign(self, text: str) -> str:
        """Sign a note's text (ending in a newline) and return the note."""
        signature = self.private.sign(text.encode())
        return f"{text}\n\u2014 {self.name} {b64(self.verifier.id + signature)}\n"


def checkpoint_text(origin: str, size: int, root_hash: bytes) -> str:
    return f"{origin}\n{size}\n{b64(root_hash)}\n"


def parse_checkpoint(text: str) -> tuple[str, int, bytes]:
    """Return (origin, tree size, root hash) of a checkpoint's text."""
    lines = text.split("\n")
    if len(lines) < 4 or not lines[1].isdigit():
        raise ValueError("not a checkpoint")
    return lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)


def key_path(settings: Settings) -> Path:
    """Where the signing key is: CAVRA_SIGNING_KEY, or beside the SQLite file."""
    if settings.signing_key:
        return Path(settings.signing_key)
    if settings.store_kind == "sqlite":
        return settings.store_path.with_name(settings.store_path.name + ".signing-key")
    return Path(".cavra/signing-key")


def load_signer(path: Path, name: str, *, create: bool) -> Signer:
    """Read a Go-note private key file (`PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`), making one if asked."""
    if not path.exists() and create:
        private = Ed25519PrivateKey.generate()
        signer = Signer(name, private)
        seed = private.private_bytes_raw()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"PRIVATE+KEY+{name}+{signer.verifier.id.hex()}+{b64(ED25519 + seed)}\n")
        log.info("made audit-log signing key %s; verifier key %s", path, signer.verifier.text())
        return signer
    fields = path.read_text().strip().split("+", 4)
    if len(fields) != 5 or fields[:2] != ["PRIVATE", "KEY"]:
        raise ValueError(f"{path} is not a note signing key (PRIVATE+KEY+name+id+key)")
    raw = base64.b64decode(fields[4])
    if raw[:1] != ED25519 or len(raw) != 33:
        raise ValueError(f"{path} is not an Ed25519 key")
    return Signer(fields[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))


# -- storage: the same few queries on each SQL store -------------------------------------------------------------


# Runs a list of (statement, rows) in one transaction.
Writer = Callable[[list[tuple[str, list[tuple[Any, ...]]]]], Awaitable[None]]


class SqliteLog:
    """The log's tables in the store's SQLite file, on a connection and thread of their own."""

    def __init__(self, path: Path, busy_timeout_ms: int, writer: Writer | None = None) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        # The store's own writer connection when there is one: a commit from this connection would drop
        # the writer's page cache (SqliteStore.write_statements).
        self.writer = writer
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cavra-audit-log")
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        return self._db

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return await self._run(lambda: self._conn().execute(sql, params).fetchall())

    async def write(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        if self.writer is not None:
            await self.writer(statements)
            return

        def run() -> None:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(run)

    async def sequence(self) -> int:
        """Number nothing: SQLite's writer gives each leaf its index in the decision's own transaction."""
        return 0

    async def queued(self, decision_id: str) -> bool:
        return False

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown()


class PostgresLog:
    """The log's tables in the store's PostgreSQL schema, through its pool."""

    def __init__(self, pool: Any) -> None:
        from cavra_ingest.store.postgres.store import numbered

        self.pool = pool
        self.numbered = numbered

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.pool.fetch(self.numbered(sql), *params)]

    async def write(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for sql, rows in statements:
                await conn.executemany(self.numbered(sql), rows)

    async def sequence(self) -> int:
        """Give committed, queued decisions their leaves in queue order; return how many (0 when another
        server's sequencer holds the role this round)."""
        total = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                # One sequencer at a time, whichever server or worker gets the lock; the others skip a turn.
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SEQUENCER_LOCK):
                    return total
                rows = await conn.fetch(SELECT_QUEUED, SEQUENCE_BATCH)
                if not rows:
                    return total
                start = await conn.fetchval(NEXT_INDEX)
                leaves = [(decision_id, record_leaf(payload.encode())) for _, decision_id, payload in rows if payload]
                await conn.executemany(
                    self.numbered(INSERT_LEAF), [(start + n, d, h) for n, (d, h) in enumerate(leaves)]
                )
                await conn.execute(DELETE_QUEUED, [row[0] for row in rows])
            total += len(leaves)
            if len(rows) < SEQUENCE_BATCH:
                return total

    async def queued(self, decision_id: str) -> bool:
        """Say whether a committed decision still waits for the sequencer."""
        return await self.pool.fetchval(SELECT_QUEUED_ONE, decision_id) is not None

    async def close(self) -> None:
        pass


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


AUDIT_KEY = web.AppKey("audit_log", AuditLog)


async def open_log(settings: Settings, store: Any) -> AuditLog | None:
    """Open the log of a SQL store when CAVRA_AUDIT_LOG is on; the JSON store keeps none."""
    if not settings.audit_log or store.kind not in ("sqlite", "postgres"):
        return None
    signer = load_signer(key_path(settings), settings.audit_log_origin, create=True)
    return AuditLog(log_db(store), signer, settings.audit_log_origin)


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

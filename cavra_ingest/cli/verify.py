"""`cavra-ingest verify`: recompute the whole audit log from the stored records and check every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from cavra_ingest.auditlog import merkle
from cavra_ingest.auditlog.log import TILE, TILE_LEVEL, AuditLog, log_db
from cavra_ingest.auditlog.notes import Verifier, key_path, load_signer, parse_checkpoint
from cavra_ingest.auditlog.tables import record_leaf
from cavra_ingest.core.models import DecisionRecord
from cavra_ingest.settings import Settings
from cavra_ingest.store import Store

# The columns listings filter on, each of which must still say what the record says.
COLUMNS = ("session_id", "agent_id", "actor", "repository", "policy_pack", "action_type", "target", "rule_id",
           "decision", "severity", "timestamp", "correlation_id", "tenant_id", "workspace_id")  # fmt: skip
SELECT_LEAVES = f"""
SELECT l.leaf_index, l.decision_id, l.leaf_hash, d.payload, {", ".join("d." + c for c in COLUMNS)}
FROM audit_leaves l LEFT JOIN activity_decisions d ON d.decision_id = l.decision_id
WHERE l.leaf_index >= ? ORDER BY l.leaf_index LIMIT ?
"""
SELECT_UNLOGGED = """
SELECT d.decision_id FROM activity_decisions d LEFT JOIN audit_leaves l ON l.decision_id = d.decision_id
WHERE l.decision_id IS NULL ORDER BY d.decision_id
"""
SELECT_CHECKPOINTS = "SELECT tree_size, root_hash, note FROM audit_checkpoints ORDER BY tree_size"
SELECT_PRUNED = "SELECT leaf_index, decision_id, cutoff FROM audit_pruned"
SELECT_SUBTREES = "SELECT level, node_index, hash FROM audit_subtrees"
CHUNK = 5000


@dataclass
class Report:
    tampered: list[str] = field(default_factory=list)
    unlogged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Leaves whose decision `prune` removed, by cut-off: not tampering, but listed for the auditor.
    pruned: dict[str, int] = field(default_factory=dict)


def archived_leaves(paths: list[str]) -> dict[str, bytes]:
    """Hash every record of prune archives (gzip NDJSON, or plain NDJSON) as its leaf, by decision_id."""
    import gzip

    leaves: dict[str, bytes] = {}
    for path in paths:
        with open(path, "rb") as raw:
            data = raw.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        for line in data.splitlines():
            if line.strip():
                leaves[msgspec.json.decode(line)["decision_id"]] = record_leaf(line)
    return leaves


def check_columns(row: tuple[Any, ...]) -> str | None:
    """Name the first indexed column that no longer says what the stored record says."""
    try:
        record = msgspec.json.decode(row[3], type=DecisionRecord)
    except msgspec.MsgspecError:
        return "it is no longer a decision record"
    for name, value in zip(COLUMNS, row[4:], strict=True):
        if getattr(record, name) != value:
            return f"column {name} is {value!r}, the record says {getattr(record, name)!r}"
    return None


async def verify(audit: AuditLog, verifier: Verifier, archived: dict[str, bytes] | None = None) -> Report:
    """Check records against leaves, leaves against every signed checkpoint, and the subtree cache.

    A decision `prune` removed is reported as pruned, not deleted; with `archived` (from prune's archives) its
    archived record must still hash to its leaf.
    """
    report = Report()
    pruned = {
        int(index): (str(decision_id), str(cut)) for index, decision_id, cut in await audit.db.fetch(SELECT_PRUNED)
    }
    signed: dict[int, bytes] = {}
    for size, root_column, note in await audit.db.fetch(SELECT_CHECKPOINTS):
        try:
            origin, note_size, note_root = parse_checkpoint(verifier.open(note))
        except ValueError as exc:
            report.tampered.append(f"checkpoint {size} was replaced: {exc}")
            continue
        if note_size != size or note_root != bytes(root_column) or origin != audit.origin:
            report.tampered.append(f"checkpoint {size} was edited: its row and its signed note disagree")
        signed[note_size] = note_root
    cached = {(int(level), int(index)): bytes(h) for level, index, h in await audit.db.fetch(SELECT_SUBTREES)}
    compact = merkle.Compact()
    levels: dict[int, list[bytes]] = {}
    last_good = 0

    def name(index: int) -> str:
        return f"leaf {index}"

    while True:
        rows = await audit.db.fetch(SELECT_LEAVES, compact.size, CHUNK)
        for row in rows:
            index, decision_id, stored = int(row[0]), row[1], bytes(row[2])
            if index != compact.size:
                report.tampered.append(f"leaves {compact.size}..{index - 1} were deleted from the log")
                return await finish(audit, report)
            if row[3] is None:
                leaf = stored
                if pruned.get(index, ("", ""))[0] != decision_id:
                    report.tampered.append(f"decision {decision_id} (leaf {index}) was deleted")
                else:
                    cut = pruned[index][1]
                    report.pruned[cut] = report.pruned.get(cut, 0) + 1
                    if archived is not None and archived.get(decision_id, stored) != stored:
                        report.tampered.append(
                            f"decision {decision_id} (leaf {index}) was pruned, and its archived record was edited"
                        )
            else:
                leaf = record_leaf(row[3].encode())
                if leaf != stored:
                    report.tampered.append(f"decision {decision_id} (leaf {index}) was edited: its record changed")
                elif (problem := check_columns(row)) is not None:
                    report.tampered.append(f"decision {decision_id} (leaf {index}) was edited: {problem}")
            compact.append(leaf)
            add_tile(levels, cached, leaf, compact.size, report)
            expected = signed.get(compact.size)
            if expected is not None:
                if compact.root() != expected:
                    report.tampered.append(
                        f"the log differs from signed checkpoint {compact.size}: a leaf in {last_good}..{index} was"
                        f" inserted, removed, reordered or edited; the first it can be is decision "
                        f"{await first_id(audit, last_good)} (leaf {last_good})"
                    )
                    return await finish(audit, report)
                last_good = compact.size
        if len(rows) < CHUNK:
            break
    beyond = [size for size in signed if size > compact.size]
    if beyond:
        report.tampered.append(
            f"the log was truncated: it has {compact.size} leaves, checkpoint {max(beyond)} signed {max(beyond)};"
            f" the first missing is {name(compact.size)}"
        )
    elif compact.size > last_good:
        report.notes.append(f"leaves {last_good}..{compact.size - 1} are not in a signed checkpoint yet")
    report.notes.append(f"{compact.size} leaves checked against {len(signed)} signed checkpoint(s)")
    return await finish(audit, report)


def add_tile(levels: dict[int, list[bytes]], cached: dict[tuple[int, int], bytes], leaf: bytes, size: int,
             report: Report) -> None:  # fmt: skip
    """Recompute the complete subtrees as leaves arrive and compare them with the cache proofs are served from."""
    pending = levels.setdefault(0, [])
    pending.append(leaf)
    if size % TILE:
        return
    value, level = merkle.root(pending), TILE_LEVEL
    pending.clear()
    while True:
        index = (size >> level) - 1
        if (level, index) in cached and cached[level, index] != value:
            report.tampered.append(f"the cached subtree over leaves {index << level}..{((index + 1) << level) - 1}"
                                   " was edited: proofs over it would not verify")  # fmt: skip
        row = levels.setdefault(level, [])
        row.append(value)
        if len(row) < 2:
            return
        value = merkle.node_hash(row[0], row[1])
        row.clear()
        level += 1


async def first_id(audit: AuditLog, index: int) -> str:
    rows = await audit.db.fetch("SELECT decision_id FROM audit_leaves WHERE leaf_index = ?", index)
    return str(rows[0][0]) if rows else "?"


async def finish(audit: AuditLog, report: Report) -> Report:
    report.unlogged = [str(row[0]) for row in await audit.db.fetch(SELECT_UNLOGGED)]
    return report


def public_key_text(value: str) -> str:
    """Accept a verifier key itself or a file holding one."""
    from pathlib import Path

    path = Path(value)
    return path.read_text().strip() if "+" not in value and path.exists() else value


async def opened(settings: Settings, *, create_key: bool = False) -> tuple[Store, AuditLog]:
    """Open the settings' store and its log, as `serve` does, without starting a writer."""
    from cavra_ingest.store import make_store

    if settings.store.kind == "json":
        raise SystemExit("cavra-ingest: the JSON store keeps no audit log; use SQLite or PostgreSQL")
    store = make_store(settings)
    await store.open()
    path = key_path(settings)
    if not path.exists() and not create_key:
        signer = None
    else:
        signer = load_signer(path, settings.audit.audit_log_origin, create=create_key)
    return store, AuditLog(log_db(store), signer, settings.audit.audit_log_origin)  # type: ignore[arg-type]


async def run_verify(settings: Settings, public_key: str | None, archives: list[str] | None = None) -> int:
    """Print what verification found; 0 when intact, 1 on tampering."""
    archived = archived_leaves(archives) if archives else None
    store, audit = await opened(settings)
    try:
        if public_key is None and audit.signer is None:
            print("cavra-ingest: no signing key here: pass --public-key")
            return 2
        verifier = Verifier.parse(public_key_text(public_key)) if public_key else audit.signer.verifier
        # PostgreSQL: decisions committed but not sequenced yet get their leaves first (a no-op on SQLite).
        await audit.db.sequence()
        report = await verify(audit, verifier, archived)
    finally:
        await audit.db.close()
        await store.close()
    for line in report.tampered:
        print(f"TAMPERED: {line}")
    if report.unlogged:
        shown = ", ".join(report.unlogged[:20]) + (" ..." if len(report.unlogged) > 20 else "")
        print(f"not in the log (written by another program, or before the log existed): {len(report.unlogged)}: "
              f"{shown}")  # fmt: skip
    for cut, count in sorted(report.pruned.items()):
        checked = " (checked against the archives)" if archived is not None else ""
        print(f"pruned by `cavra-ingest prune --before {cut}`: {count} decision(s); their leaves remain{checked}")
    for line in report.notes:
        print(line)
    print("log intact" if not report.tampered else "log TAMPERED")
    return 1 if report.tampered else 0


async def run_export(settings: Settings, session_id: str, out: str) -> int:
    from cavra_ingest.http.routes.evidence import build

    store, audit = await opened(settings)
    try:
        if audit.signer is None:
            print("cavra-ingest: the signing key is needed to sign the bundle's manifest (CAVRA_SIGNING_KEY)")
            return 2
        await audit.make_checkpoint()
        bundle = await build(store, audit, session_id)
    finally:
        await audit.db.close()
        await store.close()
    if bundle is None:
        print(f"cavra-ingest: session {session_id!r} not found")
        return 1
    with open(out, "wb") as handle:
        handle.write(msgspec.json.encode(bundle))
    print(f"wrote {len(bundle.records)} record(s) with proofs against checkpoint {bundle.tree_size} to {out}")
    return 0


def run_evidence_verify(path: str, public_key: str | None) -> int:
    from cavra_ingest.auditlog.evidence import verify as verify_bundle

    with open(path, "rb") as handle:
        bundle = msgspec.json.decode(handle.read())
    problems, notes = verify_bundle(bundle, public_key_text(public_key) if public_key else None)
    for line in problems:
        print(f"TAMPERED: {line}")
    for line in notes:
        print(line)
    print("bundle verified" if not problems else "bundle TAMPERED")
    return 1 if problems else 0

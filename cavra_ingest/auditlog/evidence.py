"""Evidence bundles' format: the signed manifest of a session's leaves, and the offline check of a bundle."""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from cavra_ingest.auditlog import merkle
from cavra_ingest.auditlog.notes import Verifier, b64, parse_checkpoint
from cavra_ingest.auditlog.tables import record_leaf

FORMAT = "cavra-evidence/1"
MANIFEST_HEADER = "cavra-ingest evidence/1"


def manifest_text(origin: str, session_id: str, size: int, leaves: list[tuple[int, bytes, str]]) -> str:
    """The signed list of a session's leaves: a record removed from or added to the bundle shows against it."""
    lines = [MANIFEST_HEADER, origin, str(size), b64(session_id.encode())]
    lines += [f"{index} {b64(leaf)} {b64(decision_id.encode())}" for index, leaf, decision_id in leaves]
    return "\n".join(lines) + "\n"


def verify(bundle: dict[str, Any], public_key: str | None = None) -> tuple[list[str], list[str]]:
    """Check a bundle offline; return (problems naming each edited, removed or added record, notes)."""
    notes: list[str] = []
    if bundle.get("format") != FORMAT:
        return [f"not a {FORMAT} bundle"], notes
    if public_key is None:
        public_key = bundle["public_key"]
        notes.append("checked with the key inside the bundle: pass --public-key to check it against yours")
    verifier = Verifier.parse(public_key)
    try:
        origin, size, root_hash = parse_checkpoint(verifier.open(bundle["checkpoint"]))
        manifest = verifier.open(bundle["manifest"]).split("\n")
    except ValueError as exc:
        return [f"checkpoint or manifest: {exc}"], notes
    if size != bundle.get("tree_size") or manifest[:3] != [MANIFEST_HEADER, origin, str(size)]:
        return ["the manifest was signed for another log, size or bundle"], notes
    if base64.b64decode(manifest[3]).decode() != bundle.get("session_id"):
        return ["the manifest was signed for another session"], notes
    expected: dict[int, tuple[bytes, str]] = {}
    for line in manifest[4:-1]:
        at, hashed, named = line.split(" ")
        expected[int(at)] = (base64.b64decode(hashed), base64.b64decode(named).decode())
    problems: list[str] = []
    seen: set[int] = set()
    for entry in bundle.get("records", []):
        record = entry["record"]
        decision_id = record.get("decision_id") if isinstance(record, dict) else None
        index = entry["leaf_index"]
        leaf = record_leaf(msgspec.json.encode(record))
        path = [base64.b64decode(h) for h in entry["inclusion"]]
        if index not in expected or index in seen:
            problems.append(f"decision {decision_id} (leaf {index}) was added: the signed manifest lists no such leaf")
        elif not merkle.verify_inclusion(leaf, index, size, path, root_hash) or expected[index][0] != leaf:
            problems.append(f"decision {decision_id} (leaf {index}) was edited: it is not the record the log holds")
        seen.add(index)
    for index, (_, decision_id) in sorted(expected.items()):
        if index not in seen:
            problems.append(f"decision {decision_id} (leaf {index}) was removed from the bundle")
    notes.append(f"{len(bundle.get('records', []))} record(s) checked against checkpoint {size}")
    return problems, notes

"""An independent verifier for the audit log, written from RFC 9162, RFC 8785 and C2SP signed-note (not from
the code under test), and helpers that build a logged SQLite file."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import rfc8785
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cavra_ingest.http.app import create_app
from cavra_ingest.http.keys import AUDIT_KEY
from cavra_ingest.settings import Settings


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_of(record: dict[str, Any]) -> bytes:
    """RFC 9162 leaf hash of RFC 8785 canonical JSON (the rfc8785 package, not cavra_ingest.jcs)."""
    return sha(b"\x00" + rfc8785.dumps(record))


def inclusion_ok(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = sha(b"\x01" + p + r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            r = sha(b"\x01" + r + p)
        fn //= 2
        sn //= 2
    return sn == 0 and r == root


def consistency_ok(first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2, step by step (equal sizes: empty proof, equal roots)."""
    if first == second:
        return path == [] and first_root == second_root
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn //= 2
        sn //= 2
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = sha(b"\x01" + c + fr)
            sr = sha(b"\x01" + c + sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            sr = sha(b"\x01" + sr + c)
        fn //= 2
        sn //= 2
    return fr == first_root and sr == second_root and sn == 0


def open_checkpoint(note: str, vkey: str) -> tuple[str, int, bytes]:
    """Check a C2SP signed note against a verifier key; return the checkpoint's (origin, size, root)."""
    name, key_id, key = vkey.split("+", 2)
    raw = base64.b64decode(key)
    assert raw[0] == 1 and len(raw) == 33
    assert sha(name.encode() + b"\n" + raw).hex()[:8] == key_id
    text, signatures = note.split("\n\n", 1)
    text += "\n"
    line = next(line for line in signatures.splitlines() if line.startswith(f"\u2014 {name} "))
    signature = base64.b64decode(line.split(" ")[2])
    assert signature[:4].hex() == key_id
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(signature[4:], text.encode())
    origin, size, root = text.split("\n")[:3]
    return origin, int(size), base64.b64decode(root)


def unb64(hashes: list[str]) -> list[bytes]:
    return [base64.b64decode(h) for h in hashes]


def logged_settings(db: Path, **overrides: Any) -> Settings:
    # The loop signs at start and stop; tests sign the checkpoints between themselves.
    return Settings.of(activity_db=str(db), checkpoint_interval_s=3600, **overrides)


async def build_log(db: Path, bodies: list[dict[str, Any]], *, every: int = 1) -> list[str]:
    """Store decisions one request at a time through the real app, signing a checkpoint after every `every`."""
    client = TestClient(TestServer(create_app(logged_settings(db))))
    await client.start_server()
    try:
        for n, body in enumerate(bodies, 1):
            response = await client.post("/decisions", json=body)
            assert response.status == 200, await response.text()
            if n % every == 0:
                await client.app[AUDIT_KEY].make_checkpoint()
    finally:
        await client.close()
    return [body["decision_id"] for body in bodies]


async def signed_size(log: Any) -> int:
    """Sign now and return the size of the latest checkpoint. The app's own loop signs every half second, so it
    may have signed these leaves first (make_checkpoint then returns None): either way the log is signed."""
    await log.make_checkpoint()
    latest = await log.checkpoint()
    assert latest is not None, "no checkpoint after make_checkpoint"
    return latest[0]

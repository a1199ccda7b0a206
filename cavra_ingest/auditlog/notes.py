"""Signing keys and notes of the audit log's checkpoints (C2SP signed-note, tlog-checkpoint)."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cavra_ingest.settings import Settings

log = logging.getLogger(__name__)

ED25519 = b"\x01"  # the signed-note signature type of Ed25519 keys


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


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
    if settings.audit.signing_key:
        return Path(settings.audit.signing_key)
    if settings.store.kind == "sqlite":
        return settings.store.path.with_name(settings.store.path.name + ".signing-key")
    return Path(".cavra/signing-key")


def load_signer(path: Path, name: str, *, create: bool) -> Signer:
    """Read a Go-note private key file (`PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`), making one if asked."""
    if not path.exists() and create:
        private = Ed25519PrivateKey.generate()
        signer = Signer(name, private)
        seed = private.private_bytes_raw()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Durable before first use (a power-loss campaign found an empty key after a cut): the key is written
        # and fsynced under a temporary name, linked into place (exclusive: one creator wins), and the folder
        # fsynced. Checkpoints signed with a key that is then lost could never be verified again.
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(f"PRIVATE+KEY+{name}+{signer.verifier.id.hex()}+{b64(ED25519 + seed)}\n")
                out.flush()
                os.fsync(out.fileno())
            os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        log.info("made audit-log signing key %s; verifier key %s", path, signer.verifier.text())
        return signer
    fields = path.read_text().strip().split("+", 4)
    if len(fields) != 5 or fields[:2] != ["PRIVATE", "KEY"]:
        raise ValueError(f"{path} is not a note signing key (PRIVATE+KEY+name+id+key)")
    raw = base64.b64decode(fields[4])
    if raw[:1] != ED25519 or len(raw) != 33:
        raise ValueError(f"{path} is not an Ed25519 key")
    return Signer(fields[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))

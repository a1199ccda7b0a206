"""The lossy filesystem's rules, each shown to bite: what a power cut keeps and what it drops."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lossyfs.mount import Mount


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    lossy = Mount(tmp_path).start()
    try:
        yield lossy
    finally:
        lossy.stop()


def write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_reads_see_unsynced_writes_and_a_cut_drops_them(mount: Mount) -> None:
    write(mount.path / "synced", b"kept", sync=True)
    write(mount.path / "unsynced", b"lost", sync=False)
    sync_folder(mount.path)  # both names are durable; only the second file's data is not
    assert (mount.path / "unsynced").read_bytes() == b"lost"  # the page cache answers reads
    assert (mount.backing / "unsynced").read_bytes() == b""
    mount.cut()
    mount.stop()
    assert (mount.backing / "synced").read_bytes() == b"kept"
    assert (mount.backing / "unsynced").read_bytes() == b""


def test_a_file_created_without_a_folder_fsync_is_gone(mount: Mount) -> None:
    write(mount.path / "new", b"data", sync=True)  # its data is synced, its name is not
    mount.cut()
    mount.stop()
    assert not (mount.backing / "new").exists()


def test_a_rename_without_a_folder_fsync_is_undone(mount: Mount) -> None:
    write(mount.path / "old", b"first", sync=True)
    write(mount.path / "tmp", b"second", sync=True)
    sync_folder(mount.path)
    os.rename(mount.path / "tmp", mount.path / "old")  # the atomic-replace pattern, minus its folder fsync
    assert (mount.path / "old").read_bytes() == b"second"
    mount.cut()
    mount.stop()
    assert (mount.backing / "old").read_bytes() == b"first"
    assert (mount.backing / "tmp").read_bytes() == b"second"


def test_a_rename_followed_by_a_folder_fsync_stays(mount: Mount) -> None:
    write(mount.path / "tmp", b"second", sync=True)
    os.rename(mount.path / "tmp", mount.path / "old")
    sync_folder(mount.path)
    os.unlink(mount.path / "old")  # an unsynced unlink comes back
    mount.cut()
    mount.stop()
    assert (mount.backing / "old").read_bytes() == b"second"
    assert not (mount.backing / "tmp").exists()


def test_after_the_cut_every_operation_fails(mount: Mount) -> None:
    write(mount.path / "f", b"x", sync=True)
    mount.cut()
    with pytest.raises(OSError):
        (mount.path / "f").read_bytes()


def test_a_torn_cut_keeps_a_prefix_of_the_unsynced_pages(mount: Mount) -> None:
    write(mount.path / "f", b"\0" * 40960, sync=True)
    sync_folder(mount.path)
    fd = os.open(mount.path / "f", os.O_WRONLY)
    os.pwrite(fd, b"A" * 40960, 0)  # ten pages, unsynced
    os.close(fd)
    mount.cut("prefix", seed=3)
    mount.stop()
    data = (mount.backing / "f").read_bytes()
    kept = data.count(b"A") // 4096
    assert data == b"A" * 4096 * kept + b"\0" * 4096 * (10 - kept)  # a prefix, in the order written
    assert 0 < kept < 10  # this seed keeps some and drops some


def test_sqlite_full_keeps_every_commit_and_normal_can_lose_some(mount: Mount) -> None:
    for mode in ("FULL", "NORMAL"):
        db = sqlite3.connect(mount.path / f"{mode}.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={mode}")
        db.execute("CREATE TABLE t (n INTEGER)")
        for n in range(50):
            db.execute("INSERT INTO t VALUES (?)", (n,))
        db.close() if mode == "FULL" else None  # NORMAL's connection is still open at the cut
    sync_folder(mount.path)
    mount.cut()
    mount.stop()
    full = sqlite3.connect(mount.backing / "FULL.db")
    assert full.execute("SELECT count(*) FROM t").fetchone() == (50,)
    normal = sqlite3.connect(mount.backing / "NORMAL.db")
    assert normal.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # NORMAL syncs the WAL only at checkpoints: the inserts after the last one are gone.
    assert normal.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()[0] == 0 or (
        normal.execute("SELECT count(*) FROM t").fetchone()[0] < 50
    )

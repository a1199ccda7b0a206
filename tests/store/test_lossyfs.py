"""The lossy filesystem's own rules: what a power cut keeps and what it drops."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.lossyfs import Mount, fuse_missing


@pytest.fixture
def lossy(tmp_path: Path) -> Iterator[Mount]:
    reason = fuse_missing()
    if reason is not None:
        if REQUIRE_SERVICES:
            pytest.fail(reason + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
        pytest.skip(reason)
    mount = Mount(tmp_path / "mnt", tmp_path / "backing")
    mount.start()
    try:
        yield mount
    finally:
        mount.cut()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path: Path, data: bytes, *, sync: bool, append: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC))
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_unsynced_write_is_gone_after_the_cut_and_a_synced_one_stays(lossy: Mount) -> None:
    write(lossy.mount / "log", b"synced;", sync=True)
    fsync_dir(lossy.mount)
    write(lossy.mount / "log", b"unsynced;", sync=False, append=True)
    assert (lossy.mount / "log").read_bytes() == b"synced;unsynced;"  # reads see the page cache
    lossy.cut()
    lossy.start()
    assert (lossy.mount / "log").read_bytes() == b"synced;"


def test_a_file_created_without_the_folder_fsync_is_gone(lossy: Mount) -> None:
    write(lossy.mount / "new", b"data", sync=True)
    assert (lossy.mount / "new").exists()
    lossy.cut()
    lossy.start()
    assert not (lossy.mount / "new").exists()
    assert os.listdir(lossy.mount) == []


def test_a_rename_without_the_folder_fsync_is_undone(lossy: Mount) -> None:
    write(lossy.mount / "old", b"kept", sync=True)
    fsync_dir(lossy.mount)
    os.rename(lossy.mount / "old", lossy.mount / "new")
    assert sorted(os.listdir(lossy.mount)) == ["new"]
    lossy.cut()
    lossy.start()
    assert sorted(os.listdir(lossy.mount)) == ["old"]
    assert (lossy.mount / "old").read_bytes() == b"kept"
    os.rename(lossy.mount / "old", lossy.mount / "new")
    fsync_dir(lossy.mount)
    lossy.cut()
    lossy.start()
    assert sorted(os.listdir(lossy.mount)) == ["new"]


def test_an_unlink_without_the_folder_fsync_is_undone(lossy: Mount) -> None:
    write(lossy.mount / "file", b"x", sync=True)
    fsync_dir(lossy.mount)
    os.unlink(lossy.mount / "file")
    lossy.cut()
    lossy.start()
    assert (lossy.mount / "file").read_bytes() == b"x"


def test_a_folder_rename_moves_its_synced_files_and_their_unsynced_writes_stay_unsynced(lossy: Mount) -> None:
    """NATS swaps whole folders when it snapshots: a folder rename is durable at once, as mkdir is here."""
    (lossy.mount / "msgs").mkdir()
    write(lossy.mount / "msgs" / "1.blk", b"synced;", sync=True)
    fsync_dir(lossy.mount / "msgs")
    write(lossy.mount / "msgs" / "1.blk", b"unsynced;", sync=False, append=True)
    (lossy.mount / "old").mkdir()
    os.rename(lossy.mount / "msgs", lossy.mount / "old")  # replaces the empty folder
    assert os.listdir(lossy.mount / "old") == ["1.blk"]
    assert (lossy.mount / "old" / "1.blk").read_bytes() == b"synced;unsynced;"
    lossy.cut()
    lossy.start()
    assert sorted(os.listdir(lossy.mount)) == ["old"]
    assert (lossy.mount / "old" / "1.blk").read_bytes() == b"synced;"


@pytest.mark.parametrize("synchronous", ["FULL", "OFF"])
def test_sqlite_opens_the_surviving_file(lossy: Mount, synchronous: str) -> None:
    """WAL with FULL keeps every commit; with OFF (no fsync at all) the cut loses them; both files open clean."""
    db = sqlite3.connect(lossy.mount / "x.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    fsync_dir(lossy.mount)
    db.execute(f"PRAGMA synchronous={synchronous}")
    for i in range(50):
        db.execute("INSERT INTO t VALUES (?)", (i,))
        db.commit()
    lossy.cut()
    db.close()
    lossy.start()
    again = sqlite3.connect(lossy.mount / "x.db")
    try:
        assert again.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        count = again.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        again.close()
    assert count == (50 if synchronous == "FULL" else 0)


def test_with_an_owner_every_entry_is_that_users_and_folder_modes_are_kept(tmp_path: Path) -> None:
    """PostgreSQL, run as its own user, checks that its data folder is its own and 0700."""
    from tests.lossyfs.fs import LossyFS

    backing = tmp_path / "backing"
    (backing / "data").mkdir(parents=True)
    (backing / "data" / "PG_VERSION").write_text("15\n")
    fs = LossyFS(backing, owner=(4321, 8765))
    fs.chmod("/data", 0o700)
    folder, file = fs.getattr("/data"), fs.getattr("/data/PG_VERSION")
    assert (folder["st_uid"], folder["st_gid"], file["st_uid"], file["st_gid"]) == (4321, 8765, 4321, 8765)
    assert folder["st_mode"] & 0o7777 == 0o700
    assert LossyFS(backing).getattr("/data")["st_mode"] & 0o7777 == 0o700  # remounted: still 0700


@pytest.mark.parametrize("seed", range(20))
def test_torn_writes_keep_synced_data_whole_and_of_unsynced_writes_at_most_a_prefix_each(
    tmp_path: Path, seed: int
) -> None:
    """LazyFS's torn-seq: after the cut, each unsynced write survives as a prefix (empty, partial or whole)."""
    import random

    from tests.lossyfs.fs import LossyFS

    fs = LossyFS(tmp_path, torn=random.Random(seed))
    fs.create("/f", 0o644)
    fs.write("/f", b"S" * 5000, 0, None)
    fs.fsync("/f", 0, None)
    fs.fsyncdir("/", 0, None)
    writes = [(b"a" * 3000, 5000), (b"b" * 9000, 8000), (b"c" * 100, 2000)]  # appends and an overwrite
    for data, offset in writes:
        fs.write("/f", data, offset, None)
    survived = (tmp_path / "f").read_bytes()  # what the disk holds at the cut
    expected_old = bytearray(b"S" * 5000)
    assert survived[:2000] == expected_old[:2000] and survived[2100:5000] == expected_old[2100:5000]
    for data, offset in writes:
        kept = 0
        while kept < len(data) and offset + kept < len(survived) and survived[offset + kept] == data[0]:
            kept += 1
        rest = survived[offset + kept : offset + len(data)]
        assert all(byte != data[0] for byte in rest), (seed, data[:1], kept)  # a prefix, never a gap
    after = LossyFS(tmp_path)
    assert bytes(after._node("/f").data or b"")[:2000] == b"S" * 2000


def test_torn_writes_tear_some_writes_and_drop_others(tmp_path: Path) -> None:
    import random

    from tests.lossyfs.fs import LossyFS

    kept: set[str] = set()
    for seed in range(30):
        folder = tmp_path / str(seed)
        folder.mkdir()
        fs = LossyFS(folder, torn=random.Random(seed))
        fs.create("/f", 0o644)
        fs.fsync("/f", 0, None)
        fs.fsyncdir("/", 0, None)
        fs.write("/f", b"x" * 10000, 0, None)
        size = len((folder / "f").read_bytes())
        kept.add("none" if size == 0 else "whole" if size == 10000 else "torn")
    assert kept >= {"none", "torn"}, kept

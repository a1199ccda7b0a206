"""A FUSE filesystem that forgets what was not synced, the way a power cut does (after LazyFS).

Every operation passes through to a backing folder, with two exceptions that model the page cache:

- **Data.** A write lands in memory, page by page. Reads see it. Only `fsync`/`fdatasync` of that file
  writes its dirty pages (and its size) to the backing file and fsyncs it.
- **Names.** A create, unlink, rename or mkdir is applied to the backing folder at once but journalled;
  `fsync` of the parent folder makes its entries durable. An unlinked or replaced file is stashed, not
  deleted, so the change can be taken back.

So the backing folder plus the journal's undo is exactly what a disk with an honest `fsync` holds. Writing
`cut` (or `cut prefix SEED`) to the control file `/.lossyfs` cuts the power: unsynced pages are dropped
(with `prefix`, a random prefix of each file's unsynced pages, in write order, reaches the disk: a torn
write), unsynced namespace changes are undone newest first, and every later operation fails with EIO.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import mfusepy

PAGE = 4096
CONTROL = "/.lossyfs"
STASH = ".lossyfs-stash"


@dataclass
class Dirty:
    """A file's unsynced state: its logical size and pages, in the order first written."""

    size: int
    pages: dict[int, bytearray] = field(default_factory=dict)
    # Below this the backing file still holds the synced bytes; from it on, a page not written reads as zeros.
    floor: int = -1

    def __post_init__(self) -> None:
        if self.floor < 0:
            self.floor = self.size


class LossyFS(mfusepy.Operations):
    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)
        os.makedirs(os.path.join(self.backing, STASH), exist_ok=True)
        self.dirty: dict[str, Dirty] = {}
        # (parent folder, undo action, arguments), oldest first.
        self.journal: list[tuple[str, str, tuple[str, ...]]] = []
        self.stashed = 0
        self.cut = False
        self.mutex = threading.RLock()

    # -- helpers --------------------------------------------------------------------------------------------
    def real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def check(self, path: str = "") -> None:
        if self.cut:
            raise mfusepy.FuseOSError(errno.EIO)
        if path.lstrip("/").split("/", 1)[0] == STASH:
            raise mfusepy.FuseOSError(errno.ENOENT)

    def stash(self, path: str) -> str:
        self.stashed += 1
        target = os.path.join(self.backing, STASH, str(self.stashed))
        os.rename(self.real(path), target)
        return target

    def note(self, path: str, action: str, *args: str) -> None:
        self.journal.append((os.path.dirname(path) or "/", action, args))

    def size_of(self, path: str) -> int:
        dirty = self.dirty.get(path)
        return dirty.size if dirty is not None else os.lstat(self.real(path)).st_size

    def page(self, path: str, fd: int, number: int) -> bytes:
        dirty = self.dirty.get(path)
        if dirty is not None and number in dirty.pages:
            return bytes(dirty.pages[number])
        if dirty is not None and number * PAGE >= dirty.floor:
            return bytes(PAGE)
        data = os.pread(fd, PAGE, number * PAGE)
        if dirty is not None and (number + 1) * PAGE > dirty.floor:
            data = data[: dirty.floor - number * PAGE]
        return data + bytes(PAGE - len(data))

    # -- the control file -----------------------------------------------------------------------------------
    def power_cut(self, mode: str, seed: int) -> None:
        rng = random.Random(seed)
        for path, dirty in self.dirty.items():
            if mode != "prefix" or not dirty.pages or not os.path.exists(self.real(path)):
                continue
            order = list(dirty.pages)  # dicts keep insertion order: the order pages were first written
            kept = order[: rng.randint(0, len(order))]
            fd = os.open(self.real(path), os.O_WRONLY)
            try:
                for number in kept:
                    os.pwrite(fd, bytes(dirty.pages[number]), number * PAGE)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.dirty.clear()
        for _, action, args in reversed(self.journal):
            try:
                if action == "unlink":
                    os.unlink(args[0])
                elif action == "rmdir":
                    os.rmdir(args[0])
                elif action == "move":
                    os.rename(args[0], args[1])
            except OSError:
                pass  # a later change already took it back
        self.journal.clear()
        self.cut = True

    # -- metadata -------------------------------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == CONTROL:
            return {"st_mode": 0o100600, "st_nlink": 1, "st_size": 0}
        self.check(path)
        with self.mutex:
            try:
                st = os.lstat(self.real(path))
            except OSError as exc:
                raise mfusepy.FuseOSError(exc.errno) from None
            attrs = {key: getattr(st, key) for key in (
                "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns", "st_mtime_ns", "st_ctime_ns"
            )}  # fmt: skip
            attrs = {k.replace("_ns", ""): v for k, v in attrs.items()}
            if path in self.dirty:
                attrs["st_size"] = self.dirty[path].size
            return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        self.check(path)
        names = [n for n in os.listdir(self.real(path)) if not (path == "/" and n == STASH)]
        return [".", "..", *names]

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.backing)
        return {key: getattr(st, key) for key in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize",
            "f_namemax",
        )}  # fmt: skip

    def access(self, path: str, amode: int) -> int:
        self.check(path)
        if not os.access(self.real(path), amode):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        self.check(path)
        os.chmod(self.real(path), mode)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        self.check(path)
        os.utime(self.real(path), ns=times) if times else os.utime(self.real(path))
        return 0

    # -- names ----------------------------------------------------------------------------------------------
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        self.check(path)
        with self.mutex:
            existed = os.path.exists(self.real(path))
            fd = os.open(self.real(path), os.O_RDWR | os.O_CREAT, mode)
            if not existed:
                self.note(path, "unlink", self.real(path))
            return fd

    def mkdir(self, path: str, mode: int) -> int:
        self.check(path)
        with self.mutex:
            os.mkdir(self.real(path), mode)
            self.note(path, "rmdir", self.real(path))
            return 0

    def unlink(self, path: str) -> int:
        self.check(path)
        with self.mutex:
            self.dirty.pop(path, None)  # its unsynced pages go with it either way
            self.note(path, "move", self.stash(path), self.real(path))
            return 0

    def rmdir(self, path: str) -> int:
        self.check(path)
        with self.mutex:
            os.rmdir(self.real(path))
            return 0

    def rename(self, old: str, new: str) -> int:
        self.check(old)
        self.check(new)
        with self.mutex:
            replaced = self.stash(new) if os.path.exists(self.real(new)) else None
            os.rename(self.real(old), self.real(new))
            if old in self.dirty:
                self.dirty[new] = self.dirty.pop(old)
            # Undone newest first: the file goes back to `old`, then whatever `new` was comes back.
            if replaced is not None:
                self.note(new, "move", replaced, self.real(new))
            self.note(new, "move", self.real(new), self.real(old))
            if os.path.dirname(old) != os.path.dirname(new):
                self.note(old, "move", self.real(new), self.real(old))
            return 0

    def link(self, target: str, source: str) -> int:
        """`ln source target`: a new name for an existing file (its unsynced pages are not shared)."""
        self.check(target)
        with self.mutex:
            try:
                os.link(self.real(source), self.real(target))
            except OSError as exc:
                raise mfusepy.FuseOSError(exc.errno) from None
            self.note(target, "unlink", self.real(target))
            return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self.check(path)
        with self.mutex:
            fd = os.open(self.real(path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.journal = [entry for entry in self.journal if entry[0] != path]
            return 0

    # -- data -----------------------------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        if path == CONTROL:
            return 0
        self.check(path)
        with self.mutex:
            if flags & os.O_TRUNC:
                self.truncate(path, 0)
            return os.open(self.real(path), os.O_RDWR if os.access(self.real(path), os.W_OK) else os.O_RDONLY)

    def release(self, path: str, fh: int) -> int:
        if path != CONTROL and fh:
            os.close(fh)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self.check(path)
        with self.mutex:
            end = min(offset + size, self.size_of(path))
            if offset >= end:
                return b""
            if path not in self.dirty:
                return os.pread(fh, end - offset, offset)
            first, last = offset // PAGE, (end - 1) // PAGE
            data = b"".join(self.page(path, fh, n) for n in range(first, last + 1))
            start = offset - first * PAGE
            return data[start : start + end - offset]

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if path == CONTROL:
            words = data.decode().split()
            if words and words[0] == "cut":
                with self.mutex:
                    self.power_cut(words[1] if len(words) > 1 else "drop", int(words[2]) if len(words) > 2 else 0)
            return len(data)
        self.check(path)
        with self.mutex:
            dirty = self.dirty.setdefault(path, Dirty(os.fstat(fh).st_size))
            position = offset
            while position < offset + len(data):
                number, within = divmod(position, PAGE)
                page = dirty.pages.get(number)
                if page is None:
                    page = dirty.pages[number] = bytearray(self.page(path, fh, number))
                piece = data[position - offset : position - offset + PAGE - within]
                page[within : within + len(piece)] = piece
                position += len(piece)
            dirty.size = max(dirty.size, offset + len(data))
            return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self.check(path)
        with self.mutex:
            dirty = self.dirty.get(path)
            if dirty is None:
                dirty = self.dirty[path] = Dirty(os.lstat(self.real(path)).st_size)
            dirty.size = length
            dirty.floor = min(dirty.floor, length)
            for number in [n for n in dirty.pages if n * PAGE >= length]:
                del dirty.pages[number]
            if length % PAGE and length // PAGE in dirty.pages:
                page = dirty.pages[length // PAGE]
                page[length % PAGE :] = bytes(PAGE - length % PAGE)
            return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self.check(path)
        with self.mutex:
            dirty = self.dirty.pop(path, None)
            fd = os.open(self.real(path), os.O_WRONLY)
            try:
                if dirty is not None:
                    os.ftruncate(fd, min(dirty.floor, os.fstat(fd).st_size))
                    for number, page in dirty.pages.items():
                        os.pwrite(fd, bytes(page[: max(0, min(PAGE, dirty.size - number * PAGE))]), number * PAGE)
                    os.ftruncate(fd, dirty.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            return 0

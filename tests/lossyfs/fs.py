"""The FUSE operations: the page cache in memory, durable state in the backing folder."""

from __future__ import annotations

import errno
import os
import random
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mfusepy

PAGE = 4096
ORPHANS = ".lossyfs"  # synced data of files whose name is not durable yet; dropped at the next mount


@dataclass
class Node:
    """One file's volatile content; `durable` is the backing path holding its last synced data, if any."""

    mode: int
    durable: str | None
    data: bytearray | None = None  # loaded on first use
    size_durable: int = 0
    dirty: set[int] = field(default_factory=set)  # pages written since the last fsync
    truncated: bool = False
    mtime: float = field(default_factory=time.time)


class LossyFS(mfusepy.Operations):  # type: ignore[misc]
    use_ns = False

    def __init__(
        self,
        backing: Path,
        owner: tuple[int, int] | None = None,
        journal: bool = False,
        torn: random.Random | None = None,
    ) -> None:
        self.root = str(backing)
        # torn (LazyFS's torn-seq/torn-op): the kernel may write dirty pages back before any fsync, and a page
        # can be half written when the power goes. Each write, with even odds, reaches the backing file at once
        # cut at a random byte; the rest stays volatile. The cut then keeps a random prefix of unsynced writes.
        self.torn = torn
        # journal: a file's fsync also makes its own name durable, as ext4's and XFS's journals do in practice
        # (the entry is in the same or an earlier transaction); POSIX, the default here, needs the folder's fsync.
        self.journal = journal
        # Who every entry belongs to: another user's process (PostgreSQL's) checks its data folder is its own.
        self.uid, self.gid = owner or (os.getuid(), os.getgid())
        self.mutex = threading.RLock()
        self.files: dict[str, Node] = {}
        self.dirs: dict[str, int] = {"/": os.stat(self.root).st_mode & 0o7777}
        self.serial = 0
        orphans = os.path.join(self.root, ORPHANS)
        if os.path.isdir(orphans):
            for name in os.listdir(orphans):
                os.unlink(os.path.join(orphans, name))
        else:
            os.mkdir(orphans)
        for folder, dirnames, filenames in os.walk(self.root):
            rel = "/" + os.path.relpath(folder, self.root).lstrip(".")
            rel = "/" if rel in ("/", "/.") else rel
            if rel.startswith("/" + ORPHANS):
                continue
            for d in dirnames:
                if not (rel == "/" and d == ORPHANS):
                    self.dirs[self._join(rel, d)] = os.stat(os.path.join(folder, d)).st_mode & 0o7777
            for f in filenames:
                st = os.stat(os.path.join(folder, f))
                path = self._join(rel, f)
                self.files[path] = Node(st.st_mode & 0o7777, self._back(path), size_durable=st.st_size)

    # helpers
    @staticmethod
    def _join(folder: str, name: str) -> str:
        return folder.rstrip("/") + "/" + name

    def _back(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _node(self, path: str) -> Node:
        node = self.files.get(path)
        if node is None:
            raise mfusepy.FuseOSError(errno.EISDIR if path in self.dirs else errno.ENOENT)
        if node.data is None:
            node.data = bytearray()
            if node.durable is not None:
                with open(node.durable, "rb") as f:
                    node.data = bytearray(f.read())
        return node

    def _parent(self, path: str) -> str:
        parent = path.rsplit("/", 1)[0] or "/"
        if parent not in self.dirs:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return parent

    # metadata
    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        with self.mutex:
            now = time.time()
            if path in self.dirs:
                return {
                    "st_mode": stat.S_IFDIR | self.dirs[path],
                    "st_nlink": 2,
                    "st_size": 4096,
                    "st_mtime": now,
                    "st_atime": now,
                    "st_ctime": now,
                    "st_uid": self.uid,
                    "st_gid": self.gid,
                }
            node = self.files.get(path)
            if node is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            size = len(node.data) if node.data is not None else node.size_durable
            return {
                "st_mode": stat.S_IFREG | node.mode,
                "st_nlink": 1,
                "st_size": size,
                "st_blocks": (size + 511) // 512,
                "st_mtime": node.mtime,
                "st_atime": node.mtime,
                "st_ctime": node.mtime,
                "st_uid": self.uid,
                "st_gid": self.gid,
            }

    def readdir(self, path: str, fh: Any) -> list[str]:
        with self.mutex:
            prefix = path.rstrip("/") + "/"
            names = [p[len(prefix) :] for p in [*self.files, *self.dirs] if p.startswith(prefix) and p != prefix]
            return [".", "..", *(n for n in names if "/" not in n)]

    def access(self, path: str, amode: int) -> int:
        with self.mutex:
            if path not in self.files and path not in self.dirs:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return 0

    def chmod(self, path: str, mode: int) -> int:
        with self.mutex:
            if path in self.dirs:  # folders are durable in this model: so is their mode
                self.dirs[path] = mode & 0o7777
                os.chmod(self._back(path), mode & 0o7777)
            else:
                self._node(path).mode = mode & 0o7777
            return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str, times: Any = None) -> int:
        with self.mutex:
            if path in self.files:
                self.files[path].mtime = times[1] if times else time.time()
            return 0

    def statfs(self, path: str) -> dict[str, Any]:
        st = os.statvfs(self.root)
        fields = "f_bavail f_bfree f_blocks f_bsize f_favail f_ffree f_files f_flag f_frsize f_namemax"
        return {k: getattr(st, k) for k in fields.split()}

    # namespace: volatile until the parent folder is fsynced (folders themselves are created/removed durably)
    def mkdir(self, path: str, mode: int) -> int:
        with self.mutex:
            self._parent(path)
            if path in self.dirs or path in self.files:
                raise mfusepy.FuseOSError(errno.EEXIST)
            os.makedirs(self._back(path), exist_ok=True)
            self.dirs[path] = mode & 0o7777
            return 0

    def rmdir(self, path: str) -> int:
        with self.mutex:
            if path not in self.dirs:
                raise mfusepy.FuseOSError(errno.ENOENT)
            if self.readdir(path, None)[2:]:
                raise mfusepy.FuseOSError(errno.ENOTEMPTY)
            del self.dirs[path]
            return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        with self.mutex:
            self._parent(path)
            if path not in self.files:
                self.files[path] = Node(mode & 0o7777, None, data=bytearray())
            return self._fh()

    def unlink(self, path: str) -> int:
        with self.mutex:
            self._node(path)
            del self.files[path]
            return 0

    def rename(self, old: str, new: str) -> int:
        with self.mutex:
            self._parent(new)
            if old in self.dirs:
                self._rename_dir(old, new)
                return 0
            node = self._node(old)
            del self.files[old]
            self.files[new] = node
            return 0

    def _rename_dir(self, old: str, new: str) -> None:
        """Folders are durable in this model (as mkdir is): the backing folder moves at once, with its entries."""
        if new in self.files:
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        if new in self.dirs and self.readdir(new, None)[2:]:
            raise mfusepy.FuseOSError(errno.ENOTEMPTY)
        old_b, new_b = self._back(old), self._back(new)
        if os.path.isdir(new_b):
            shutil.rmtree(new_b)  # empty as seen; what the backing still holds was unlinked since
        os.rename(old_b, new_b)

        def moved(p: str) -> str | None:
            return new + p[len(old) :] if p == old or p.startswith(old + "/") else None

        for table in (self.dirs, self.files):
            for p in [p for p in table if moved(p)]:
                table[moved(p)] = table.pop(p)  # type: ignore[index]
        for node in self.files.values():
            if node.durable is not None and node.durable.startswith(old_b + "/"):
                node.durable = new_b + node.durable[len(old_b) :]

    def fsyncdir(self, path: str, datasync: int, fh: Any) -> int:
        """Make the folder's entries durable: its backing folder then lists exactly the volatile names."""
        with self.mutex:
            prefix = path.rstrip("/") + "/"
            wanted = {p: n for p, n in self.files.items() if p.startswith(prefix) and "/" not in p[len(prefix) :]}
            for p, node in wanted.items():
                target = self._back(p)
                if node.durable == target:
                    continue
                self._forget(target)
                if node.durable is not None:
                    os.rename(node.durable, target)
                else:
                    open(target, "wb").close()
                    node.size_durable = 0
                node.durable = target
            backing = self._back(path)
            for name in os.listdir(backing):
                full = os.path.join(backing, name)
                rel = self._join(path, name)
                if os.path.isfile(full) and rel not in wanted and not (path == "/" and name == ORPHANS):
                    self._forget(full)
                    os.unlink(full)
            fd = os.open(backing, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return 0

    def _forget(self, durable: str) -> None:
        """A backing file is about to be replaced: the node that pointed at it keeps only its volatile data."""
        for node in self.files.values():
            if node.durable == durable:
                self._node_load(node)
                node.durable = None
                node.dirty = set(range((len(node.data or b"") + PAGE - 1) // PAGE))
                node.truncated = True

    def _node_load(self, node: Node) -> None:
        if node.data is None and node.durable is not None:
            with open(node.durable, "rb") as f:
                node.data = bytearray(f.read())

    # data
    def _fh(self) -> int:
        self.serial += 1
        return self.serial

    def open(self, path: str, flags: int) -> int:
        with self.mutex:
            node = self._node(path)
            if flags & os.O_TRUNC:
                self._truncate(node, 0)
            return self._fh()

    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        with self.mutex:
            node = self._node(path)
            assert node.data is not None
            return bytes(node.data[offset : offset + size])

    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        with self.mutex:
            node = self._node(path)
            assert node.data is not None
            if offset > len(node.data):
                node.data.extend(b"\0" * (offset - len(node.data)))
            node.data[offset : offset + len(data)] = data
            node.dirty.update(range(offset // PAGE, (offset + len(data) - 1) // PAGE + 1))
            if self.torn is not None and node.durable is not None and self.torn.random() < 0.5:
                self._write_back(node.durable, data[: self.torn.randrange(len(data) + 1)], offset)
            node.mtime = time.time()
            return len(data)

    @staticmethod
    def _write_back(durable: str, data: bytes, offset: int) -> None:
        """Early writeback of part of an unsynced write (its pages stay dirty: fsync rewrites them whole)."""
        fd = os.open(durable, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        with self.mutex:
            self._truncate(self._node(path), length)
            return 0

    def _truncate(self, node: Node, length: int) -> None:
        assert node.data is not None
        if length < len(node.data):
            del node.data[length:]
        else:
            node.dirty.update(range(len(node.data) // PAGE, (length + PAGE - 1) // PAGE))
            node.data.extend(b"\0" * (length - len(node.data)))
        node.truncated = True

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: Any) -> int:
        with self.mutex:
            node = self._node(path)
            assert node.data is not None
            if mode == 0 and offset + size > len(node.data):
                self._truncate(node, offset + size)
            return 0

    def fsync(self, path: str, datasync: int, fh: Any) -> int:
        """Write the dirty pages to the backing file (an orphan file while the name is not durable)."""
        with self.mutex:
            node = self._node(path)
            assert node.data is not None
            if node.durable is None:
                node.durable = os.path.join(self.root, ORPHANS, f"ino-{id(node)}")
                open(node.durable, "wb").close()
            fd = os.open(node.durable, os.O_WRONLY)
            try:
                for page in sorted(node.dirty):
                    chunk = node.data[page * PAGE : (page + 1) * PAGE]
                    if chunk:
                        os.pwrite(fd, bytes(chunk), page * PAGE)
                if node.truncated or os.fstat(fd).st_size != len(node.data):
                    os.ftruncate(fd, len(node.data))
                os.fsync(fd)
            finally:
                os.close(fd)
            node.dirty.clear()
            node.truncated = False
            node.size_durable = len(node.data)
            if self.journal and node.durable != self._back(path):
                self._name_durable(path, node)
            return 0

    def _name_durable(self, path: str, node: Node) -> None:
        target = self._back(path)
        self._forget(target)
        assert node.durable is not None
        os.rename(node.durable, target)
        node.durable = target
        fd = os.open(os.path.dirname(target), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def flush(self, path: str, fh: Any) -> int:
        return 0

    release = flush


def serve(
    mount: Path, backing: Path, owner: tuple[int, int] | None = None, journal: bool = False, torn: int | None = None
) -> None:
    """Serve until killed; with `owner`, other users may enter the mount (allow_other) and own what is in it;
    `torn` seeds the torn-write model."""
    fs = LossyFS(backing, owner, journal, None if torn is None else random.Random(torn))
    mfusepy.FUSE(fs, str(mount), foreground=True, nothreads=True, allow_other=owner is not None)

"""Start, cut and unmount the lossy filesystem from a test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def fuse_missing() -> str | None:
    """Why the lossy filesystem cannot run here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse (FUSE unavailable)"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (install Debian fuse3: `make fuse`)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as error:
        return f"mfusepy unusable: {error}"
    return None


class Mount:
    """The lossy filesystem at `mount` over `backing`, served by a child process."""

    def __init__(
        self,
        mount: Path,
        backing: Path,
        owner: tuple[int, int] | None = None,
        *,
        journal: bool = False,
        torn: int | None = None,
    ) -> None:
        self.mount, self.backing, self.owner, self.journal, self.torn = mount, backing, owner, journal, torn
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        if os.path.ismount(self.mount):  # a stale mount left by a killed run
            subprocess.run(["fusermount3", "-uz", str(self.mount)], check=False)
        self.mount.mkdir(parents=True, exist_ok=True)
        self.backing.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.lossyfs", str(self.mount), str(self.backing)]
            + (["--owner", f"{self.owner[0]}:{self.owner[1]}"] if self.owner else [])
            + (["--journal"] if self.journal else [])
            + (["--torn", str(self.torn)] if self.torn is not None else []),
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mount):
            if self.proc.poll() is not None:
                raise RuntimeError(f"lossyfs exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            if time.monotonic() > deadline:
                self.cut()
                raise TimeoutError("lossyfs did not mount")
            time.sleep(0.02)

    def cut(self) -> None:
        """The power cut: kill the server (its page cache goes with it), then detach the mount."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
        subprocess.run(
            ["fusermount3", "-uz", str(self.mount)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        )

    def __enter__(self) -> Mount:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

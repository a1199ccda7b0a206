"""Mount LossyFS in a child process, cut its power, unmount it; skip where FUSE is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES

FUSERMOUNT = shutil.which("fusermount3") or "/usr/bin/fusermount3"


def require_fuse() -> None:
    """Skip without /dev/fuse, fusermount3 or mfusepy's libfuse (a laptop), unless CI requires them."""
    problem = None
    if not Path("/dev/fuse").exists():
        problem = "no /dev/fuse"
    elif not Path(FUSERMOUNT).exists():
        problem = "no fusermount3 (apt-get install fuse3; `make fuse`)"
    else:
        try:
            import mfusepy  # noqa: F401
        except (ImportError, OSError) as exc:
            problem = f"mfusepy cannot load libfuse: {exc}"
    if problem is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(problem + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(problem)


class Mount:
    """`path` is the lossy view; `backing` holds what a disk would hold after a cut."""

    def __init__(self, root: Path) -> None:
        self.path, self.backing = root / "mnt", root / "disk"
        self.path.mkdir(parents=True, exist_ok=True)
        self.backing.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "lossyfs.log"
        self.cut_done = False

    def start(self, timeout: float = 10.0) -> Mount:
        require_fuse()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.lossyfs", str(self.path), str(self.backing)],
                cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lossyfs did not mount: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)
        return self

    def cut(self, mode: str = "drop", seed: int = 0) -> None:
        """Cut the power: what was not synced is gone (`prefix`: a random prefix of it reached the disk)."""
        with open(self.path / ".lossyfs", "w") as control:
            control.write(f"cut {mode} {seed}")
        self.cut_done = True

    def stop(self) -> None:
        """Unmount (lazily: processes still holding files see errors) and stop the filesystem process."""
        if self.proc is not None and self.cut_done:
            self.proc.kill()  # after a cut the backing folder is the disk: nothing in the process matters
        # Always: a killed filesystem leaves a mount whose lstat fails, which ismount() cannot tell apart.
        subprocess.run([FUSERMOUNT, "-uz", str(self.path)], capture_output=True, timeout=10)
        if self.proc is not None:
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

"""`python -m tests.lossyfs MOUNT BACKING`: serve LossyFS in the foreground until unmounted."""

import sys

import mfusepy

from tests.lossyfs.fs import LossyFS

if __name__ == "__main__":
    mount, backing = sys.argv[1], sys.argv[2]
    mfusepy.FUSE(LossyFS(backing), mount, foreground=True, nothreads=True, attr_timeout=0, entry_timeout=0)

"""A FUSE filesystem that forgets what was not synced: a power cut for tests (modelled on Jepsen's LazyFS).

Run `python -m tests.lossyfs MOUNT BACKING`. Every operation is served from memory; the backing folder only ever
receives durable state: a file's data when it is fsynced, a folder's entries when the folder is fsynced. A cut is
SIGKILL of the FUSE process plus a lazy unmount (`Mount.cut`); what survives is exactly the backing folder.
"""

from tests.lossyfs.mount import Mount, fuse_missing

__all__ = ["Mount", "fuse_missing"]

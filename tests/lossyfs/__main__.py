"""`python -m tests.lossyfs MOUNT BACKING [--owner UID:GID] [--journal] [--torn SEED]`: serve until killed."""

import argparse
from pathlib import Path

from tests.lossyfs.fs import serve

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mount", type=Path)
    parser.add_argument("backing", type=Path)
    parser.add_argument("--owner", help="UID:GID every entry belongs to; lets that user in (allow_other)")
    parser.add_argument("--journal", action="store_true", help="a file's fsync also makes its name durable")
    parser.add_argument("--torn", type=int, metavar="SEED", help="torn writes: unsynced data partly reaches disk")
    args = parser.parse_args()
    owner = tuple(int(part) for part in args.owner.split(":")) if args.owner else None
    serve(args.mount, args.backing, owner, args.journal, args.torn)  # type: ignore[arg-type]

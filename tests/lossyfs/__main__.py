"""`python -m tests.lossyfs MOUNT BACKING`: serve the lossy filesystem in the foreground until killed."""

import sys
from pathlib import Path

from tests.lossyfs.fs import serve

if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]))

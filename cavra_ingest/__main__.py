"""`python -m cavra_ingest`: the command line.

Imports: cli.
"""

import sys

from cavra_ingest.cli.main import main

sys.exit(main())

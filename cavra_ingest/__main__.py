import sys

from cavra_ingest.cli.main import main

sys.exit(main())

"""`python -m plugin.cli` runs the `hepatica` command (tests start the node this way)."""

import sys

from plugin.cli.main import main

sys.exit(main())

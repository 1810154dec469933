"""``python -m certwright``: the command line."""
from __future__ import annotations

import sys

from certwright.engine.cli.main import main

sys.exit(main())

"""`python -m modelway`: see modelway.cli."""

import sys

from modelway.cli import main

sys.exit(main())

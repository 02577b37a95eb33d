"""`python -m granite_tuner.cli`: the same as the `granite-tuner` command."""

import sys

from granite_tuner.cli import main

sys.exit(main())

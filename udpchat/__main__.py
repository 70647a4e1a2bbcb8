"""`python -m udpchat`: the same as the `udpchat` command."""

import sys

from .cli import main

sys.exit(main())

"""`python -m udpchat`: the same as the `udpchat` command."""

import sys

from .cli import main

# Guarded: the process model's spawned children import this module as __mp_main__.
if __name__ == "__main__":
    sys.exit(main())

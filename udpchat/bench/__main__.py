"""`python -m udpchat.bench`: the same as `udpchat bench`."""

import sys

from .cli import main

sys.exit(main())

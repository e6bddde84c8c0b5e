"""``python -m clipshift`` (and ``torchrun -m clipshift train ...``): the command line."""

import sys

from .cli import main

sys.exit(main())

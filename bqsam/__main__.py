"""``python -m bqsam``: the same command line as ``bqsam`` (used by ``torchrun -m bqsam``)."""

import sys

from .cli import main

sys.exit(main())

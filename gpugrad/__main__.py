"""``python -m gpugrad``: the same command line as the ``gpugrad`` console script."""

import sys

from .cli import main

sys.exit(main())

"""``python -m shared.cli``: the same as the ``cosell`` console script."""

import sys

from shared.cli import main

sys.exit(main())

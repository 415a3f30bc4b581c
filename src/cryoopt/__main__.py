"""``python -m cryoopt``: the ``cryoopt`` command."""

import sys

from cryoopt.cli import main

sys.exit(main())

"""``python -m taquba_bulk``: the ``taquba-bulk`` command."""

import sys

from ._cli import main

sys.exit(main())

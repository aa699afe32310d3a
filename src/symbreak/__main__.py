"""``python -m symbreak``: same as the ``symbreak`` command (and what torchrun runs)."""

import sys

from symbreak.cli import main

sys.exit(main())

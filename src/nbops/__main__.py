"""`python -m nbops ...`: the `nbops` command (nbops.cli)."""

import sys

from nbops.cli import main

if __name__ == "__main__":
    sys.exit(main())

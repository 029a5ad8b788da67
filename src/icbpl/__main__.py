"""``python -m icbpl``: the same as the ``icbpl`` command."""

from __future__ import annotations

import sys

from icbpl.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m icbpl.bench``: the same as ``icbpl bench``."""

from __future__ import annotations

import sys

from icbpl.bench import main

if __name__ == "__main__":
    sys.exit(main())

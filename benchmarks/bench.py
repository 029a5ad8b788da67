"""Run a benchmark experiment of :mod:`icbpl_bench` (the paper's Table 11 analogue, ablations,
encoders, plots) from the repository root; it writes docs/bench/ and docs/BENCHMARKS.md sections::

    .venv/bin/python benchmarks/bench.py all --quick
    .venv/bin/python benchmarks/bench.py table11 --seeds 0 1 2 --cache-dir CACHE
"""

from __future__ import annotations

import sys

from icbpl_bench import main

if __name__ == "__main__":
    sys.exit(main())

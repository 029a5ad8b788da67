"""HTML report of a clustering run (see docs/DESIGN.md, ``icbpl.report``).

`write_report(results_dir)` reads the folder written by ``icbpl cluster`` and writes a
self-contained ``report.html`` (thumbnails and map embedded as data URIs) plus ``map.png``.
`load_results` reads and checks the folder on its own.
"""

from __future__ import annotations

from icbpl.report._load import ReportError, Results, load_results
from icbpl.report._write import write_report

__all__ = ["ReportError", "Results", "load_results", "write_report"]

"""Shared helpers of the benchmark scripts: paths, plus the provenance and docs helpers of
:mod:`icbpl_bench._docs` (one copy, shared with ``benchmarks/bench.py``)."""

from __future__ import annotations

from pathlib import Path

from icbpl_bench._docs import (
    HEADER,
    command_line,
    cpu_name,
    git_rev,
    machine,
    mean_std,
    preamble,
    utc_now,
)
from icbpl_bench._docs import write_section as _write_section

__all__ = [
    "BENCHMARKS_MD",
    "HEADER",
    "ROOT",
    "SHARED_DATA",
    "command_line",
    "cpu_name",
    "git_rev",
    "machine",
    "mean_std",
    "preamble",
    "utc_now",
    "write_section",
]

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "BENCHMARKS.md"
SHARED_DATA = ROOT.parent / "shared" / "data"


def write_section(name: str, body: str) -> Path:
    """Replace (or append) the section ``name`` of docs/BENCHMARKS.md with ``body``."""
    return _write_section(BENCHMARKS_MD, name, body)

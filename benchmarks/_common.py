"""Shared helpers of the benchmark scripts: machine facts and docs/BENCHMARKS.md sections."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "BENCHMARKS.md"
SHARED_DATA = ROOT.parent / "shared" / "data"

HEADER = """# Benchmarks

Every table below is written by the script named in its section, on the machine and date it
states; re-run the command to regenerate it. Timings from a shared 2-core machine are noisy:
compare rows of one run, not across runs.
"""


def machine() -> str:
    """One line describing where a benchmark ran."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} cores{dev}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, torch threads {torch.get_num_threads()}"
    )


def git_rev() -> str:
    """Short commit id of the checkout (or 'unknown')."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def preamble(command: str) -> str:
    """The lines every section starts with: command, machine, date, commit."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"- command: `{command}`\n- machine: {machine()}\n- date: {now}; commit {git_rev()}\n"


def command_line() -> str:
    """The command that is running, as a user would type it."""
    return " ".join([".venv/bin/python", *sys.argv])


def mean_std(values: list[float]) -> str:
    """``mean ± std`` with three decimals (std over runs, ddof=0)."""
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.3f} ± {arr.std():.3f}"


def write_section(name: str, body: str) -> Path:
    """Replace (or append) the section ``name`` of docs/BENCHMARKS.md with ``body``."""
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    BENCHMARKS_MD.write_text(text)
    return BENCHMARKS_MD

"""Provenance lines and docs/BENCHMARKS.md sections, shared by the scripts of benchmarks/.

Every benchmark table says where, when and from which commit it came (:func:`preamble`) and lives
in a named section of a Markdown file that re-running the benchmark replaces in place
(:func:`write_section`), so one file collects the latest result of each benchmark.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = [
    "HEADER",
    "command_line",
    "cpu_name",
    "git_rev",
    "machine",
    "mean_std",
    "preamble",
    "utc_now",
    "write_section",
]

HEADER = """# Benchmarks

Every table below is written by the script named in its section, on the machine and date it
states; re-run the command to regenerate it. Timings from a shared 2-core machine are noisy:
compare rows of one run, not across runs.
"""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line describing where a benchmark ran (CPU, cores, GPU, Python, torch, threads)."""
    import torch

    dev = f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu_name()}, {os.cpu_count()} cores{dev}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, torch threads {torch.get_num_threads()}"
    )


def git_rev(cwd: str | Path | None = None, ignore: Iterable[str | Path] = ()) -> str:
    """Short commit id of the checkout holding ``cwd`` (default: this package), or 'unknown'.

    A ``+dirty`` suffix says the working tree had uncommitted changes to tracked files other
    than the files and folders in ``ignore`` (a benchmark's own outputs).
    """
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True).stdout

    try:
        rev = git("rev-parse", "--short", "HEAD").strip()
        if not rev:
            return "unknown"
        top = Path(git("rev-parse", "--show-toplevel").strip())
        status = git("status", "--porcelain", "--untracked-files=no").splitlines()
    except OSError:
        return "unknown"
    skip = [Path(p).resolve() for p in ignore]
    changed = [(top / line[3:].split(" -> ")[-1]).resolve() for line in status if line]
    dirty = [p for p in changed if not any(p == s or s in p.parents for s in skip)]
    return f"{rev}+dirty" if dirty else rev


def utc_now() -> str:
    """The current time as ``YYYY-MM-DD HH:MM UTC``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def preamble(command: str, *, commit: str | None = None) -> str:
    """The lines every section starts with: command, machine, date, commit."""
    rev = commit if commit is not None else git_rev()
    return f"- command: `{command}`\n- machine: {machine()}\n- date: {utc_now()}; commit {rev}\n"


def command_line(argv: Iterable[str] | None = None) -> str:
    """The command that is running, as a user would type it (``.venv/bin/python`` + argv)."""
    return " ".join([".venv/bin/python", *(sys.argv if argv is None else argv)])


def mean_std(values: Iterable[float], digits: int = 3) -> str:
    """``mean ± std`` (std over runs, ddof=0) with ``digits`` decimals; ``-`` when empty."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return "-"
    return f"{arr.mean():.{digits}f} ± {arr.std():.{digits}f}"


def write_section(path: str | Path, name: str, body: str) -> Path:
    """Replace (or append) the section ``name`` of the Markdown file ``path`` with ``body``.

    A section is the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; a missing
    file starts with :data:`HEADER`. The file is replaced atomically (write, then rename).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = target.read_text() if target.exists() else HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(target)
    return target

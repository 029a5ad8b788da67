"""Wall time of `icbpl cluster` on the 10,000 CIFAR-10 test images from an empty cache.

Runs the real command (a subprocess) with ``ICBPL_CACHE`` and ``--cache-dir`` pointing at a
fresh temporary folder, so decoding, feature extraction (ONNX Runtime, fp32), neighbour mining
and training are all timed, once with the defaults and once with cheaper settings, and writes
the ``cluster-time`` section of docs/BENCHMARKS.md (the command's own stage timings included).

    .venv/bin/python benchmarks/bench_cluster_time.py
    .venv/bin/python benchmarks/bench_cluster_time.py --settings fast     # one setting only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, SHARED_DATA, command_line, preamble, write_section

#: name -> extra arguments of `icbpl cluster`
SETTINGS: dict[str, list[str]] = {
    "defaults": [],
    "previous": ["--views", "2", "--epochs", "60"],  # the defaults before 2026-11-23
    "fast": ["--views", "0"],
}


def run(extra: list[str], work: Path) -> tuple[float, dict[str, Any]]:
    """One `icbpl cluster` run from an empty cache; wall time and the summary's numbers."""
    cache, out = work / "cache", work / "out"
    cache.mkdir()
    cmd = [
        str(ROOT / ".venv" / "bin" / "icbpl"),
        "cluster",
        str(SHARED_DATA / "cifar10-jpg.tar.gz"),
        "--split",
        "test",
        "--k",
        "10",
        "--out",
        str(out),
        "--cache-dir",
        str(cache / "features"),
        "-q",
        *extra,
    ]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "ICBPL_CACHE": str(cache)})
    wall = time.perf_counter() - t
    summary = json.loads((out / "summary.json").read_text())
    return wall, summary


def main() -> None:
    """Time each setting and write the section."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = p.parse_args()
    if not (SHARED_DATA / "cifar10-jpg.tar.gz").is_file():
        sys.exit(f"CIFAR-10 JPEG copy not found in {SHARED_DATA}; see its README")
    load = os.getloadavg()[0]
    rows = []
    for name in args.settings:
        with tempfile.TemporaryDirectory() as tmp:
            wall, s = run(SETTINGS[name], Path(tmp))
        timings = s.get("timings", {})
        metrics = s.get("metrics") or {}
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total")
        rows.append(
            f"| {name} (`{' '.join(SETTINGS[name]) or 'no options'}`) | "
            f"{s.get('icbpl', {}).get('epochs')} ({s.get('best_epoch')}) | {wall:.0f} | "
            f"{stages} | {metrics.get('acc', float('nan')):.3f} | "
            f"{metrics.get('nmi', float('nan')):.3f} |"
        )
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            "## `icbpl cluster` on the 10,000 CIFAR-10 test images, from an empty cache\n",
            preamble(command_line()),
            f"- load average before the first run: {load:.1f} (2 cores; other jobs slow it)",
            "- encoder efficientnet_lite2, the CLI default (ImageNet **supervised** weights), "
            "k = 10; every run decodes, extracts, mines and trains from nothing (fresh cache "
            "folder)\n",
            "| settings | epochs (selected) | wall seconds | stages (the command's own timings) "
            "| ACC | NMI |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    write_section("cluster-time", body)


if __name__ == "__main__":
    main()

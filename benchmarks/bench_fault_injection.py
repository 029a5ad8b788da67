"""Fault injection: ``icbpl cluster`` killed at random moments, then re-run.

A small folder of generated images (3 colours x ``--per-class`` PNGs of 32x32) is clustered once
without interruption (the reference assignments), and once into the results folder that the
runs below replace (the "previous results"). Then, ``--runs`` times, with a new empty feature
cache each time so that a kill can land in any stage (start-up, folder scan, extraction,
neighbours, training, writing, the final swap):

1. ``icbpl cluster ... --overwrite`` is started on that results folder and sent SIGKILL or SIGINT
   (drawn at random) after a delay drawn uniformly from 0 to 1.1 x the reference wall time;
2. check: the results folder is byte-for-byte the previous results, or (the run had passed its
   final swap when the signal came) complete new results: exactly the files its manifest lists,
   with the reference assignments; anything else counts as lost;
3. the same command runs again, uninterrupted: it must exit 0 with the reference assignments
   (``cluster`` column of assignments.csv), and leave no staging folder or lock file behind.

The previous results of the next round are the re-run's results. Counts go to the
``fault-injection`` section of docs/BENCHMARKS.md.

    nice -n 10 .venv/bin/python benchmarks/bench_fault_injection.py --runs 100
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from _common import ROOT, command_line, preamble, write_section

COLOURS = ((220, 30, 30), (30, 200, 40), (30, 40, 220))


@dataclass
class Round:
    """One kill and its re-run."""

    sig: str
    delay: float
    killed_rc: int
    finished_before_kill: bool
    after_kill: str  # "unchanged", "replaced" (complete new results) or "LOST"
    rerun_ok: bool
    rerun_resumed: bool
    leftovers: list[str]


def make_folder(folder: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c, colour in enumerate(COLOURS):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.normal(0.0, 25.0, (32, 32, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"c{c}" / f"{i}.png")


def snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def clusters(folder: Path) -> list[str] | None:
    try:
        with (folder / "assignments.csv").open(newline="", encoding="utf-8") as f:
            return [row["cluster"] for row in csv.DictReader(f)]
    except (OSError, KeyError):
        return None


def complete(folder: Path) -> bool:
    """Whether ``folder`` holds exactly the files its manifest lists."""
    try:
        listed = set(json.loads((folder / ".icbpl-manifest.json").read_text())["files"])
    except (OSError, ValueError, KeyError):
        return False
    return listed == set(snapshot(folder)) - {".icbpl-manifest.json"}


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.icbpl-*"))


def _default_sigint() -> None:
    """In the child: SIGINT acts as Ctrl-C even when this script runs in the background (a
    shell starts background jobs with SIGINT ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Runner:
    """Builds and runs the ``icbpl cluster`` command of this benchmark."""

    def __init__(self, folder: Path, out: Path, args: argparse.Namespace) -> None:
        self.folder, self.out, self.args = folder, out, args
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }

    def argv(self, cache: Path) -> list[str]:
        return [
            *(sys.executable, "-m", "icbpl", "cluster", str(self.folder), "--k", "3"),
            *("--out", str(self.out), "--overwrite", "--cache-dir", str(cache)),
            *("--encoder", "resnet_cifar_tiny", "--weights", "random"),
            *("--epochs", str(self.args.epochs), "--threads", "1", "--batch-size", "16"),
        ]

    def run(self, cache: Path) -> tuple[int, str]:
        done = subprocess.run(
            self.argv(cache), capture_output=True, text=True, env=self.env, check=False
        )
        return done.returncode, done.stderr

    def kill_after(self, cache: Path, delay: float, sig: signal.Signals) -> int:
        proc = subprocess.Popen(
            self.argv(cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
            preexec_fn=_default_sigint,
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
        return proc.wait(timeout=300)


def one_round(
    runner: Runner,
    work: Path,
    reference: list[str],
    rng: np.random.Generator,
    max_delay: float,
    i: int,
) -> Round:
    out = runner.out
    cache = work / f"cache-{i}"
    before = snapshot(out)
    sig = signal.SIGKILL if rng.random() < 0.5 else signal.SIGINT
    delay = float(rng.uniform(0.0, max_delay))
    rc = runner.kill_after(cache, delay, sig)
    finished = rc == 0
    if snapshot(out) == before:
        after_kill = "unchanged"
    elif complete(out) and clusters(out) == reference:
        after_kill = "replaced"
    else:
        after_kill = "LOST"
    rc2, err = runner.run(cache)
    ok = rc2 == 0 and clusters(out) == reference
    shutil.rmtree(cache, ignore_errors=True)
    return Round(
        sig=sig.name,
        delay=delay,
        killed_rc=rc,
        finished_before_kill=finished,
        after_kill=after_kill,
        rerun_ok=ok,
        rerun_resumed="resuming feature extraction" in err,
        leftovers=leftovers(out),
    )


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def report(
    rounds: list[Round],
    ref_seconds: float,
    wall: float,
    load: tuple[str, str],
    args: argparse.Namespace,
) -> str:
    n = len(rounds)
    sigs = Counter(r.sig for r in rounds)
    killed = [r for r in rounds if not r.finished_before_kill]
    codes = Counter(r.killed_rc for r in killed)
    after = Counter(r.after_kill for r in rounds)
    late = sum(r.after_kill == "replaced" and not r.finished_before_kill for r in rounds)
    same = sum(r.rerun_ok for r in rounds)
    left = sum(bool(r.leftovers) for r in rounds)
    resumed = sum(r.rerun_resumed for r in killed)
    failures = [
        f"round {i}: {r}"
        for i, r in enumerate(rounds)
        if not (r.after_kill != "LOST" and r.rerun_ok and not r.leftovers)
    ]
    lines = [
        "## Fault injection: `icbpl cluster` killed at random moments, then re-run",
        "",
        preamble(command_line()).rstrip(),
        f"- load average (1/5/15 min) at the start: {load[0]}; at the end: {load[1]} "
        "(2 cores shared with other developers' jobs; run under `nice -n 10`)",
        "",
        f"Folder: {3 * args.per_class} generated 32x32 PNGs (3 colours). Command: "
        f"`icbpl cluster DIR --k 3 --out OUT --overwrite --cache-dir NEW_EMPTY_CACHE "
        f"--encoder resnet_cifar_tiny --weights random --epochs {args.epochs} "
        "--threads 1 --batch-size 16`. An uninterrupted run took "
        f"{ref_seconds:.1f} s wall time; each kill came after a delay drawn uniformly from 0 to "
        f"{1.1 * ref_seconds:.1f} s (seed {args.seed}). Whole benchmark: {wall / 60:.0f} min.",
        "",
        "| check | count |",
        "|---|---|",
        f"| rounds (kill, then re-run) | {n} (SIGKILL {sigs['SIGKILL']}, SIGINT "
        f"{sigs['SIGINT']}) |",
        f"| killed before finishing | {len(killed)} (exit statuses: "
        + ", ".join(f"{c}: {k}" for c, k in sorted(codes.items()))
        + ") |",
        f"| results folder after the signal: the previous results byte-identical | "
        f"{after['unchanged']} of {n} |",
        f"| ... or complete new results (exactly the files of their manifest, the reference "
        f"assignments): the run had passed its final swap | {after['replaced']} of {n} "
        f"({late} of them killed during its last moments, after the swap) |",
        f"| ... anything else (a result lost or half-written) | {after['LOST']} of {n} |",
        f"| re-run exit 0 with the uninterrupted run's assignments | {same} of {n} |",
        f"| re-runs of killed runs that resumed from cached feature rows | {resumed} of "
        f"{len(killed)} |",
        f"| rounds leaving a staging folder or lock file after the re-run | {left} of {n} |",
        "",
        f"Result: {'all checks passed' if not failures else f'{len(failures)} round(s) FAILED'}.",
    ]
    if failures:
        lines += ["", *[f"- {f}" for f in failures[:20]]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=100, help="kill + re-run rounds")
    p.add_argument("--per-class", type=int, default=12, help="images per colour")
    p.add_argument("--epochs", type=int, default=5, help="--epochs of each run")
    p.add_argument("--seed", type=int, default=0, help="seed of the signals and delays")
    p.add_argument("--no-write", action="store_true", help="do not write docs/BENCHMARKS.md")
    args = p.parse_args()
    load_start = load_average()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="icbpl-faults-"))
    try:
        folder = work / "photos"
        make_folder(folder, args.per_class, args.seed)
        ref = Runner(folder, work / "reference", args)
        t0 = time.perf_counter()
        rc, err = ref.run(work / "cache-ref")
        ref_seconds = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"the reference run failed ({rc}):\n{err[-3000:]}")
        reference = clusters(ref.out)
        assert reference is not None
        runner = Runner(folder, work / "results", args)
        if runner.run(work / "cache-prev")[0] != 0 or clusters(runner.out) != reference:
            raise SystemExit("the first run into the results folder differs from the reference")
        rng = np.random.default_rng(args.seed)
        rounds = []
        for i in range(args.runs):
            r = one_round(runner, work, reference, rng, 1.1 * ref_seconds, i)
            rounds.append(r)
            print(f"{i + 1}/{args.runs}: {r}", flush=True)
        body = report(
            rounds, ref_seconds, time.perf_counter() - t_start, (load_start, load_average()), args
        )
        print(body)
        if not args.no_write:
            print(f"wrote {write_section('fault-injection', body)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

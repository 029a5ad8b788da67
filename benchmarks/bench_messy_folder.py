"""A messy folder: does ``icbpl cluster`` finish, cluster every good image, list every bad file?

The folder (built in ``--workdir``, default a temporary folder removed afterwards):

* good images: the first ``--per-class`` images of each class of the CIFAR-10 JPEG copy's train
  split (``../shared/data/cifar10-jpg.tar.gz``, streamed in archive order), one class sub-folder
  each so that ACC/NMI/ARI can be measured; every ``--odd-every``-th one re-saved in an odd but
  valid form (EXIF-rotated, grey, RGBA, grey+alpha, palette, 16-bit, CMYK JPEG and TIFF, WebP,
  BMP, progressive JPEG, upper-case extension, trailing bytes, PNG named .jpg, unicode and
  spaces in the name); plus exact byte copies and file symlinks of some of them;
* entries skipped by rule, not counted as bad: hidden files and a hidden folder (names starting
  with "."), and two folder symlinks that loop back;
* ``--n-bad`` bad files spread over every kind of `tests/fixtures_data/messy.py` (empty,
  text with an image extension, HTML as .jpeg, PostScript as .png, truncated JPEG and PNG, PNG
  with a bad CRC, decompression-bomb headers above and below Pillow's limit, a .txt, PNG framing
  around data that is not zlib, broken and self-referencing symlinks).

Then the real command runs as a subprocess (default encoder, one thread unless ``--threads``),
with the feature cache and ``ICBPL_CACHE`` in the work folder, and the results are checked:

* every good file (distinct images, copies, symlinks) has exactly one row in assignments.csv
  with a cluster in 0..k-1, and the copies/symlinks are reported as duplicate groups;
* every bad file is listed with the expected reason in summary.json ``skipped``, except the kind
  the fast scan cannot see (intact PNG framing around garbage data): those are listed in
  ``degraded`` and clustered as grey placeholders (so they have rows too, and nothing else does);
* hidden entries are listed as "hidden" and the loops as "loop"; nothing else is skipped.

ACC/NMI/ARI are computed over the good files only (labels from the class sub-folders).

    .venv/bin/python benchmarks/bench_messy_folder.py
    .venv/bin/python benchmarks/bench_messy_folder.py --per-class 20 --n-bad 26 --no-write
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from _common import ROOT, SHARED_DATA, command_line, preamble, write_section
from icbpl.core.metrics import evaluate

sys.path.insert(0, str(ROOT / "tests"))  # the bad-file generators of the test fixtures
from fixtures_data.messy import BAD, BAD_LINKS, DECODE_FAILS, bad_files, encode

CIFAR = SHARED_DATA / "cifar10-jpg.tar.gz"


# ------------------------------------------------------------------------- odd but valid forms
def _exif_rotated(im: Image.Image) -> tuple[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: store it turned the other way
    return ".jpg", encode(im.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif)


def _sixteen_bit(im: Image.Image) -> tuple[str, bytes]:
    grey = np.asarray(im.convert("L"), dtype=np.uint16) * 257
    return ".png", encode(Image.fromarray(grey), "PNG")


def _rgba(im: Image.Image) -> tuple[str, bytes]:
    rgba = im.convert("RGBA")
    rgba.putalpha(255)
    return ".png", encode(rgba, "PNG")


ODD_FORMS: dict[str, Callable[[Image.Image, bytes], tuple[str, bytes]]] = {
    "EXIF-rotated JPEG": lambda im, raw: _exif_rotated(im),
    "grey PNG": lambda im, raw: (".png", encode(im.convert("L"), "PNG")),
    "RGBA PNG": lambda im, raw: _rgba(im),
    "grey+alpha PNG": lambda im, raw: (".png", encode(im.convert("LA"), "PNG")),
    "palette GIF": lambda im, raw: (".gif", encode(im.convert("P"), "GIF")),
    "16-bit grey PNG": lambda im, raw: _sixteen_bit(im),
    "CMYK JPEG": lambda im, raw: (".jpg", encode(im.convert("CMYK"), "JPEG", quality=90)),
    "CMYK TIFF": lambda im, raw: (".tif", encode(im.convert("CMYK"), "TIFF")),
    "WebP": lambda im, raw: (".webp", encode(im, "WEBP", lossless=True)),
    "BMP": lambda im, raw: (".bmp", encode(im, "BMP")),
    "progressive JPEG": lambda im, raw: (".jpg", encode(im, "JPEG", progressive=True)),
    "upper-case .JPEG": lambda im, raw: (".JPEG", raw),
    "trailing bytes": lambda im, raw: (".jpg", raw + b"SEFT-trailer" * 4),
    "PNG named .jpg": lambda im, raw: (".jpg", encode(im, "PNG")),
    "unicode + spaces name": lambda im, raw: (".jpg", raw),
}


def stream_cifar(per_class: int) -> list[tuple[str, str, bytes]]:
    """(class, file stem, JPEG bytes) of the first ``per_class`` train images of each class,
    read in archive order (the archive is gzip: no random access)."""
    counts: Counter[str] = Counter()
    out: list[tuple[str, str, bytes]] = []
    with tarfile.open(CIFAR, mode="r|gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != "train":
                continue
            cls = parts[1]
            if counts[cls] >= per_class:
                continue
            data = tar.extractfile(member)
            assert data is not None
            out.append((cls, Path(parts[2]).stem, data.read()))
            counts[cls] += 1
            if len(counts) == 10 and all(c >= per_class for c in counts.values()):
                break
    return out


@dataclass
class Expected:
    """What the entries of the built folder should become (relative posix paths)."""

    classes: list[str]
    good: dict[str, str] = field(default_factory=dict)  # -> class; clustered
    odd: Counter[str] = field(default_factory=Counter)  # odd form -> count
    duplicates: list[list[str]] = field(default_factory=list)  # [original, copy or symlink]
    n_copies: int = 0
    n_links: int = 0
    hidden: list[str] = field(default_factory=list)  # skipped as "hidden"
    loops: list[str] = field(default_factory=list)  # skipped as "loop"
    bad: dict[str, str] = field(default_factory=dict)  # -> kind (a name of messy.bad_files)


def build_folder(root: Path, args: argparse.Namespace) -> Expected:
    """Write the messy folder; return what each entry is expected to become."""
    images = stream_cifar(args.per_class)
    classes = sorted({c for c, _, _ in images})
    exp = Expected(classes=classes)
    good, odd = exp.good, exp.odd
    forms = list(ODD_FORMS)
    for j, (cls, stem, raw) in enumerate(images):
        (root / cls).mkdir(parents=True, exist_ok=True)
        rel, data = f"{cls}/{stem}.jpg", raw
        if j % args.odd_every == 0:
            form = forms[(j // args.odd_every) % len(forms)]
            with Image.open(io.BytesIO(raw)) as im:
                suffix, data = ODD_FORMS[form](im.convert("RGB"), raw)
            name = f"ünï cödé {stem} é" if form == "unicode + spaces name" else stem
            rel = f"{cls}/{name}{suffix}"
            odd[form] += 1
        (root / rel).write_bytes(data)
        good[rel] = cls
    originals = sorted(good)
    step = max(1, len(originals) // (args.n_copies + args.n_links))
    picks = originals[::step][: args.n_copies + args.n_links]
    for i, rel in enumerate(picks):
        cls, name = rel.split("/")
        if i < args.n_copies:
            copy = f"{cls}/copy of {name}"
            shutil.copyfile(root / rel, root / copy)
        else:
            copy = f"{cls}/link to {name}"
            os.symlink(name, root / copy)
        good[copy] = cls
        exp.duplicates.append(sorted([rel, copy]))
    exp.n_copies = min(args.n_copies, len(picks))
    exp.n_links = len(picks) - exp.n_copies

    for rel in originals[1::step][: args.n_hidden]:
        cls, name = rel.split("/")
        exp.hidden.append(f"{cls}/.{name}")
        shutil.copyfile(root / rel, root / exp.hidden[-1])
    (root / ".thumbnails").mkdir()
    for rel in originals[2::step][:5]:
        shutil.copyfile(root / rel, root / ".thumbnails" / rel.split("/")[1])
    exp.hidden.append(".thumbnails")
    os.symlink(root, root / "loop", target_is_directory=True)
    os.symlink("..", root / classes[0] / "up", target_is_directory=True)
    exp.loops = ["loop", f"{classes[0]}/up"]

    kinds = [*bad_files(), *BAD_LINKS]
    for i in range(args.n_bad):
        kind = kinds[i % len(kinds)]
        stem, suffix = os.path.splitext(kind)
        # files the scan accepts must sit in a class folder (or the folder loses its labels)
        folders = classes if kind in DECODE_FAILS else [*classes, ""]
        folder = folders[(i // len(kinds) + i) % len(folders)]
        rel = f"{folder}/{stem}_{i:03d}{suffix}".lstrip("/")
        if kind in BAD_LINKS:
            BAD_LINKS[kind](root / rel)
        else:
            (root / rel).write_bytes(bad_files(seed=100 + i)[kind])
        exp.bad[rel] = kind
    return exp


# --------------------------------------------------------------------------------- checks
def check(out: Path, exp: Expected) -> tuple[list[str], dict[str, Any]]:
    """Failures (empty when every expectation holds) and the measured facts."""
    good, bad, classes = exp.good, exp.bad, exp.classes
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    with (out / "assignments.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    k = summary["n_clusters"]
    failures: list[str] = []
    clustered = Counter(r["id"] for r in rows)
    twice = [i for i, c in clustered.items() if c > 1]
    if twice:
        failures.append(f"{len(twice)} ids have several rows, e.g. {twice[:3]}")
    bad_cluster = [r["id"] for r in rows if not 0 <= int(r["cluster"]) < k]
    if bad_cluster:
        failures.append(f"{len(bad_cluster)} rows without a cluster in 0..{k - 1}")
    missing = sorted(set(good) - set(clustered))
    if missing:
        failures.append(f"{len(missing)} good files not clustered, e.g. {missing[:5]}")

    skipped = {path: reason for path, reason in summary["skipped"]}
    degraded = {path: reason for path, reason in summary["degraded"]}
    listed_bad = 0
    for rel, kind in bad.items():
        if kind in DECODE_FAILS:
            ok = rel in degraded and rel in clustered
        else:
            ok = BAD[kind] in skipped.get(rel, "") and rel not in clustered
        listed_bad += ok
        if not ok:
            failures.append(f"bad file {rel} ({kind}) not listed as expected: {skipped.get(rel)}")
    expected_rows = set(good) | {r for r, kind in bad.items() if kind in DECODE_FAILS}
    extra = sorted(set(clustered) - expected_rows)
    if extra:
        failures.append(f"{len(extra)} unexpected rows, e.g. {extra[:5]}")
    for rel in exp.hidden:
        if "hidden" not in skipped.get(rel, ""):
            failures.append(f"hidden entry {rel} not listed as hidden: {skipped.get(rel)}")
    for rel in exp.loops:
        if "loop" not in skipped.get(rel, ""):
            failures.append(f"loop {rel} not listed as a loop: {skipped.get(rel)}")
    accounted = set(bad) | set(exp.hidden) | set(exp.loops)
    stray = sorted(set(skipped) - accounted)
    if stray:
        failures.append(f"{len(stray)} good entries skipped, e.g. {stray[:5]}")
    groups = {tuple(g) for g in summary["duplicate_groups"]}
    lost = [g for g in exp.duplicates if tuple(g) not in groups]
    if lost:
        failures.append(f"{len(lost)} duplicate pairs not reported, e.g. {lost[:3]}")

    good_rows = [r for r in rows if r["id"] in good]
    y_true = np.array([classes.index(good[r["id"]]) for r in good_rows])
    y_pred = np.array([int(r["cluster"]) for r in good_rows])
    facts = {
        "k": k,
        "n_rows": len(rows),
        "n_good_clustered": len(set(good) & set(clustered)),
        "n_bad_listed": listed_bad,
        "n_skipped": len(skipped),
        "n_degraded": len(degraded),
        "n_duplicate_groups": len(groups),
        "metrics_good": evaluate(y_true, y_pred),
        "metrics_summary": summary.get("metrics"),
        "timings": summary["timings"],
        "encoder": summary["encoder"],
        "cluster_sizes": summary["cluster_sizes"],
        "skip_reasons": Counter(reason.split(" (")[0].split(":")[0] for reason in skipped.values()),
    }
    return failures, facts


# ----------------------------------------------------------------------------------- main
def run_cli(folder: Path, out: Path, work: Path, args: argparse.Namespace) -> float:
    """Run ``icbpl cluster`` as a user would; return its wall time in seconds."""
    script = Path(sys.executable).with_name("icbpl")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "icbpl"]
    threads = str(args.threads)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "ICBPL_CACHE": str(work / "cache"),
    }
    argv = [*command, "cluster", str(folder), "--k", str(args.k), "--out", str(out)]
    argv += ["--cache-dir", str(work / "cache" / "features"), *args.cli_args]
    print("running:", " ".join(argv), flush=True)
    t0 = time.perf_counter()
    with (work / "cli.log").open("w", encoding="utf-8") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        tail = (work / "cli.log").read_text(encoding="utf-8")[-3000:]
        raise SystemExit(f"icbpl cluster failed with exit status {done.returncode}:\n{tail}")
    return seconds


def report(
    exp: Expected,
    facts: dict[str, Any],
    failures: list[str],
    seconds: float,
    build_seconds: float,
    args: argparse.Namespace,
) -> str:
    """The docs/BENCHMARKS.md section."""
    good, bad, odd = exp.good, exp.bad, exp.odd
    n_distinct = len(good) - exp.n_copies - exp.n_links
    enc = facts["encoder"]
    mg, ms = facts["metrics_good"], facts["metrics_summary"]
    kinds = Counter(bad.values())
    timings = facts["timings"]
    lines = [
        f"## A messy folder: {n_distinct:,} good images and {len(bad)} bad files (`icbpl cluster`)",
        "",
        preamble(command_line()).rstrip(),
        "",
        f"Folder (built in {build_seconds:.0f} s from the CIFAR-10 JPEG copy's train split, "
        f"first {args.per_class} images of each class in archive order, one sub-folder per "
        "class):",
        "",
        "| entries | count | expected |",
        "|---|---|---|",
        f"| distinct good images | {n_distinct:,} | one row each in assignments.csv |",
        f"| ... of which re-saved in an odd but valid form | {sum(odd.values()):,} "
        f"({len(odd)} forms, {min(odd.values())}-{max(odd.values())} each) | the same |",
        f"| exact byte copies / file symlinks of good images | {exp.n_copies} / "
        f"{exp.n_links} | a row each, and a duplicate group with the original |",
        f"| hidden files + 1 hidden folder (valid images) | {len(exp.hidden) - 1} + 1 "
        '| skipped by rule, listed as "hidden" |',
        '| folder symlinks looping back | 2 | skipped, listed as "loop" |',
        f"| bad files | {len(bad)} ({len(kinds)} kinds, {min(kinds.values())}-"
        f"{max(kinds.values())} each) | listed in summary.json `skipped` with the reason; "
        f"the {kinds[next(iter(DECODE_FAILS))]} PNGs with intact framing around garbage data "
        "in `degraded` (clustered as grey images) |",
        "",
        "Odd forms: " + ", ".join(f"{name} ({n})" for name, n in odd.items()) + ".",
        "Bad kinds: " + ", ".join(f"{kind} ({n})" for kind, n in sorted(kinds.items())) + ".",
        "",
        f"Command run: `icbpl cluster DIR --k {args.k} --out OUT --cache-dir TMP"
        + "".join(f" {a}" for a in args.cli_args)
        + f"` (encoder {enc['name']}, {enc['input_size']} px, "
        + ("ImageNet **supervised** weights" if enc["supervised"] else f"weights {enc['weights']}")
        + f"; OMP/MKL threads {args.threads}; feature cache and `ICBPL_CACHE` in a new temporary "
        "folder).",
        "",
        "| result | value |",
        "|---|---|",
        f"| finished | yes, exit status 0, wall time {seconds:.0f} s |",
        "| stages (s) | " + ", ".join(f"{n} {v:.0f}" for n, v in timings.items()) + " |",
        f"| good files clustered | {facts['n_good_clustered']:,} of {len(good):,} |",
        f"| bad files listed with the expected reason | {facts['n_bad_listed']} of {len(bad)} |",
        f"| rows in assignments.csv | {facts['n_rows']:,} (good files + degraded) |",
        f"| summary.json: skipped / degraded / duplicate groups | {facts['n_skipped']} / "
        f"{facts['n_degraded']} / {facts['n_duplicate_groups']} |",
        f"| checks | {'all passed' if not failures else f'{len(failures)} FAILED'} |",
        f"| ACC / NMI / ARI, good files (k = {facts['k']}) | {mg['acc']:.3f} / {mg['nmi']:.3f} / "
        f"{mg['ari']:.3f} |",
    ]
    if ms:
        lines.append(
            f"| ACC / NMI / ARI in summary.json (all rows) | {ms['acc']:.3f} / {ms['nmi']:.3f} / "
            f"{ms['ari']:.3f} |"
        )
    lines += [
        "",
        "Skip reasons: "
        + ", ".join(f"{r} ({n})" for r, n in sorted(facts["skip_reasons"].items()))
        + ".",
    ]
    if failures:
        lines += ["", "Failures:", *[f"- {f}" for f in failures]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-class", type=int, default=500, help="good images per class (10 classes)")
    p.add_argument("--odd-every", type=int, default=5, help="every n-th good image in an odd form")
    p.add_argument("--n-bad", type=int, default=100, help="bad files")
    p.add_argument("--n-copies", type=int, default=40, help="exact byte copies of good images")
    p.add_argument("--n-links", type=int, default=10, help="file symlinks to good images")
    p.add_argument("--n-hidden", type=int, default=10, help="hidden copies of good images")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="OMP/MKL/torch threads of the run")
    p.add_argument("--workdir", type=Path, help="build and run here (kept); default: a temp dir")
    p.add_argument("--no-write", action="store_true", help="do not write docs/BENCHMARKS.md")
    p.add_argument("cli_args", nargs="*", help="extra options for `icbpl cluster` (after --)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not CIFAR.is_file():
        raise SystemExit(f"{CIFAR} not found; see ../shared/data/README.md")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="icbpl-messy-"))
    work.mkdir(parents=True, exist_ok=True)
    folder, out = work / "photos", work / "results"
    if folder.exists():
        raise SystemExit(f"{folder} exists; pass an empty or new --workdir")
    try:
        t0 = time.perf_counter()
        expected = build_folder(folder, args)
        build_seconds = time.perf_counter() - t0
        print(f"built {folder} in {build_seconds:.0f} s", flush=True)
        seconds = run_cli(folder, out, work, args)
        failures, facts = check(out, expected)
        body = report(expected, facts, failures, seconds, build_seconds, args)
        print(body)
        if not args.no_write:
            print(f"wrote {write_section('messy-folder', body)}")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

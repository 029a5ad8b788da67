"""Make docs/img/report.png: the report of a small real run, as headless chromium draws it.

300 of scikit-learn's bundled 8x8 digits (30 per digit, 64x64 PNGs in one sub-folder per
digit) are clustered by ``icbpl cluster --k auto --report`` with the default encoder; chromium
(``$ICBPL_CHROMIUM`` or ``chromium``) screenshots the page's top, which is shrunk to a small
palette PNG. Run from the repository root (a few minutes on 2 CPU cores)::

    .venv/bin/python scripts/report_screenshot.py [--out docs/img/report.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

WIDTH, HEIGHT = 1280, 2400


def _digits_folder(root: Path, per_digit: int = 30) -> Path:
    digits = load_digits()
    folder = root / "digits"
    for d in range(10):
        (folder / f"digit{d}").mkdir(parents=True)
        for i, pixels in enumerate(digits.images[digits.target == d][:per_digit]):
            image = Image.fromarray((255 - pixels * 16).clip(0, 255).astype(np.uint8))
            image.resize((64, 64)).save(folder / f"digit{d}" / f"{i}.png")
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/img/report.png"))
    p.add_argument("--width", type=int, default=900, help="width of the PNG written")
    args = p.parse_args()
    chromium = shutil.which(os.environ.get("ICBPL_CHROMIUM") or "chromium")
    if chromium is None:
        sys.exit("chromium not found (scripts/install_browser.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="icbpl-shot-") as tmp:
        root = Path(tmp)
        folder = _digits_folder(root)
        run = root / "results"
        cmd = [sys.executable, "-m", "icbpl", "cluster", str(folder), "--k", "auto"]
        cmd += ["--k-range", "5..15", "--out", str(run), "--report", "--threads", "1"]
        cmd += ["--cache-dir", str(root / "cache")]
        subprocess.run(cmd, check=True)
        shot = root / "shot.png"
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={root / 'profile'}",
                f"--screenshot={shot}",
                f"--window-size={WIDTH},{HEIGHT}",
                (run / "report.html").as_uri(),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "HOME": tmp},
        )
        with Image.open(shot) as im:
            small = im.convert("RGB").resize(
                (args.width, round(HEIGHT * args.width / WIDTH)), Image.Resampling.LANCZOS
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    small.quantize(colors=128).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()

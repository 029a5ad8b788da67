"""Record, on the CPU with fixed seeds, the assignments a change must not alter, and compare two
records (issue 16: a reorganisation that computes the same).

    python benchmarks/same_assignments.py record before.json   # on the old code
    python benchmarks/same_assignments.py record after.json    # on the new code
    python benchmarks/same_assignments.py compare before.json after.json

Recorded: ``ICBPL(n_clusters=10, random_state=0, epochs=3).fit`` on the 8x8 digits with two
affine views (the default start and ``init="random"``), and ``icbpl cluster`` on a tiny
generated folder (3 colours x 8 images, the random tiny CIFAR ResNet, 3 epochs; default start
and ``--init random``): labels, latent sums, assignments.csv and the per-epoch history.

``compare`` leaves out what issue 16 removed from the outputs on purpose (`RETIRED_KEYS`,
`RETIRED_LOSSES` at 0), so a record made before a removal compares with one made after it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: summary.json keys that issue 16 removed (the options they described are gone).
RETIRED_KEYS = {"self_label"}
#: per-epoch losses that issue 16 removed; left out of a history where they were 0 (unused).
RETIRED_LOSSES = {"assignment"}

COLOURS = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


def _digits() -> dict[str, Any]:
    from icbpl import ICBPL
    from icbpl.data.digits import digits_views, load_digits_data

    images, _ = load_digits_data()
    x = images.reshape(len(images), -1)
    views = digits_views(images, 2, seed=0).reshape(2, len(images), -1)
    out: dict[str, Any] = {}
    for name, kw in (("default", {}), ("random", {"init": "random"})):
        model = ICBPL(n_clusters=10, random_state=0, epochs=3, **kw).fit(x, views=views)
        out[f"digits_{name}"] = model.labels_.tolist()
        out[f"digits_{name}_latent_sum"] = float(np.abs(model.transform(x)).sum())
    return out


def _cluster(work: Path) -> dict[str, Any]:
    from PIL import Image

    from icbpl.cli import main

    root = work / "img"
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(8):
            noise = rng.normal(0, 20.0, (32, 32, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    out: dict[str, Any] = {}
    for extra in ([], ["--init", "random"]):
        tag = "cli" + "".join(extra)
        target = work / tag
        argv = ["cluster", str(root), "--k", "3", "--out", str(target)]
        argv += ["--cache-dir", str(work / "cache"), "--threads", "1", "--quiet"]
        argv += ["--encoder", "resnet_cifar_tiny", "--weights", "random", "--epochs", "3", *extra]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if main(argv) != 0:
                raise SystemExit(f"icbpl {' '.join(argv)} failed")
        text = (target / "assignments.csv").read_text()
        out[tag] = text.replace(str(work), "<tmp>")
        summary = json.loads((target / "summary.json").read_text())
        out[f"{tag}_summary_keys"] = sorted(summary)
        out[f"{tag}_history"] = [
            {k: v for k, v in h.items() if k != "seconds"} for h in summary["history"]
        ]
    return out


def _without_retired(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without the `RETIRED_KEYS` in its lists of summary keys and without the
    `RETIRED_LOSSES` that were 0 in its histories (a non-zero one still differs)."""
    out = dict(record)
    for k, v in record.items():
        if k.endswith("_summary_keys"):
            out[k] = [key for key in v if key not in RETIRED_KEYS]
        elif k.endswith("_history"):
            out[k] = [
                {
                    **h,
                    "losses": {
                        n: x for n, x in h["losses"].items() if n not in RETIRED_LOSSES or x != 0
                    },
                }
                for h in v
            ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("record").add_argument("out", type=Path)
    compare = sub.add_parser("compare")
    compare.add_argument("a", type=Path)
    compare.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        import torch

        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as tmp:
            record = {**_digits(), **_cluster(Path(tmp))}
        args.out.write_text(json.dumps(record, indent=1))
        print(f"wrote {args.out} ({len(record)} entries)")
        return 0
    a, b = (_without_retired(json.loads(p.read_text())) for p in (args.a, args.b))
    tmp = re.compile(r"/tmp/tmp\w+/|<tmp>/")
    differ = [k for k in a if tmp.sub("", json.dumps(a[k])) != tmp.sub("", json.dumps(b.get(k)))]
    print("identical" if not differ else f"differ: {differ}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

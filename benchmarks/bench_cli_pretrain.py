"""The paper's full method from the command line on MNIST and Fashion-MNIST (CPU, small encoder).

    .venv/bin/python benchmarks/bench_cli_pretrain.py --write-docs
    .venv/bin/python benchmarks/bench_cli_pretrain.py --datasets mnist --n 2000 --bt-minutes 2

For each dataset the first ``--n`` training images of ``../shared/data`` are written as a folder
of PNG files (one sub-folder per class, so the results carry ACC/NMI/ARI; labels are used for
evaluation only), and the commands a user would type run one after the other:

1. ``icbpl pretrain FOLDER --out ENC --encoder resnet_cifar_tiny --weights random`` (Barlow Twins
   from scratch, the CLI's augmentations),
2. ``icbpl cluster FOLDER --k 10 --weights ENC --finetune last2`` (the end-to-end path),
3. ``icbpl cluster FOLDER --k 10 --weights ENC`` (the frozen default, for reference),

against k-means (scikit-learn, 10 restarts, L2-normalised features) on the features of the
pre-trained encoder ENC, the same encoder both ICBPL runs start from. Each command's CPU
seconds (user + system of the child process) are recorded; torch runs one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout first

from _common import ROOT, SHARED_DATA, command_line, preamble, write_section

NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def _write_folder(dataset: str, n: int, folder: Path) -> None:
    from PIL import Image

    from icbpl.data import load_dataset

    done = folder.with_name(folder.name + ".done")  # beside the folder, not an input file
    if done.is_file():
        return
    source = load_dataset(dataset, split="train", root=str(SHARED_DATA))
    labels = np.asarray(source.labels)
    for i in range(n):
        d = folder / f"{int(labels[i])}"
        d.mkdir(parents=True, exist_ok=True)
        img = source.load(i).permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(img)).save(d / f"{i:05d}.png")
    done.write_text("ok\n")


def _run(args: list[str]) -> dict[str, float]:
    """Run ``icbpl ARGS`` (this checkout's source, one thread); wall and CPU seconds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "icbpl", *args, "--threads", "1", "-q"]
    print("$ icbpl " + " ".join(args), flush=True)
    subprocess.run(cmd, env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": cpu}


def _kmeans(folder: Path, enc: Path, seed: int) -> dict[str, float]:
    """k-means on the features of the encoder in ``enc`` (eval mode)."""
    import torch
    from sklearn.cluster import KMeans

    from icbpl.core.metrics import evaluate
    from icbpl.data import ImageFolder
    from icbpl.deep.pretrain import images_as_tensor, read_encoder_folder
    from icbpl.encoders import create_encoder

    torch.set_num_threads(1)
    saved = read_encoder_folder(enc)
    encoder = create_encoder(saved.encoder, weights=str(saved.weights), **saved.options).eval()
    source = ImageFolder(folder)
    images = images_as_tensor(source, encoder.config.input_size)
    with torch.no_grad():
        feats = torch.cat(
            [encoder.encode(images[s : s + 512].float() / 255) for s in range(0, len(images), 512)]
        ).numpy()
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    labels = KMeans(10, n_init=10, random_state=seed).fit_predict(feats)
    return evaluate(np.asarray(source.labels), labels)


def bench(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    work = args.work / dataset
    folder, enc = work / "images", work / "encoder"
    _write_folder(dataset, args.n, folder)
    out: dict[str, Any] = {"dataset": dataset, "n": args.n}
    pre = ["pretrain", str(folder), "--out", str(enc), "--encoder", args.encoder]
    pre += [
        "--weights",
        "random",
        "--epochs",
        str(args.bt_epochs),
        "--minutes",
        str(args.bt_minutes),
    ]
    pre += ["--projector", "512,512,512", "--device", "cpu", "--seed", str(args.seed)]
    resume = ["--resume"] if (enc / "checkpoint").is_dir() else []
    out["pretrain"] = _run(pre + resume)
    meta = json.loads((enc / "encoder.json").read_text())
    out["pretrain"]["epochs"] = len(meta["history"])
    out["pretrain"]["loss"] = [meta["history"][0]["loss"], meta["history"][-1]["loss"]]
    out["kmeans"] = _kmeans(folder, enc, args.seed)
    for name, extra in (
        ("last2", ["--finetune", "last2", "--epochs", str(args.ft_epochs)]),
        ("frozen", []),
    ):
        res = work / f"cluster-{name}"
        cmd = ["cluster", str(folder), "--k", "10", "--weights", str(enc), "--out", str(res)]
        out[name] = _run([*cmd, "--no-cache", "--device", "cpu", "--seed", str(args.seed), *extra])
        summary = json.loads((res / "summary.json").read_text())
        out[name].update(summary["metrics"], epochs=summary["icbpl"]["epochs"])
    return out


def _section(results: list[dict[str, Any]], args: argparse.Namespace, load: str) -> str:
    lines = [
        "## The full method from the command line: icbpl pretrain + cluster --finetune (CPU)",
        "",
        preamble(command_line()),
        f"- load before the run: {load}; every command with `--threads 1` (torch), CPU seconds "
        "are user + system of the command",
        f"- data: the first {args.n} training images of each set (../shared/data) as a folder of "
        "PNG files; labels for evaluation only",
        f"- encoder: `{args.encoder}` from scratch (`--weights random`), Barlow Twins for at most "
        f"{args.bt_epochs} epochs or {args.bt_minutes} minutes (batch 256, projector 512-512-512, "
        f"LARS); `--finetune last2` for {args.ft_epochs} epochs (batch 100, 1 view, 4 "
        "neighbours); the frozen default for its automatic epochs",
        "",
        "| dataset | method | ACC | NMI | ARI | epochs | CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        name = NAMES[r["dataset"]]
        p = r["pretrain"]
        lines.append(
            f"| {name} | Barlow Twins pre-training (loss {p['loss'][0]:.0f} -> {p['loss'][1]:.0f}) "
            f"| - | - | - | {p['epochs']} | {p['cpu_s']:.0f} |"
        )
        km = r["kmeans"]
        lines.append(
            f"| {name} | k-means on the pre-trained features | {km['acc']:.3f} | {km['nmi']:.3f} "
            f"| {km['ari']:.3f} | - | - |"
        )
        for key, label in (("last2", "ICBPL `--finetune last2`"), ("frozen", "ICBPL frozen")):
            m = r[key]
            lines.append(
                f"| {name} | {label} | {m['acc']:.3f} | {m['nmi']:.3f} | {m['ari']:.3f} "
                f"| {m['epochs']} | {m['cpu_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"], choices=NAMES)
    p.add_argument("--n", type=int, default=4000, help="training images per dataset")
    p.add_argument("--encoder", default="resnet_cifar_tiny")
    p.add_argument("--bt-epochs", type=int, default=60)
    p.add_argument("--bt-minutes", type=float, default=4.0)
    p.add_argument("--ft-epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("/tmp/icbpl-bench-cli"), help="scratch folder")
    p.add_argument("--write-docs", action="store_true", help="write the docs/BENCHMARKS.md section")
    args = p.parse_args(argv)
    load = f"{os.getloadavg()[0]:.2f} (1-minute average; 2 cores shared with other jobs)"
    results = [bench(d, args) for d in args.datasets]
    text = _section(results, args, load)
    print(text)
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    if args.write_docs:
        write_section("cli-pretrain-finetune", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A practitioner's first hour (issue 20): choosing k, confidence and novelty on real photos.

Features: efficientnet_lite0 with its default ImageNet-SUPERVISED weights (160 px), extracted
once and cached outside the repository (``--cache``, default /tmp/icbpl-practitioner). Folders
drawn with fixed seeds from ../shared/data: Tiny-ImageNet-200 val (50 images per class) with
5, 10, 20 and 50 classes (nested, the first classes of a seed-0 permutation of the 200), and
CIFAR-10 test (300 images per class drawn with seed 0) with all 10 classes and 5 drawn with
seed 1. Labels are used only to score.

1. choose_k (k = 2..80, defaults otherwise) on each folder: true vs chosen k.
2. Confidence: ICBPL (k = 20) on 35 of the 50 images of each of the 20-class folder's classes;
   AUROC of each score for correct vs wrong assignments (correct: the image's class is the one
   Hungarian-matched to its cluster): the latent score of assignments.csv against
   `icbpl.core.novelty.confidence`.
3. Novelty: the held-in 15 images per class of those 20 classes against 20 classes never seen
   (classes 50-69 of the permutation, 1,000 images): AUROC of `icbpl.core.novelty.similarity` and
   the share of each below the threshold calibrated on the training images (5% quantile).
4. The report's per-cluster confidence and flags (`icbpl.report._quality`, 10 neighbours as in
   the report) on ICBPL runs (30 epochs, seed 0) at the true k and at too few / too many
   clusters: the accuracy of images above and below the confident margin; "possibly mixed"
   against clusters whose majority class holds under 60% of them; "possibly split" against
   pairs of clusters whose class compositions overlap by 25% or more (the sum over classes of
   the smaller of the two clusters' shares). Section ``practitioner-flags``.

    nice -n 10 .venv/bin/python benchmarks/bench_practitioner.py [--part flags]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _common import SHARED_DATA, command_line, preamble, write_section
from icbpl.model.choose_k import choose_k

K_MAX = 80
#: (folder, k) of the flag runs: the true k, and too few / too many clusters.
FLAG_RUNS = (
    ("Tiny-ImageNet 10 classes", 7),
    ("Tiny-ImageNet 20 classes", 14),
    ("Tiny-ImageNet 20 classes", 20),
    ("Tiny-ImageNet 20 classes", 28),
    ("Tiny-ImageNet 50 classes", 50),
    ("CIFAR-10 10 classes", 10),
    ("CIFAR-10 10 classes", 15),
)
#: What counts as truly mixed (majority share below) and truly split (composition overlap).
PURITY_MIXED = 0.6
OVERLAP_SPLIT = 0.25


def features(cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Features (N, D) and labels of the Tiny-ImageNet classes used and the CIFAR-10 draw."""
    from icbpl.data import ArraySource, load_dataset
    from icbpl.encoders import create_encoder
    from icbpl.features import extract_features

    enc = create_encoder("efficientnet_lite0")
    out = {}
    tin = load_dataset("tiny-imagenet", "val", root=SHARED_DATA)
    y = np.asarray(tin.labels)
    order = np.random.default_rng(0).permutation(200)[:80]
    idx = np.flatnonzero(np.isin(y, order))
    # relabel by position in the permutation: folders are the first n classes
    rank = {int(c): i for i, c in enumerate(order)}
    sub = ArraySource(np.ascontiguousarray(tin.as_array()[idx]), y[idx])
    fs = extract_features(enc, sub, cache_dir=cache, progress=True, batch_size=64)
    out["tin"] = (np.array(fs.features, np.float32), np.array([rank[int(c)] for c in y[idx]]))
    cif = load_dataset("cifar10", "test", root=SHARED_DATA)
    cy = np.asarray(cif.labels)
    rng = np.random.default_rng(0)
    ci = np.sort(
        np.concatenate([rng.choice(np.flatnonzero(cy == c), 300, replace=False) for c in range(10)])
    )
    sub = ArraySource(np.ascontiguousarray(cif.as_array()[ci]), cy[ci])
    fs = extract_features(enc, sub, cache_dir=cache, progress=True, batch_size=64)
    out["cifar"] = (np.array(fs.features, np.float32), cy[ci])
    return out


def folders(feats: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, ...]]:
    tx, ty = feats["tin"]
    cx, cy = feats["cifar"]
    out = {f"Tiny-ImageNet {k} classes": (tx[ty < k], ty[ty < k]) for k in (5, 10, 20, 50)}
    five = np.random.default_rng(1).permutation(10)[:5]
    out["CIFAR-10 5 classes"] = (cx[np.isin(cy, five)], cy[np.isin(cy, five)])
    out["CIFAR-10 10 classes"] = (cx, cy)
    return out


def bench_choose_k(feats: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[list[str], int]:
    rows, hits = [], 0
    for name, (x, y) in folders(feats).items():
        true_k = len(np.unique(y))
        t0 = time.process_time()
        r = choose_k(x, range(2, K_MAX + 1))
        cpu = time.process_time() - t0
        ok = abs(r.best_k - true_k) <= 0.2 * true_k
        hits += ok
        rows.append(
            f"| {name} | {len(x):,} | {true_k} | {r.best_k} | {'yes' if ok else 'no'} | "
            f"{r.details['message']} | {cpu:.0f} |"
        )
        print(rows[-1], flush=True)
    return rows, hits


def bench_scores(feats: dict[str, tuple[np.ndarray, np.ndarray]], epochs: int) -> dict[str, float]:
    from icbpl import ICBPL
    from icbpl.core.metrics import match_clusters
    from icbpl.core.novelty import calibrate, confidence, feature_centroids, similarity

    tx, ty = feats["tin"]
    pos = np.zeros(len(ty), dtype=np.int64)
    for c in np.unique(ty):
        pos[ty == c] = np.arange(int((ty == c).sum()))
    seen = ty < 20
    train, held_in, unseen = seen & (pos < 35), seen & (pos >= 35), (ty >= 50) & (ty < 70)
    model = ICBPL(n_clusters=20, epochs=epochs, random_state=0).fit(tx[train])
    clusters = np.asarray(model.labels_, dtype=np.int64)
    latent = model.transform(tx[train])
    old = (latent @ model.centroids_.T)[np.arange(len(clusters)), clusters]
    mapping = match_clusters(ty[train], clusters)
    matched = np.array([mapping.get(int(c), -1) for c in clusters])
    correct = matched == ty[train]
    cents = feature_centroids(tx[train], clusters, 20)
    new = confidence(tx[train], clusters, cents)
    threshold = calibrate(similarity(tx[train], cents))
    s_in, s_out = similarity(tx[held_in], cents), similarity(tx[unseen], cents)
    nov = roc_auc_score(np.r_[np.ones(len(s_in)), np.zeros(len(s_out))], np.r_[s_in, s_out])
    return {
        "acc": float(correct.mean()),
        "auroc_old": float(roc_auc_score(correct, old)),
        "auroc_new": float(roc_auc_score(correct, new)),
        "novelty_auroc": float(nov),
        "threshold": threshold,
        "unseen_refused": float((s_out < threshold).mean()),
        "held_in_refused": float((s_in < threshold).mean()),
        "n_train": int(train.sum()),
        "n_held_in": int(held_in.sum()),
        "n_unseen": int(unseen.sum()),
    }


def _truth(y: np.ndarray, clusters: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster majority share (NaN when empty) and the (k, k) composition overlaps."""
    counts = np.zeros((k, int(y.max()) + 1))
    np.add.at(counts, (clusters, y), 1)
    sizes = counts.sum(axis=1, keepdims=True)
    comp = counts / np.maximum(sizes, 1)
    purity = np.where(sizes[:, 0] > 0, comp.max(axis=1), np.nan)
    overlap = np.minimum(comp[:, None, :], comp[None, :, :]).sum(axis=2)
    return purity, overlap


def _rate(hit: int, of: int) -> str:
    return f"{hit}/{of}" + (f" ({100 * hit / of:.0f}%)" if of else "")


def bench_flags(feats: dict[str, tuple[np.ndarray, np.ndarray]], epochs: int) -> list[str]:
    """One row per run; then the pooled precision/recall of the two flags."""
    from scipy.stats import spearmanr

    from icbpl import ICBPL
    from icbpl.core.metrics import match_clusters
    from icbpl.core.neighbours import mine_neighbours
    from icbpl.report._quality import (
        CONFIDENT_MARGIN,
        MIXED_AGREEMENT,
        N_NEIGHBOURS,
        SPLIT_SHARE,
        assess,
        link_counts,
        pair_link_share,
    )

    data = folders(feats)
    rows = []
    pool: dict[str, list[np.ndarray]] = {"mt": [], "ms": [], "st": [], "ss": []}
    for name, k in FLAG_RUNS:
        x, y = data[name]
        cl = np.asarray(ICBPL(n_clusters=k, epochs=epochs, random_state=0).fit(x).labels_)
        nb = mine_neighbours(x, N_NEIGHBOURS)
        q = assess(x, cl, k, neighbours=nb)
        mapping = match_clusters(y, cl)
        correct = np.array([mapping.get(int(c), -1) for c in cl]) == y
        hi = q.margin >= CONFIDENT_MARGIN
        purity, overlap = _truth(y, cl, k)
        ok = ~np.isnan(purity)
        mixed_true = purity[ok] < PURITY_MIXED
        mixed_flag = q.agreement[ok] < MIXED_AGREEMENT
        iu = np.triu_indices(k, 1)
        split_true = overlap[iu] >= OVERLAP_SPLIT
        share = pair_link_share(link_counts(nb, cl, k))[iu]
        split_flag = share >= SPLIT_SHARE
        pool["mt"].append(mixed_true)
        pool["ms"].append(q.agreement[ok])
        pool["st"].append(split_true)
        pool["ss"].append(share)
        rho = spearmanr(q.confident[ok], purity[ok]).statistic
        rows.append(
            f"| {name} | {len(x):,} | {k} | {correct.mean():.3f} | {100 * hi.mean():.0f}% | "
            f"{correct[hi].mean():.2f} / {correct[~hi].mean():.2f} | {rho:.2f} | "
            f"{_rate(int((mixed_flag & mixed_true).sum()), int(mixed_flag.sum()))} | "
            f"{int(mixed_true.sum())} of {int(ok.sum())} | "
            f"{_rate(int((split_flag & split_true).sum()), int(split_flag.sum()))} | "
            f"{int(split_true.sum())} of {len(split_true)} |"
        )
        print(rows[-1], flush=True)
    mt, ms, st, ss = (np.concatenate(pool[key]) for key in ("mt", "ms", "st", "ss"))
    mf, sf = ms < MIXED_AGREEMENT, ss >= SPLIT_SHARE
    pooled = {
        "mixed_auroc": float(roc_auc_score(mt, -ms)),
        "mixed_precision": _rate(int((mf & mt).sum()), int(mf.sum())),
        "mixed_recall": _rate(int((mf & mt).sum()), int(mt.sum())),
        "mixed_base": f"{100 * mt.mean():.0f}%",
        "split_auroc": float(roc_auc_score(st, ss)),
        "split_precision": _rate(int((sf & st).sum()), int(sf.sum())),
        "split_recall": _rate(int((sf & st).sum()), int(st.sum())),
        "split_base": f"{100 * st.mean():.1f}%",
    }
    print(pooled)
    return _flags_body(rows, pooled, epochs)


def _flags_body(rows: list[str], p: dict[str, object], epochs: int) -> list[str]:
    from icbpl.report._quality import CONFIDENT_MARGIN, MIXED_AGREEMENT, SPLIT_SHARE

    return [
        "### The report's confidence and flags (issue 20)",
        "",
        preamble(command_line()),
        f"ICBPL runs ({epochs} epochs, seed 0) on the folders above, at the true k and at too "
        f"few / too many clusters; 10 neighbours by the encoder features, as the report uses. "
        f"*Confident*: margin (`icbpl.core.novelty.confidence`) >= {CONFIDENT_MARGIN}; the ACC "
        "columns give the share of correct assignments (Hungarian matching) among the images "
        f"above / below it. *Truly mixed*: majority class under {100 * PURITY_MIXED:.0f}% of "
        f"the cluster; *truly split*: two clusters whose class compositions overlap by "
        f"{100 * OVERLAP_SPLIT:.0f}% or more. Flags: mixed = agreement < "
        f"{100 * MIXED_AGREEMENT:.0f}%, split = link share >= {100 * SPLIT_SHARE:.0f}%. "
        "The thresholds were chosen by looking at these same runs, so the precision below is "
        "not a held-out estimate.",
        "",
        "| folder | images | k | ACC | confident | ACC confident / not | Spearman(confident, "
        "purity) | mixed flags right | truly mixed | split flags right | truly split pairs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Pooled over the runs: **possibly mixed** flags are right for {p['mixed_precision']} "
        f"of the flagged clusters (base rate {p['mixed_base']}), catching "
        f"{p['mixed_recall']} of the truly mixed ones; agreement ranks truly mixed clusters "
        f"with AUROC {p['mixed_auroc']:.2f}. **Possibly split** flags are right for "
        f"{p['split_precision']} of the flagged pairs (base rate {p['split_base']}), catching "
        f"{p['split_recall']}; the link share ranks truly split pairs with AUROC "
        f"{p['split_auroc']:.2f}.",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, default=Path("/tmp/icbpl-practitioner"))
    p.add_argument("--epochs", type=int, default=30, help="ICBPL epochs of the confidence fit")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    p.add_argument(
        "--part", choices=("all", "flags"), default="all", help="flags: only the report's flags"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    feats = features(args.cache)
    flags = "\n".join(bench_flags(feats, args.epochs))
    print(flags)
    if not args.no_write:
        print(f"wrote {write_section('practitioner-flags', flags)}")
    if args.part == "flags":
        return
    rows, hits = bench_choose_k(feats)
    s = bench_scores(feats, args.epochs)
    print(s)
    body = "\n".join(
        [
            "## A practitioner's first hour: choosing k, confidence, novelty (issue 20)",
            "",
            preamble(command_line()),
            "Features: efficientnet_lite0, default ImageNet-SUPERVISED weights, 160 px, cached "
            "once. Folders drawn with fixed seeds (see the script's docstring). Seconds are the "
            "process's CPU seconds (one torch / BLAS thread).",
            "",
            f"### choose_k, k = 2..{K_MAX}: within +-20% of the true k on {hits} of {len(rows)}",
            "",
            "| folder | images | true k | chosen k | within +-20% | message | CPU s |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"### Confidence (Tiny-ImageNet, 20 classes, {s['n_train']} images, ICBPL k = 20, "
            f"{args.epochs} epochs, ACC {s['acc']:.3f})",
            "",
            "AUROC of the score for correct vs wrong assignments: latent cosine to the assigned "
            f"PEDCC centroid (the old `score`) **{s['auroc_old']:.3f}**; feature-space margin "
            f"(`icbpl.core.novelty.confidence`) **{s['auroc_new']:.3f}**.",
            "",
            "### Novelty (held-out classes)",
            "",
            f"{s['n_held_in']} unseen images of the 20 trained classes vs {s['n_unseen']} images "
            "of 20 classes never trained on: AUROC of `icbpl.core.novelty.similarity` "
            f"**{s['novelty_auroc']:.3f}**. Threshold (5% quantile of the training images' "
            f"similarity) {s['threshold']:.3f}: it marks {100 * s['unseen_refused']:.1f}% of "
            f"the never-seen classes and {100 * s['held_in_refused']:.1f}% of the held-in "
            "images unassigned.",
        ]
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('practitioner', body)}")


if __name__ == "__main__":
    main()

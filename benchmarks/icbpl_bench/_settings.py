"""What each benchmark runs: datasets, seeds, epochs and peer options, for full and quick mode.

Settings are data (frozen dataclasses), so a table can print exactly what produced it and a test
can run an experiment on tiny settings. :data:`FULL` is budgeted to finish
``benchmarks/bench.py all`` in about three hours on a 2-core CPU with one torch thread from an
empty feature cache (measured costs in docs/bench/README.md); :data:`QUICK` in under ten minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FULL", "QUICK", "BenchSettings", "EncoderSpec", "Plan"]


@dataclass(frozen=True)
class Plan:
    """One dataset with the ICBPL keyword arguments (and peer options) used on it.

    Attributes:
        dataset: a name of the bench dataset registry (`icbpl_bench._data`).
        icbpl: keyword arguments of `icbpl.ICBPL` besides ``n_clusters`` and ``random_state``.
        peers: peer name -> options of `icbpl.peers.fit_peer` (only for tables with peers).
        ours: ICBPL keyword arguments that replace ``icbpl`` for table11's "ICBPL + ours" row
            (a separate fit; an ``n_heads`` entry replaces the settings' ``n_heads``); ``None``:
            that row is the best head of the paper row's fit.
    """

    dataset: str
    icbpl: Mapping[str, Any] = field(default_factory=dict)
    peers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    ours: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EncoderSpec:
    """One row of the encoder table.

    Attributes:
        label: row label.
        name: `icbpl.encoders` registry name.
        weights: ``None`` (the encoder's packaged weights), ``"random"``, or ``"barlow-twins"``
            (pre-trained here with `icbpl.deep.pretrain.pretrain_barlow_twins` on the table's
            images).
        training: how the weights were trained, as the table states it.
    """

    label: str
    name: str
    weights: str | None
    training: str


@dataclass(frozen=True)
class BenchSettings:
    """Everything the experiments of one mode run (see the module docstring)."""

    mode: str
    table11: tuple[Plan, ...]
    table11_seeds: tuple[int, ...]
    n_heads: int
    ablation: Plan
    ablation_seeds: tuple[int, ...]
    neighbour_ks: tuple[int, ...]
    loss_subsets: tuple[tuple[str, tuple[float, float, float, float]], ...]
    refresh: Plan
    refresh_every: tuple[int, ...]
    encoder_images: str
    encoders: tuple[EncoderSpec, ...]
    encoder_icbpl: Mapping[str, Any]
    barlow_twins: Mapping[str, Any]
    plots: Plan
    tsne_points: int
    n_mined: int = 20

    @property
    def quick(self) -> bool:
        """True for the quick mode."""
        return self.mode == "quick"


#: The paper's loss weights (MMD, augmentation, kNN, min-distance), section 4.2.
PAPER_WEIGHTS = (8.0, 2.0, 2.0, 1.0)

LOSS_SUBSETS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("MMD only", (8.0, 0.0, 0.0, 0.0)),
    ("MMD + augmentation", (8.0, 2.0, 0.0, 0.0)),
    ("MMD + kNN", (8.0, 0.0, 2.0, 0.0)),
    ("MMD + augmentation + kNN", (8.0, 2.0, 2.0, 0.0)),
    ("MMD + min-distance", (8.0, 0.0, 0.0, 1.0)),
    ("all four (paper)", PAPER_WEIGHTS),
)

_LITE = (
    EncoderSpec("efficientnet_lite0", "efficientnet_lite0", None, "ImageNet **supervised**"),
    EncoderSpec("efficientnet_lite1", "efficientnet_lite1", None, "ImageNet **supervised**"),
    EncoderSpec("efficientnet_lite2", "efficientnet_lite2", None, "ImageNet **supervised**"),
    EncoderSpec(
        "No Model (efficientnet_lite0, random init)",
        "efficientnet_lite0",
        "random",
        "random (torch seed 0), untrained",
    ),
    EncoderSpec(
        "Barlow Twins (resnet_cifar_tiny, ours)",
        "resnet_cifar_tiny",
        "barlow-twins",
        "self-supervised here, on the table's images",
    ),
)


def _peers(
    *, kmeans_init: int, scan: int, self_label: int, temi: int, temi_heads: int, turtle: int
) -> dict[str, dict[str, Any]]:
    return {
        "kmeans": {"n_init": kmeans_init},
        "scan": {"epochs": scan, "self_label_epochs": self_label},
        "temi": {"epochs": temi, "n_heads": temi_heads},
        "turtle": {"iterations": turtle},
    }


_FULL_PEERS = _peers(kmeans_init=3, scan=6, self_label=3, temi=3, temi_heads=2, turtle=150)
#: TURTLE's step costs grow with k: 1.6 s per iteration for k=200 on 10,000 x 1280 features
_TINY_PEERS = {**_FULL_PEERS, "turtle": {"iterations": 50}}
#: digits are small enough for the peers' defaults (TEMI with 4 heads instead of 16)
_DIGITS_PEERS = _peers(kmeans_init=10, scan=50, self_label=50, temi=30, temi_heads=4, turtle=1000)
_QUICK_PEERS = _peers(kmeans_init=3, scan=10, self_label=5, temi=6, temi_heads=2, turtle=200)

FULL = BenchSettings(
    mode="full",
    table11=(
        Plan(
            "cifar10",
            {"epochs": 6, "batch_size": 256},
            # SCAN with its own defaults, since "ours" starts from SCAN's default clustering step
            {**_FULL_PEERS, "scan": {}},
            # ICBPL started from SCAN's clustering step (docs/BENCHMARKS.md, cifar10-notes)
            ours={"init": "scan", "init_epochs": 2, "n_heads": 1},
        ),
        Plan("mnist", {"epochs": 4, "batch_size": 256}, _FULL_PEERS),
        Plan("fashion-mnist", {"epochs": 4, "batch_size": 256}, _FULL_PEERS),
        Plan(
            "tiny-imagenet",
            {"epochs": 15, "batch_size": 256},
            _TINY_PEERS,
            # many clusters: k-means warm start and a 10x MMD weight (docs/BENCHMARKS.md, large-k)
            ours={"epochs": 8, "init": "kmeans", "loss_weights": (80.0, 2.0, 2.0, 1.0)},
        ),
    ),
    table11_seeds=(0, 1, 2, 3),
    n_heads=2,
    ablation=Plan("cifar10-test", {"epochs": 12, "batch_size": 128}),
    ablation_seeds=(0, 1),
    neighbour_ks=(0, 1, 2, 3, 4, 5),
    loss_subsets=LOSS_SUBSETS,
    refresh=Plan("cifar10-test-noviews", {"epochs": 45, "batch_size": 256}),
    refresh_every=(0, 10, 20, 30, 40),
    encoder_images="cifar10-test",
    encoders=_LITE,
    encoder_icbpl={"epochs": 15, "batch_size": 128},
    barlow_twins={"epochs": 30, "batch_size": 256},
    plots=Plan("cifar10-test", {"epochs": 30, "batch_size": 128}),
    tsne_points=3000,
)

QUICK = BenchSettings(
    mode="quick",
    table11=(
        Plan("digits", {"epochs": 30, "batch_size": 100}, _DIGITS_PEERS),
        Plan("mnist-10k", {"epochs": 5, "batch_size": 256}, _QUICK_PEERS),
    ),
    table11_seeds=(0,),
    n_heads=2,
    ablation=Plan("digits-2views", {"epochs": 15, "batch_size": 100}),
    ablation_seeds=(0,),
    neighbour_ks=(0, 1, 2, 3, 4, 5),
    loss_subsets=LOSS_SUBSETS,
    refresh=Plan("digits-2views", {"epochs": 42, "batch_size": 200}),
    refresh_every=(0, 10, 20, 30, 40),
    encoder_images="cifar10-test-1k",
    encoders=_LITE,
    encoder_icbpl={"epochs": 15, "batch_size": 100},
    barlow_twins={"epochs": 20, "batch_size": 256},
    plots=Plan("digits", {"epochs": 30, "batch_size": 100}),
    tsne_points=1000,
)

"""What one ``benchmarks/bench.py`` invocation shares between its experiments.

The context holds the settings (full or quick), where to write, where the data and the feature
cache are, and in-process memos: each dataset is loaded and its neighbours mined once per run,
and an ICBPL configuration that two ablations share (the paper's defaults) is trained once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from icbpl_bench._data import BenchData, DataLoader, load_bench_data
from icbpl_bench._settings import BenchSettings

__all__ = ["BenchContext", "NeighbourInfo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NeighbourInfo:
    """The kNN list every method of a dataset shares, and how it was made.

    Attributes:
        indices: ``(N, K)`` int64, nearest first, the sample itself excluded.
        seconds: mining time.
        agreement4: fraction of the 4 nearest neighbours with the sample's class (labels are
            used only for this diagnostic).
    """

    indices: np.ndarray
    seconds: float
    agreement4: float

    def note(self) -> str:
        """One line for the tables."""
        k = self.indices.shape[1]
        return (
            f"neighbours: {k} per sample, cosine on the centred features "
            f"(`icbpl.core.neighbours.mine_neighbours`), mined once ({self.seconds:.0f} s) "
            f"and given to every method (ICBPL uses the first n_neighbours); 4-NN label agreement "
            f"{self.agreement4:.3f}"
        )


@dataclass
class BenchContext:
    """Settings, paths and memos of one run (see the module docstring).

    Attributes:
        settings: `icbpl_bench._settings.FULL`, ``QUICK`` or a test's own.
        out_dir: folder of the Markdown, CSV and PNG files.
        docs_file: Markdown file whose sections the tables also replace (None: not written).
        cache_dir: feature cache of `icbpl.features.extract_features` (None: no cache).
        data_root: folder of the shared benchmark data.
        seeds: overrides every experiment's default seeds when given.
        command: the command line, as the tables state it.
        datasets: extra or replacement dataset loaders by name (tests inject tiny data here).
        progress: show extraction progress bars.
        variant: appended to every file stem and section name (``table11-tiny-imagenet``) when
            a run covers part of an experiment (``--only``).
    """

    settings: BenchSettings
    out_dir: Path
    docs_file: Path | None = None
    cache_dir: Path | None = None
    data_root: Path = Path("../shared/data")
    seeds: tuple[int, ...] | None = None
    command: str = ""
    datasets: Mapping[str, DataLoader] | None = None
    progress: bool = False
    variant: str = ""
    _data: dict[str, BenchData] = field(default_factory=dict, repr=False)
    _neighbours: dict[str, NeighbourInfo] = field(default_factory=dict, repr=False)
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)

    def seeds_for(self, default: Sequence[int]) -> tuple[int, ...]:
        """``--seeds`` when given, else the experiment's ``default``."""
        return tuple(self.seeds) if self.seeds else tuple(default)

    def stem(self, experiment: str) -> str:
        """File stem and section name: ``NAME[-VARIANT][-quick]``."""
        stem = f"{experiment}-{self.variant}" if self.variant else experiment
        return f"{stem}-quick" if self.settings.quick else stem

    def data(self, name: str) -> BenchData:
        """Dataset ``name``, loaded once per run (raises `DatasetUnavailable` when missing)."""
        if name not in self._data:
            t = time.perf_counter()
            self._data[name] = load_bench_data(name, self)
            logger.info("dataset %s loaded in %.0f s", name, time.perf_counter() - t)
        return self._data[name]

    def put_data(self, data: BenchData) -> None:
        """Make ``data`` (built by an experiment, e.g. from another encoder) known by its name."""
        self._data[data.name] = data
        self._neighbours.pop(data.name, None)

    def neighbours(self, name: str) -> NeighbourInfo:
        """The shared kNN list of dataset ``name``, mined once per run."""
        if name not in self._neighbours:
            from icbpl.core.neighbours import mine_neighbours

            data = self.data(name)
            x = data.features
            k = min(self.settings.n_mined, len(data) - 1)
            t = time.perf_counter()
            idx = mine_neighbours(x - x.mean(axis=0, keepdims=True), k)
            seconds = time.perf_counter() - t
            agree = float((data.labels[idx[:, :4]] == data.labels[:, None]).mean())
            self._neighbours[name] = NeighbourInfo(idx.astype(np.int64), seconds, agree)
        return self._neighbours[name]

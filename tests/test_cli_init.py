"""``icbpl cluster --init kmeans --loss-weights M,A,N,D``: parsing, checks, setting, run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from icbpl.cli._parser import _loss_weights
from icbpl.pipeline import ClusterConfig, PipelineError
from test_cli import FAST, run_main
from test_cli_k_range import folder as folder


def test_parse_loss_weights() -> None:
    assert _loss_weights("80,2,2,1") == (80.0, 2.0, 2.0, 1.0)
    for bad in ["8,2,2", "8,2,2,1,2", "8,2,2,1,1,1", "a,b,c,d", "8,-2,2,1", "8,2,2,1,-1", ""]:
        with pytest.raises(argparse.ArgumentTypeError, match="expected four numbers >= 0"):
            _loss_weights(bad)


def test_config_checks_loss_weights() -> None:
    assert ClusterConfig(path="x", k=3, loss_weights=[8, 2, 2, 1]).loss_weights == (8, 2, 2, 1)
    for bad in [(8, 2, 2), (8, 2, 2, 1, 2)]:
        with pytest.raises(PipelineError, match="should be 4 numbers >= 0"):
            ClusterConfig(path="x", k=3, loss_weights=bad).validate()


def test_config_checks_init() -> None:
    assert ClusterConfig(path="x", k=3).init == "auto"  # the default start
    with pytest.raises(
        PipelineError, match="init='spectral' should be one of random, kmeans, scan"
    ):
        ClusterConfig(path="x", k=3, init="spectral").validate()


def test_bad_loss_weights_is_a_usage_error(folder: Path, tmp_path: Path) -> None:
    argv = ["cluster", folder, "--k", "3", "--out", tmp_path / "o", "--loss-weights", "1,2"]
    code, stdout, err = run_main(argv)
    assert code == 2 and stdout == "" and "argument --loss-weights" in err
    assert not (tmp_path / "o").exists()


def test_init_kmeans_and_loss_weights_end_to_end(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["cluster", folder, "--k", "3", "--out", out, "--cache-dir", tmp_path / "cache"]
    extra = ["--init", "kmeans", "--loss-weights", "16,2,2,1"]
    code, _, err = run_main([*argv, *extra, *FAST])
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["init"] == "kmeans" and config["loss_weights"] == [16.0, 2.0, 2.0, 1.0]
    model = json.loads((out / "model" / "config.json").read_text())["params"]
    assert model["init"] == "kmeans" and model["loss_weights"] == [16.0, 2.0, 2.0, 1.0]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["cluster_sizes"]) == 3 and sum(summary["cluster_sizes"]) == 18


def test_include_hidden_reads_dot_files(folder: Path, tmp_path: Path) -> None:
    """A hidden image is skipped and listed by default, clustered with --include-hidden."""
    import shutil

    images = tmp_path / "images"
    shutil.copytree(folder, images)
    shutil.copy(images / "red" / "0.png", images / "red" / ".hidden.png")
    base = ["cluster", images, "--k", "3", "--cache-dir", tmp_path / "cache", *FAST]
    code, _, err = run_main([*base, "--out", tmp_path / "a"])
    assert code == 0, err
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    skipped = {path: reason for path, reason in summary["skipped"]}
    assert any(p.endswith(".hidden.png") for p in skipped)
    assert "--include-hidden" in next(iter(skipped.values()))
    assert sum(summary["cluster_sizes"]) == 18
    code, _, err = run_main([*base, "--out", tmp_path / "b", "--include-hidden"])
    assert code == 0, err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert sum(summary["cluster_sizes"]) == 19 and not summary["skipped"]
    config = json.loads((tmp_path / "b" / "config.json").read_text())["config"]
    assert config["include_hidden"] is True


@pytest.mark.filterwarnings("ignore:scan. .* clusters are empty:UserWarning")  # 18 tiny images
def test_init_scan_end_to_end(folder: Path, tmp_path: Path) -> None:
    """--init scan mines 20 neighbours (17 for 18 images) for SCAN; the kNN loss and
    neighbours.npy keep the first --neighbours of them."""
    import numpy as np

    out = tmp_path / "out"
    argv = ["cluster", folder, "--k", "3", "--out", out, "--cache-dir", tmp_path / "cache"]
    code, _, err = run_main([*argv, "--init", "scan", "--neighbours", "3", *FAST])
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["config"]["init"] == "scan"
    assert np.load(out / "neighbours.npy").shape == (18, 3)
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["cluster_sizes"]) == 18

"""What ``icbpl cluster`` says on screen: the features stage, the training bar, tiny folders,
and the command-line form of the library's weights hints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from icbpl.cli._common import cli_wording
from test_cli import _write_images, run_main

TINY = ["--encoder", "resnet_cifar_tiny", "--weights", "random"]
FAST = [*TINY, "--epochs", "2"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("msg-images")
    _write_images(root, seed=3, per_class=4)
    return root


def test_extraction_then_cache_hit_and_one_training_bar(images: Path, tmp_path: Path) -> None:
    # no --epochs: the epochs follow from the folder's size, known only when training starts
    argv = ["cluster", images, "--k", "3", "--out", tmp_path / "out", "--threads", "1", *TINY]
    argv += ["--cache-dir", tmp_path / "cache"]
    code, _, err = run_main(argv)
    assert code == 0, err
    assert err.count("icbpl: extracting features ...") == 1
    assert err.index("icbpl: extracting features ...") < err.index("resnet_cifar_tiny [")
    assert "features from cache" not in err
    bars = re.findall(r"training:[^\r\n]*", err)
    assert bars and "/60 [" in bars[0]  # drawn with its total from the start
    assert all(re.search(r"/\d+ \[", b) for b in bars)  # the second head's start adds to it
    assert "training: 0epoch" not in err  # the empty bar of a total not known yet
    code, _, err = run_main([*argv, "--overwrite"])
    assert code == 0, err
    assert "extracting features" not in err
    assert "icbpl: features from cache (features-" in err


def test_tiny_folder_warns_and_auto_k_says_what_it_tried(tmp_path: Path) -> None:
    folder = tmp_path / "three"
    _write_images(folder, seed=4, per_class=1)  # 3 images
    base = ["cluster", folder, "--threads", "1", "--no-cache", *FAST]
    code, _, err = run_main([*base, "--k", "2", "--out", tmp_path / "a"])
    assert code == 0, err
    assert "warning: only 3 images for k=2 clusters (fewer than 5 per cluster)" in err
    code, _, err = run_main([*base, "--k", "auto", "--out", tmp_path / "b"])
    assert code == 0, err
    assert "tried k = 2..2 (capped below the 3 images)" in err  # on screen before training
    assert err.index("tried k = 2..2") < err.index("training the ICBPL head")


def test_weights_hints_use_the_command_line_option() -> None:
    text = (
        "pass its path: create_encoder(..., weights='/path/to/dino.pth'), or put it there; "
        "or create_encoder('resnet18_cifar', weights=...); or use weights='random'"
    )
    assert cli_wording(text) == (
        "pass its path: --weights /path/to/dino.pth, or put it there; "
        "or --weights FILE; or use --weights random"
    )

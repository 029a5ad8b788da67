"""``icbpl cluster --k auto --k-range LO..HI``: parsing, validation, the saved setting, a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icbpl.cli._parser import parse_k_range
from icbpl.pipeline import ClusterConfig, PipelineError
from icbpl.pipeline._stages import resolve_k
from test_cli import FAST, run_main


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three colour classes x 6 noisy 32x32 images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    colours = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}
    for name, colour in colours.items():
        (root / name).mkdir()
        for i in range(6):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(("text", "expected"), [("2..4", (2, 4)), (" 3..50 ", (3, 50))])
def test_parse_k_range(text: str, expected: tuple[int, int]) -> None:
    assert parse_k_range(text) == expected


@pytest.mark.parametrize("text", ["50..2", "1..5", "4..4", "2-4", "2..", "a..b", "2..3..4", ""])
def test_parse_k_range_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as err:
        parse_k_range(text)
    assert str(err.value) == f"{text!r}: expected LO..HI with 2 <= LO < HI, e.g. --k-range 2..50"


def test_bad_k_range_is_a_usage_error(folder: Path, tmp_path: Path) -> None:
    argv = ["cluster", folder, "--k", "auto", "--out", tmp_path / "o", "--k-range", "50..2"]
    code, stdout, err = run_main(argv)
    assert code == 2 and stdout == ""
    assert "argument --k-range: '50..2': expected LO..HI with 2 <= LO < HI" in err
    assert not (tmp_path / "o").exists()


def test_k_range_needs_k_auto(folder: Path, tmp_path: Path) -> None:
    code, _, err = run_main(
        ["cluster", folder, "--k", "3", "--k-range", "2..4", "--out", tmp_path / "o", "-q"]
    )
    assert code == 1 and not (tmp_path / "o").exists()
    assert err.strip() == (
        "icbpl cluster: error: --k-range 2..4 is only used with --k auto, got --k 3; "
        "pass --k auto or leave out --k-range"
    )
    # the same through a config.json whose k is an integer
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "format": "icbpl.cluster",
                "version": 1,
                "config": ClusterConfig(path=str(folder), k=5).to_dict(),
            }
        )
    )
    code, _, err = run_main(["cluster", "--config", tmp_path, "--k-range", "2..4", "-q"])
    assert code == 1 and "got --k 5" in err


def test_config_keeps_and_checks_k_range() -> None:
    config = ClusterConfig(path="x", k="auto", k_range=[3, 7])  # type: ignore[arg-type]
    assert config.k_range == (3, 7) and config.to_dict()["k_range"] == [3, 7]
    assert ClusterConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert ClusterConfig(path="x", k="auto").k_range == (2, 50)  # older config.json files
    for bad in [(5, 3), (1, 4), (2,), (2.0, 4)]:
        with pytest.raises(PipelineError, match=r"k_range=.* should be two integers"):
            ClusterConfig(path="x", k="auto", k_range=bad).validate()  # type: ignore[arg-type]


def test_resolve_k_caps_the_range_below_the_image_count() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 8)).astype(np.float32)
    k, info = resolve_k("auto", (2, 50), features, seed=0)
    assert info is not None and info["k_range"] == [2, 11] and 2 <= k <= 11
    assert sorted(int(c) for c in info["scores"]) == list(range(2, 12))
    assert info["method"] == "silhouette_gap" and k in info["top"]
    assert info["message"].endswith("tried k = 2..11 (capped below the 12 images)")
    assert resolve_k(7, (2, 50), features, seed=0) == (7, None)
    with pytest.raises(PipelineError, match=r"k_range 12\.\.20 needs more than 12 images"):
        resolve_k("auto", (12, 20), features, seed=0)


def test_k_auto_with_k_range_end_to_end(folder: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["cluster", folder, "--k", "auto", "--k-range", "2..4", "--out", out]
    loud = [a for a in FAST if a != "--quiet"]
    code, stdout, err = run_main([*argv, "--cache-dir", cache, *loud])
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    k = summary["n_clusters"]
    assert 2 <= k <= 4 and len(summary["cluster_sizes"]) == k
    assert f"into {k} clusters" in stdout
    assert f"k={k} chosen without labels: " in stdout and "tried k = 2..4" in stdout
    # shown on stderr before training starts
    assert err.index(f"icbpl: k={k} chosen without labels") < err.index("training the ICBPL")
    assert summary["settings"]["k"] == "auto" and summary["settings"]["k_range"] == [2, 4]
    assert summary["k_choice"]["k_range"] == [2, 4]
    assert set(summary["k_choice"]["scores"]) == {"2", "3", "4"}
    assert "choose_k" in summary["timings"]
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["k"] == "auto" and config["k_range"] == [2, 4]

    # the saved config repeats the range (and so the choice)
    again = tmp_path / "again"
    code, _, err = run_main(["cluster", "--config", out, "--out", again, "-q"])
    assert code == 0, err
    repeat = json.loads((again / "summary.json").read_text())
    assert repeat["settings"]["k_range"] == [2, 4] and repeat["n_clusters"] == k
    assert (again / "assignments.csv").read_bytes() == (out / "assignments.csv").read_bytes()

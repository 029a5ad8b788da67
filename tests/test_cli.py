"""End-to-end tests of the ``icbpl`` command on a tiny generated image folder.

One clustering run (3 colour classes x 8 images of 32x32, plus bad files; the random tiny CIFAR
ResNet; 3 epochs) is shared by the module; the other tests re-run, predict and break it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icbpl.cli import main

COLOURS = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}
PER_CLASS = 8
FAST = ["--encoder", "resnet_cifar_tiny", "--weights", "random", "--epochs", "3", "--quiet"]


def _write_images(folder: Path, seed: int, per_class: int = PER_CLASS) -> None:
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.normal(0.0, 20.0, (32, 32, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class sub-folders of coloured noise images, plus a couple of bad files."""
    root = tmp_path_factory.mktemp("images")
    _write_images(root, seed=0)
    (root / "red" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "green" / "empty.png").write_bytes(b"")
    (root / "blue" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One clustering run: its folder, stdout and cache."""
    base = tmp_path_factory.mktemp("run")
    out, cache = base / "out", base / "cache"
    code, stdout, stderr = run_main(
        ["cluster", folder, "--k", "3", "--out", out, "--cache-dir", cache, "--threads", "1", *FAST]
    )
    assert code == 0, stderr
    return {"out": out, "stdout": stdout, "stderr": stderr, "cache": cache}


# ------------------------------------------------------------------------------ cluster
def test_cluster_writes_assignments_latent_and_model(run: dict[str, object], folder: Path) -> None:
    from icbpl.model.estimator import ICBPL

    out = Path(str(run["out"]))
    header, rows = read_csv(out / "assignments.csv")
    assert header == ["id", "path", "cluster", "score", "label"]
    assert len(rows) == 3 * PER_CLASS
    classes = sorted(COLOURS)
    for row in rows:
        assert Path(row["path"]).is_absolute()
        assert Path(row["path"]) == (folder / row["id"]).resolve()
        assert int(row["label"]) == classes.index(row["id"].split("/")[0])
    clusters = np.array([int(r["cluster"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    assert set(clusters) <= {0, 1, 2}

    latent = np.load(out / "latent.npy")
    assert latent.shape == (len(rows), 100) and latent.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(latent, axis=1), 1.0, atol=1e-5)
    model = ICBPL.load(out / "model")
    cosines = latent @ model.centroids_.T
    np.testing.assert_array_equal(cosines.argmax(axis=1), clusters)
    np.testing.assert_allclose(cosines.max(axis=1), scores, atol=1e-5)
    assert np.load(out / "neighbours.npy").shape == (len(rows), 4)


def test_cluster_writes_summary_config_and_log(run: dict[str, object]) -> None:
    out = Path(str(run["out"]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 3 * PER_CLASS and summary["n_clusters"] == 3
    assert summary["encoder"]["name"] == "resnet_cifar_tiny"
    assert summary["encoder"]["supervised"] is False
    assert summary["settings"]["epochs"] == 3 and summary["settings"]["k"] == 3
    assert summary["icbpl"]["n_clusters"] == 3
    skipped = {path: reason for path, reason in summary["skipped"]}
    assert {"red/broken.jpg", "green/empty.png", "blue/notes.txt"} <= set(skipped)
    assert all(reason for reason in skipped.values())
    assert sum(summary["cluster_sizes"]) == 3 * PER_CLASS
    assert summary["empty_clusters"] == [i for i, s in enumerate(summary["cluster_sizes"]) if not s]
    assert set(summary["metrics"]) == {"acc", "nmi", "ari"}
    assert summary["class_names"] == sorted(COLOURS)
    assert {"encoder", "images", "features", "neighbours", "train", "write", "total"} <= set(
        summary["timings"]
    )
    assert 0 <= summary["best_epoch"] <= 3  # 0: the warm-started head kept
    records = [summary["start"], *summary["history"]]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert records[summary["best_epoch"]]["score"] == max(r["score"] for r in records)
    assert 0 < summary["peak_rss_mb"] < 2**20  # MiB of this process, memory maps included
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    assert summary["features"]["views"] == 1  # the default

    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "icbpl.cluster"
    assert config["config"]["encoder"] == "resnet_cifar_tiny"
    assert config["config"]["weights"] == "random"
    assert config["config"]["path"] == str(Path(summary["source"]["path"]))
    assert {"latent_dim", "loss_weights", "n_neighbours", "seed", "views"} <= set(config["config"])

    assert (out / "model" / "model.safetensors").is_file()
    log = (out / "log.txt").read_text()
    assert "icbpl cluster" in log and "epoch 3" in log


def test_cluster_prints_results_and_skipped_files(run: dict[str, object]) -> None:
    stdout = str(run["stdout"])
    assert "clustered 24 images into 3 clusters" in stdout
    assert "ACC" in stdout and "NMI" in stdout and "ARI" in stdout
    assert "random weights" in stdout  # the note about the encoder
    tail = stdout[stdout.index("skipped 3 file(s):") :]
    assert "red/broken.jpg" in tail and "green/empty.png" in tail
    assert str(run["stderr"]) == ""  # --quiet: no bars, no stage lines


def test_same_config_and_seed_give_the_same_assignments(
    run: dict[str, object], folder: Path, tmp_path: Path
) -> None:
    out = Path(str(run["out"]))
    # fresh features (another cache): the random encoder and the views are seeded
    again = tmp_path / "again"
    code, _, err = run_main(
        ["cluster", folder, "--k", "3", "--out", again, "--cache-dir", tmp_path / "c", *FAST]
    )
    assert code == 0, err
    assert (again / "assignments.csv").read_bytes() == (out / "assignments.csv").read_bytes()
    np.testing.assert_array_equal(np.load(again / "latent.npy"), np.load(out / "latent.npy"))
    # the run's config.json repeats it
    repeat = tmp_path / "repeat"
    code, _, err = run_main(["cluster", "--config", out / "config.json", "--out", repeat, "-q"])
    assert code == 0, err
    assert (repeat / "assignments.csv").read_bytes() == (out / "assignments.csv").read_bytes()


def test_rerun_into_a_results_folder_replaces_it(run: dict[str, object], tmp_path: Path) -> None:
    out = Path(str(run["out"]))
    target = tmp_path / "target"
    code, _, err = run_main(["cluster", "--config", out, "--out", target, "--k", "2", "-q"])
    assert code == 0, err
    assert run_main(["report", target, "--map", "pca"])[0] == 0  # listed in the manifest
    (target / "notes.txt").write_text("mine")
    code, _, err = run_main(["cluster", "--config", out, "--out", target, "-q"])
    assert code == 1 and "pass --overwrite" in err
    code, _, err = run_main(["cluster", "--config", out, "--out", target, "-q", "--overwrite"])
    assert code == 0, err
    assert not (target / "report.html").exists() and not (target / "map.png").exists()
    assert (target / "notes.txt").read_text() == "mine"  # not icbpl's: kept
    assert json.loads((target / "summary.json").read_text())["n_clusters"] == 3


# ------------------------------------------------------------------------------ predict
def test_predict_with_the_saved_run(run: dict[str, object], folder: Path, tmp_path: Path) -> None:
    out = Path(str(run["out"]))
    pred = tmp_path / "pred.csv"
    code, stdout, err = run_main(
        ["predict", out, folder, "--out", pred, "--no-cache", "--threads", "1", "-q"]
    )
    assert code == 0, err
    header, rows = read_csv(pred)
    _, train = read_csv(out / "assignments.csv")
    assert header == ["id", "path", "cluster", "score", "label", "unassigned"]
    assert [{k: r[k] for k in train[0]} for r in rows] == train
    # the threshold is the (interpolated) 5% quantile of these very images: at most
    # ceil(0.05 * (n - 1)) of them fall below it
    refused = sum(r["unassigned"] == "1" for r in rows)
    assert refused <= np.ceil(0.05 * (len(rows) - 1))
    assert f"unassigned: {refused} image(s) far from every cluster" in stdout
    assert f"wrote {pred}" in stdout

    new = tmp_path / "new"
    new.mkdir()
    for i, colour in enumerate(COLOURS.values()):
        Image.fromarray(np.full((20, 30, 3), colour, dtype=np.uint8)).save(new / f"{i}.png")
    code, _, err = run_main(["predict", out, new, "--out", tmp_path / "new.csv", "-q"])
    assert code == 0, err
    header, rows = read_csv(tmp_path / "new.csv")
    assert header == ["id", "path", "cluster", "score", "unassigned"]  # no labels: no label
    assert [r["id"] for r in rows] == ["0.png", "1.png", "2.png"]
    assert all(0 <= int(r["cluster"]) < 3 and -1 <= float(r["score"]) <= 1 for r in rows)


def test_predict_refuses_a_folder_that_is_not_a_run(folder: Path, tmp_path: Path) -> None:
    code, _, err = run_main(["predict", tmp_path, folder, "--out", tmp_path / "p.csv", "-q"])
    assert code == 1
    assert "config.json" in err and "Traceback" not in err


def test_predict_via_the_installed_command(
    run: dict[str, object], folder: Path, tmp_path: Path
) -> None:
    out = Path(str(run["out"]))
    script = Path(sys.executable).with_name("icbpl")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "icbpl"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pred = tmp_path / "pred.csv"
    done = subprocess.run(
        [*command, "predict", str(out), str(folder), "--out", str(pred), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _, rows = read_csv(pred)
    _, train = read_csv(out / "assignments.csv")
    assert [{k: r[k] for k in train[0]} for r in rows] == train  # plus the 'unassigned' column
    assert "assigned 24 images" in done.stdout


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "no images found under"),
        ("too_few", "24 images should be >= k=30 clusters; pass a smaller --k"),
        ("encoder", "unknown encoder 'nope'; choose one of"),
        ("weights", "weights file"),
        ("missing", "does not exist; pass a folder of images"),
    ],
)
def test_fatal_errors_exit_1_with_one_line(
    case: str, message: str, folder: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    argv = {
        "empty": ["cluster", empty, "--k", "3", *FAST],
        "too_few": ["cluster", folder, "--k", "30", *FAST],
        "encoder": ["cluster", folder, "--k", "3", "--encoder", "nope", "-q"],
        "weights": ["cluster", folder, "--k", "3", "--weights", tmp_path / "missing.pth", "-q"],
        "missing": ["cluster", tmp_path / "no such" / "folder", "--k", "3", *FAST],
    }[case]
    code, stdout, err = run_main([*argv, "--out", out, "--cache-dir", tmp_path / "cache"])
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("icbpl cluster: error: ")
    assert message in lines[0]
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()  # a failed run leaves no results folder behind


def test_k_auto_picks_a_number_of_clusters(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "auto"
    code, _, err = run_main(
        ["cluster", folder, "--k", "auto", *FAST, "--out", out, "--cache-dir", tmp_path / "c"]
    )
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    k = summary["n_clusters"]
    assert isinstance(k, int) and 2 <= k < 24
    assert len(summary["cluster_sizes"]) == k


def test_unknown_encoder_message_lists_the_known_ones(folder: Path, tmp_path: Path) -> None:
    code, _, err = run_main(
        ["cluster", folder, "--k", "3", "--encoder", "nope", "--out", tmp_path / "o", "-q"]
    )
    assert code == 1 and "efficientnet_lite0" in err and "resnet_cifar_tiny" in err


def test_verbose_adds_the_traceback(folder: Path, tmp_path: Path) -> None:
    code, _, err = run_main(
        ["cluster", folder, "--k", "3", "--encoder", "nope", "--out", tmp_path / "o", "-v"]
    )
    assert code == 1 and "Traceback" in err and "unknown encoder 'nope'" in err


def test_usage_errors_exit_2(folder: Path, tmp_path: Path) -> None:
    assert run_main(["cluster", folder, "--k", "1", "--out", tmp_path / "o"])[0] == 2
    assert run_main(["cluster", folder, "--k", "ten", "--out", tmp_path / "o"])[0] == 2
    code, _, err = run_main(["cluster", folder, "--out", tmp_path / "o"])
    assert code == 1 and "--k is required" in err
    assert run_main([])[0] == 2
    code, stdout, _ = run_main(["--help"])
    assert code == 0 and "cluster" in stdout and "predict" in stdout


def test_refuses_to_write_into_an_unrelated_folder(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    code, _, err = run_main(["cluster", folder, "--k", "3", "--out", other, *FAST])
    assert code == 1 and "non-empty folder" in err
    assert [p.name for p in other.iterdir()] == ["thesis.tex"]


# ------------------------------------------------------------ datasets and the report
def test_array_dataset_with_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    colours = np.array([(200, 30, 30), (30, 30, 200)], dtype=np.float64)
    y = np.repeat([0, 1], 10)
    x = np.clip(colours[y][:, None, None, :] + rng.normal(0, 15, (20, 16, 16, 3)), 0, 255)
    data = tmp_path / "tiny.npz"
    pixels = x.astype(np.uint8)
    np.savez(data, x_train=pixels[:4], y_train=y[:4], x_test=pixels, y_test=y)
    out = tmp_path / "out"
    argv = ["cluster", data, "--split", "test", "--k", "2", "--out", out, "--no-cache", *FAST]
    code, stdout, err = run_main([*argv, "--report", "--map", "pca"])
    assert code == 0, err
    header, rows = read_csv(out / "assignments.csv")
    assert header == ["id", "path", "cluster", "score", "label"] and len(rows) == 20
    assert all(r["path"] == "" for r in rows)  # array data: no files
    html = (out / "report.html").read_text()
    assert "data:image/jpeg;base64" in html  # thumbnails from the array source
    assert "report.html" in stdout

    (out / "report.html").unlink()
    code, stdout, err = run_main(["report", out, "--map", "pca", "-q"])
    assert code == 0, err
    assert "data:image/jpeg;base64" in (out / "report.html").read_text()
    assert f"wrote {out / 'report.html'}" in stdout


def test_report_command_on_the_run(run: dict[str, object], tmp_path: Path) -> None:
    out = Path(str(run["out"]))
    argv = ["report", out, "--threads", "1", "--out", tmp_path / "r.html"]
    code, stdout, err = run_main(argv)
    assert code == 0, err
    assert (tmp_path / "r.html").is_file() and "wrote" in stdout
    html = (tmp_path / "r.html").read_text()
    # the run kept its feature cache: the map and the confidence come from the encoder features
    assert "t-SNE of the encoder features" in html and 'id="confidence-note"' in html
    assert f"map: t-SNE of {3 * PER_CLASS} points" in err and "1000/1000" in err  # bar on stderr
    code, _, err = run_main(["report", tmp_path / "nothing", "-q"])
    assert code == 1 and "does not exist" in err


# ----------------------------------------------------------------- demo and encoders
def test_demo_prints_the_three_metrics_for_both_methods() -> None:
    code, stdout, err = run_main(["demo", "--epochs", "2", "--quiet"])
    assert code == 0, err
    lines = stdout.splitlines()
    assert any(line.split()[:4] == ["method", "ACC", "NMI", "ARI"] for line in lines)
    for method in ("ICBPL", "k-means"):
        row = next(line for line in lines if line.startswith(method))
        acc, nmi, ari = (float(v) for v in row.split()[1:4])
        assert 0.0 <= acc <= 1.0 and 0.0 <= nmi <= 1.0 and -1.0 <= ari <= 1.0
    assert "1797 images" in stdout


def test_encoders_lists_dims_sizes_training_and_weights() -> None:
    code, stdout, err = run_main(["encoders"])
    assert code == 0, err
    rows = {line.split()[0]: line for line in stdout.splitlines() if line.strip()}
    lite0 = rows["efficientnet_lite0"].split()
    assert lite0[1:4] == ["1280", "160", "supervised"]
    assert "installed" in rows["efficientnet_lite0"]
    assert rows["resnet_cifar_tiny"].split()[1:3] == ["64", "16"]
    assert "self-supervised" in rows["dino_vits16"]
    assert "--weights FILE" in rows["simclr_resnet50"]


def test_cluster_heads_keeps_the_head_with_the_best_label_free_score(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run_main(
        ["cluster", folder, "--k", "3", "--out", out, "--no-cache", "--heads", "2", *FAST]
    )
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    heads = summary["heads"]
    assert summary["icbpl"]["n_heads"] == 2 and len(heads) == 4  # init auto: 2 starts a head
    assert len({h["seed"] for h in heads}) == 2
    assert [h["init"] for h in heads] == ["kmeans", "scan"] * 2
    best = max(heads, key=lambda h: h["score"])
    assert summary["best_epoch"] == best["best_epoch"]
    records = [summary["start"], *summary["history"]]  # epoch 0: the warm start
    assert records[best["best_epoch"]]["score"] == pytest.approx(best["score"])
    assert "best of 4 heads" in stdout

"""Issue 19: results folders are never lost or mixed up (items 1, 2, 3, 5, 8 and 10).

A foreign folder survives, a killed run leaves the previous results byte-identical, formula-like
file names are neutralised in the CSV, predict never overwrites a run's own files, the report is
world-readable and holds no absolute path, and outputs are replaced atomically.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icbpl.cli import main
from icbpl.pipeline import PipelineError, ResultsFolder, write_assignments

FAST = ["--encoder", "resnet_cifar_tiny", "--weights", "random", "--epochs", "3", "--quiet"]
NAMES = ["=HYPERLINK(1).png", "+SUM(1).png", "@cmd.png", "-x.png", "'quoted.png", "plain.png"]


def run_main(argv: list[object]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _images(folder: Path, names: list[str], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        colour = np.array([(220, 30, 30), (30, 200, 40), (30, 40, 220)][i % 3])
        pixels = np.clip(colour + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name, format="PNG")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _images(tmp_path_factory.mktemp("img") / "few", NAMES + [f"{i}.png" for i in range(9)])


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _cluster(images: Path, out: Path, cache: Path, *extra: object) -> tuple[int, str, str]:
    return run_main(
        ["cluster", images, "--k", "3", "--out", out, "--cache-dir", cache, *FAST, *extra]
    )


# ----------------------------------------------------------------- 1: foreign folders
def test_foreign_folder_survives_even_with_overwrite(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "P"
    (out / "model").mkdir(parents=True)
    (out / "model" / "thesis.tex").write_text("x")
    (out / "log.txt").write_text("l")
    (out / "config.json").write_text("{}")
    before = _snapshot(out)
    for extra in ([], ["--overwrite"]):
        code, _, err = _cluster(images, out, tmp_path / "c", *extra)
        assert code == 1 and "icbpl did not write" in err
        assert _snapshot(out) == before


def test_overwrite_removes_only_listed_files(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _cluster(images, out, tmp_path / "c")[0] == 0
    listed = json.loads((out / ".icbpl-manifest.json").read_text())["files"]
    assert {"assignments.csv", "summary.json", "log.txt", "model/model.safetensors"} <= set(listed)
    (out / "model" / "mine.txt").write_text("keep me")
    code, _, err = _cluster(images, out, tmp_path / "c")
    assert code == 1 and "--overwrite" in err
    assert _cluster(images, out, tmp_path / "c", "--overwrite")[0] == 0
    assert (out / "model" / "mine.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".run.icbpl-*"))  # no staging folder or lock left


def test_lock_names_the_other_runs_pid(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    with ResultsFolder(out) as staging:
        assert staging.parent == tmp_path and staging.is_dir()
        with pytest.raises(PipelineError, match=f"another icbpl run \\(pid {os.getpid()}\\)"):
            ResultsFolder(out).__enter__()
        (staging / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new" and not staging.exists()


# ------------------------------------------------------------- 2: interrupted re-runs
def _command() -> list[str]:
    return [sys.executable, "-m", "icbpl"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_rerun_leaves_previous_results_byte_identical(
    images: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    out, cache = tmp_path / "run", tmp_path / "c"
    assert _cluster(images, out, cache)[0] == 0
    before = _snapshot(out)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    argv = [*_command(), "cluster", str(images), "--k", "3", "--out", str(out), "--overwrite"]
    argv += ["--cache-dir", str(cache), "--encoder", "resnet_cifar_tiny", "--weights", "random"]
    argv += ["--epochs", "100000", "--patience", "0", "--threads", "1"]  # outlasts the kill
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    deadline = time.monotonic() + 240
    for line in proc.stderr:
        if "training the ICBPL head" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert proc.returncode in (-signal.SIGKILL, 130)
    assert _snapshot(out) == before
    if sig == signal.SIGINT:
        assert not list(tmp_path.glob(".run.icbpl-staging-*"))  # cleaned up on the way out
    assert _cluster(images, out, cache, "--overwrite")[0] == 0  # and a re-run still works
    assert not list(tmp_path.glob(".run.icbpl-*"))


# ------------------------------------------------------------------- 3: CSV injection
def test_formula_names_are_neutralised_and_raw_names_kept(images: Path, tmp_path: Path) -> None:
    from icbpl.report import load_results

    out = tmp_path / "run"
    assert _cluster(images, out, tmp_path / "c")[0] == 0
    with (out / "assignments.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cells = [r["id"] for r in rows] + [r["path"] for r in rows]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    ids = {r["id"] for r in rows}
    assert {"'=HYPERLINK(1).png", "'+SUM(1).png", "'@cmd.png", "'-x.png", "''quoted.png"} <= ids
    assert "plain.png" in ids
    raw = json.loads((out / "summary.json").read_text())["csv_neutralised"]
    assert sorted(r["id"] for r in raw) == sorted(NAMES[:5])
    assert set(NAMES) <= set(load_results(out).ids)  # readers get the raw names back


# ------------------------------------------------------------------- 5: predict
def test_predict_refuses_to_overwrite_the_runs_outputs(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _cluster(images, out, tmp_path / "c")[0] == 0
    before = _snapshot(out)
    for target in (out / "assignments.csv", out / "model" / "config.json", out / "summary.json"):
        code, _, err = run_main(["predict", out, images, "--out", target, "-q"])
        assert code == 1 and "never writes over a run's own outputs" in err
    assert _snapshot(out) == before
    assert run_main(["predict", out, images, "--out", out / "new.csv", "-q"])[0] == 0


# --------------------------------------------------------------------- 8: the report
def test_report_is_world_readable_and_has_no_absolute_paths(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _cluster(images, out, tmp_path / "c", "--report", "--map", "pca")[0] == 0
    umask = os.umask(0o22)
    os.umask(umask)
    for name in ("report.html", "map.png", "assignments.csv", "summary.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    text = (out / "report.html").read_text(encoding="utf-8")
    assert str(images) not in text and str(images.resolve()) not in text
    assert 'alt="plain.png"' in text


# ------------------------------------------------------------------- 10: atomic writes
def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = write_assignments(
        tmp_path / "a.csv", ["a", "b"], ["", ""], np.array([0, 1]), np.array([0.5, 0.5])
    )
    before = path.read_bytes()
    with pytest.raises(IndexError):  # fewer clusters than rows: fails half-way
        write_assignments(path, ["a", "b", "c"], ["", "", ""], np.array([0]), np.array([0.1]))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]


def test_leftovers_of_killed_runs_are_undone(tmp_path: Path) -> None:
    out = tmp_path / "res"
    with ResultsFolder(out) as staging:
        (staging / "a.txt").write_text("old")
    # killed between the two renames of a swap: the results sit under the temporary name
    out.rename(tmp_path / ".res.icbpl-previous")
    (tmp_path / ".res.icbpl-staging-99999").mkdir()  # killed while writing
    (tmp_path / ".res.icbpl-staging-99999" / "half.npy").write_bytes(b"x")
    with pytest.raises(PipelineError, match="--overwrite"):
        ResultsFolder(out).__enter__()
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    with ResultsFolder(out, overwrite=True) as staging:
        (staging / "b.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [".icbpl-manifest.json", "b.txt"]


def test_a_manifest_listing_outside_paths_is_not_a_manifest(tmp_path: Path) -> None:
    from icbpl.util.manifest import read_manifest

    out = tmp_path / "res"
    out.mkdir()
    (tmp_path / "thesis.tex").write_text("precious")
    manifest = {"format": "icbpl.results", "version": 1, "files": ["../thesis.tex"]}
    (out / ".icbpl-manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(out) is None
    with pytest.raises(PipelineError, match="icbpl did not write"):
        ResultsFolder(out, overwrite=True).__enter__()
    assert (tmp_path / "thesis.tex").read_text() == "precious"

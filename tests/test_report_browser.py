"""Load the report in a real headless chromium: screenshot, live DOM, console errors.

Skips when no chromium is installed (``scripts/install_browser.sh`` installs Debian's).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icbpl.report import write_report
from test_report import make_results, parse


def _find_chromium() -> str | None:
    for name in (os.environ.get("ICBPL_CHROMIUM"), "chromium", "chromium-browser"):
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


CHROMIUM = _find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not found on PATH (nor $ICBPL_CHROMIUM); run scripts/install_browser.sh "
    "as root to enable the headless-browser test of the HTML report",
)


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    env = {**os.environ, "HOME": str(tmp)}  # keep chromium's dot-files out of the real home
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, check=False)


def _dump_dom(tmp: Path, page: Path) -> tuple[str, str]:
    """The live DOM after load, and chromium's log (console messages included)."""
    proc = _chromium(tmp, "--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def _console_lines(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    run = make_results(root, features=True, per_cluster=(5, 4, 3, 3))
    return write_report(run, thumbs_per_cluster=3, borderline_per_cluster=2)


def test_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = _chromium(
        tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report.resolve().as_uri()
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        px = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert px.std() > 10.0  # a blank or failed page is uniform
    colours = np.unique(px.reshape(-1, 3).astype(np.uint8), axis=0)
    assert len(colours) > 50  # text, thumbnails and the map, not just a background
    if os.environ.get("ICBPL_KEEP_SHOT"):
        shutil.copy(shot, os.environ["ICBPL_KEEP_SHOT"])


def test_dom_after_load_has_every_cluster_and_no_errors(report: Path, tmp_path: Path) -> None:
    dom, log = _dump_dom(tmp_path, report)
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    assert 'data-errors="0"' in body.group(1)
    assert 'data-loaded="1"' in body.group(1)  # the inline script ran to the load event
    assert _console_lines(log) == []
    page = parse(dom)
    assert sorted(page.clusters) == [0, 1, 2, 3]
    assert page.scripts == 1
    assert page.img_srcs and all(s.startswith("data:image/") for s in page.img_srcs)
    for section in ("evaluation", "map", "overview", "clusters", "skipped", "run"):
        assert f'id="{section}"' in dom


def test_dom_has_the_feature_map_confidence_and_flags(report: Path, tmp_path: Path) -> None:
    dom, _ = _dump_dom(tmp_path, report)
    live = re.search(r'<section id="map">(.*?)</section>', dom, re.S)
    assert live is not None and 'src="data:image/png;base64,' in live.group(1)
    assert "of the encoder features" in live.group(1)
    sections = re.findall(r'<section class="cluster"[^>]*data-cluster="(\d+)"[^>]*>', dom)
    confident = re.findall(r'<section class="cluster"[^>]*data-confident="([\d.]+)"', dom)
    assert len(confident) == len(sections) == 4  # every non-empty cluster has its confidence
    assert all(0.0 <= float(c) <= 1.0 for c in confident)
    assert 'id="confidence-note"' in dom and "<b>Confident</b> is the share" in dom
    flags = re.findall(r'<p class="flag">([^<]+)</p>', dom)
    assert any(f.startswith("possibly split with cluster") for f in flags)
    table = re.search(r'<table id="sizes">(.*?)</table>', dom, re.S)
    assert table is not None and "<th>confident</th>" in table.group(1)
    assert table.group(1).count('<td class="conf">') == 4


def test_error_counter_and_csp_catch_injected_script(report: Path, tmp_path: Path) -> None:
    # A control: markup that escaping would have let through must be blocked and counted.
    bad = tmp_path / "bad.html"
    text = report.read_text(encoding="utf-8")
    bad.write_text(text.replace("</body>", "<script>alert(1)</script></body>"), "utf-8")
    dom, log = _dump_dom(tmp_path, bad)
    body = re.search(r'<body[^>]*data-errors="(\d+)"', dom)
    assert body is not None and int(body.group(1)) >= 1
    assert any("Content Security Policy" in ln for ln in _console_lines(log))

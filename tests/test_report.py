"""Tests of `icbpl.report`: a synthetic results folder with tiny images, hostile names included."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icbpl.core.metrics import evaluate
from icbpl.report import ReportError, load_results, write_report

EVIL = "<script>alert(1)</script>"
EVIL_CLASS = f"{EVIL} & co"


def make_results(
    root: Path,
    *,
    n_clusters: int = 4,
    per_cluster: tuple[int, ...] = (5, 4, 3, 0),
    labels: bool = True,
    metrics: bool = True,
    paths: bool = True,
    features: bool = False,
) -> Path:
    """Write a fake results folder under ``root / "run"``: images in ``root / "images"``.

    With ``features``, a feature cache ``root / "cache"`` holds (N, 16) features (clusters 0 and
    1 drawn from one blob, the others from their own) that ``summary.json`` names, and the run
    has ``feature_centroids.npy``.

    One image lives at a path containing ``<script>alert(1)</script>&`` (a folder named
    ``<script>alert(1)<`` holding ``script>&x.png``) and one file is not an image at all.
    Cluster ``c`` holds ``per_cluster[c]`` rows; row ``i`` has label ``i % 3``.
    """
    rng = np.random.default_rng(0)
    img_dir = root / "images"
    evil_dir = img_dir / "<script>alert(1)<"
    evil_dir.mkdir(parents=True)
    out = root / "run"
    out.mkdir()
    rows = []
    latent = []
    i = 0
    for c, n in enumerate(per_cluster):
        centre = rng.normal(size=8)
        for j in range(n):
            if i == 0:
                p = evil_dir / "script>&x.png"
            else:
                p = img_dir / f"img{i:03d}.png"
            if i == 1:
                p = img_dir / "broken.png"
                p.write_bytes(b"not an image")
            else:
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                Image.new("RGB", (20 + 3 * j, 16), colour).save(p)
            v = centre + 0.1 * rng.normal(size=8)
            latent.append(v / np.linalg.norm(v))
            row = {
                "id": p.relative_to(img_dir).as_posix(),
                "path": str(p) if paths else "",
                "cluster": c,
                "score": round(1.0 - 0.1 * j, 3),
            }
            if labels:
                row["label"] = i % 3
            rows.append(row)
            i += 1
    with (out / "assignments.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    np.save(out / "latent.npy", np.asarray(latent, dtype=np.float32))
    y = np.array([r["label"] for r in rows]) if labels else None
    pred = np.array([r["cluster"] for r in rows])
    summary = {
        "n_clusters": n_clusters,
        "cluster_sizes": np.bincount(pred, minlength=n_clusters).tolist(),
        "metrics": evaluate(y, pred) if labels and metrics else None,
        "class_names": ["cat", "dog & fox", EVIL_CLASS] if labels else None,
        "encoder": {"name": "resnet18_cifar", "supervised": False, "weights": "random"},
        "skipped": [[str(evil_dir / "script>&bad.jpg"), "not an image <b>"]],
        "timings": {"total_s": 1.5},
        "settings": {"k": n_clusters},
    }
    if features:
        summary["features"] = {"cache": {"features": str(_fake_cache(root, out, pred))}}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def _fake_cache(root: Path, out: Path, clusters: np.ndarray) -> Path:
    """A feature cache entry (``.npy`` + sidecar) for ``clusters``; clusters 0 and 1 share a
    blob. Writes ``feature_centroids.npy`` into the run ``out``."""
    from icbpl.core.novelty import feature_centroids

    rng = np.random.default_rng(1)
    centres = 3.0 * rng.normal(size=(int(clusters.max()) + 2, 16))
    blob = np.where(clusters == 1, 0, clusters)
    feats = (centres[blob] + 0.3 * rng.normal(size=(len(clusters), 16))).astype(np.float32)
    cache = root / "cache"
    cache.mkdir()
    path = cache / "features-0123456789abcdef01234567.npy"
    np.save(path, feats)
    path.with_suffix(".json").write_text(json.dumps({"rows_complete": [len(feats)]}))
    k = max(int(clusters.max()) + 1, 4)
    np.save(out / "feature_centroids.npy", feature_centroids(feats, clusters, k))
    return path


class _Sections(HTMLParser):
    """Collects, per cluster section, the number of <img> and placeholder tiles inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.clusters: dict[int, dict[str, int]] = {}
        self.current: int | None = None
        self.depth = 0
        self.scripts = 0
        self.img_srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.img_srcs.append(a.get("src") or "")
        if tag == "section":
            if self.current is not None:
                self.depth += 1
            elif "cluster" in (a.get("class") or "").split():
                self.current = int(a["data-cluster"] or -1)
                self.clusters[self.current] = {"img": 0, "ph": 0, "size": int(a["data-size"] or 0)}
        elif self.current is not None and tag == "img":
            self.clusters[self.current]["img"] += 1
        elif self.current is not None and tag == "div" and a.get("class") == "ph":
            self.clusters[self.current]["ph"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "section" and self.current is not None:
            if self.depth:
                self.depth -= 1
            else:
                self.current = None


def parse(html_text: str) -> _Sections:
    p = _Sections()
    p.feed(html_text)
    return p


def test_every_cluster_appears_with_capped_thumbnails(tmp_path: Path) -> None:
    run = make_results(tmp_path)
    path = write_report(run, thumbs_per_cluster=2, borderline_per_cluster=2, thumb_size=32)
    assert path == run / "report.html"
    page = parse(path.read_text(encoding="utf-8"))
    assert sorted(page.clusters) == [0, 1, 2, 3]
    for c, size in enumerate((5, 4, 3, 0)):
        tiles = page.clusters[c]["img"] + page.clusters[c]["ph"]
        assert page.clusters[c]["size"] == size
        assert tiles == min(size, 4), c
    assert page.clusters[0]["ph"] == 1  # broken.png: a placeholder, not a crash
    # Self-contained: every image is embedded, and map.png was written too.
    assert page.img_srcs and all(s.startswith("data:image/") for s in page.img_srcs)
    assert sum(s.startswith("data:image/png") for s in page.img_srcs) == 1
    with Image.open(run / "map.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    text = path.read_text(encoding="utf-8")
    assert "file:" not in text and "http://" not in text and "https://" not in text


def test_thumbnails_are_central_then_borderline(tmp_path: Path) -> None:
    run = make_results(tmp_path, per_cluster=(6,), n_clusters=1, labels=False)
    text = write_report(run, thumbs_per_cluster=2, borderline_per_cluster=2, map_method="pca")
    figs = re.findall(r"<figcaption>([^<]*)</figcaption>", text.read_text(encoding="utf-8"))
    assert figs[1:] == ["1.00", "0.90", "0.50", "0.60"]  # central by score, then lowest first


def test_names_are_escaped(tmp_path: Path) -> None:
    run = make_results(tmp_path)
    text = write_report(run, map_method="pca").read_text(encoding="utf-8")
    assert text.count("<script") == 1  # only the page's own error-counting script
    assert "alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;x.png" in text  # the file name
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text  # the class name
    assert "dog &amp; fox" in text and "not an image &lt;b&gt;" in text  # skipped reason
    assert "script>&" not in text


def test_evaluation_section(tmp_path: Path) -> None:
    run = make_results(tmp_path, metrics=False)
    res = load_results(run)
    assert res.labels is not None
    expected = evaluate(res.labels, res.clusters)
    text = write_report(run, map_method="pca").read_text(encoding="utf-8")
    assert "computed from the 12 labelled rows" in text
    assert f"<b>ACC</b> {expected['acc']:.4f}" in text
    assert f"<b>NMI</b> {expected['nmi']:.4f}" in text
    table = re.search(r'<table class="cm[^"]*" id="confusion">(.*?)</table>', text, re.S)
    assert table is not None
    rows = re.findall(r'<tr><th class="l"><a href="#cluster-(\d+)">', table.group(1))
    assert sorted(map(int, rows)) == [0, 1, 2, 3]  # every cluster, empty one included
    assert table.group(1).count('class="m"') == 3  # one matched cell per class


def test_confusion_rows_follow_hungarian_matching(tmp_path: Path) -> None:
    # Cluster 0 is mostly class 2, cluster 1 class 0, cluster 2 class 1: rows go 1, 2, 0.
    run = make_results(tmp_path, per_cluster=(3, 3, 3), n_clusters=3)
    csv_path = run / "assignments.csv"
    lines = csv_path.read_text().splitlines()
    fixed = [lines[0]]
    for k, line in enumerate(lines[1:]):
        parts = line.split(",")
        parts[-1] = str([2, 0, 1][k // 3])
        fixed.append(",".join(parts))
    csv_path.write_text("\n".join(fixed) + "\n")
    text = write_report(run, map_method="pca").read_text(encoding="utf-8")
    table = re.search(r'id="confusion">(.*?)</table>', text, re.S)
    assert table is not None
    assert re.findall(r'href="#cluster-(\d+)"', table.group(1)) == ["1", "2", "0"]
    diag = re.findall(r'<td class="m"[^>]*>(\d+)</td>', table.group(1))
    assert diag == ["3", "3", "3"]


def test_array_dataset_uses_image_loader(tmp_path: Path) -> None:
    run = make_results(tmp_path, paths=False, per_cluster=(3, 2), n_clusters=2)
    text = write_report(run, map_method="pca").read_text(encoding="utf-8")
    page = parse(text)
    assert all(v["img"] == 0 for v in page.clusters.values())
    assert "pass image_loader" in text

    calls: list[int] = []

    def loader(i: int) -> np.ndarray:
        calls.append(i)
        if i == 4:
            return np.full((3, 10, 12), 0.5, dtype=np.float32)  # (C, H, W) floats
        return np.full((10, 12, 3), 40 * i, dtype=np.uint8)

    page = parse(write_report(run, map_method="pca", image_loader=loader).read_text())
    assert sorted(calls) == [0, 1, 2, 3, 4]
    assert page.clusters[0]["img"] == 3 and page.clusters[1]["img"] == 2
    jpegs = [s for s in page.img_srcs if s.startswith("data:image/jpeg;base64,")]
    assert len(jpegs) == 5


def test_many_clusters_are_capped(tmp_path: Path) -> None:
    sizes = tuple(1 + (c % 4) for c in range(30))
    run = make_results(tmp_path, per_cluster=sizes, n_clusters=30, labels=False)
    path = write_report(run, max_clusters=5, thumbs_per_cluster=1, borderline_per_cluster=0)
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert len(page.clusters) == 5
    assert all(v["size"] == 4 for v in page.clusters.values())  # the largest ones
    assert "25 smaller clusters not shown in detail" in text
    sizes_table = re.search(r'<table id="sizes">(.*?)</table>', text, re.S)
    assert sizes_table is not None and sizes_table.group(1).count("<tr>") == 31


def test_out_elsewhere_and_tsne_map(tmp_path: Path) -> None:
    run = make_results(tmp_path)
    out = tmp_path / "elsewhere" / "r.html"
    assert write_report(run, out=out, map_method="tsne") == out
    assert (out.parent / "map.png").is_file() and not (run / "report.html").exists()
    text = out.read_text(encoding="utf-8")
    assert "t-SNE of the trained latent space, all 12 images" in text
    assert "separate blobs here do not show that the clusters differ" in text
    assert "No confidence or flags: no encoder features (the run kept no feature cache" in text


def test_map_subsample_and_missing_latent(tmp_path: Path) -> None:
    run = make_results(tmp_path)
    text = write_report(run, map_method="pca", max_map_points=5).read_text(encoding="utf-8")
    assert "5 of 12 images" in text
    (run / "latent.npy").unlink()
    (run / "map.png").unlink()
    text = write_report(run).read_text(encoding="utf-8")
    assert "No map: latent.npy not found" in text and not (run / "map.png").exists()


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        write_report(tmp_path / "nope")
    run = make_results(tmp_path)
    with pytest.raises(ValueError, match="thumb_size=4"):
        write_report(run, thumb_size=4)
    with pytest.raises(ValueError, match="map_method='umap'"):
        write_report(run, map_method="umap")  # type: ignore[arg-type]
    np.save(run / "latent.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(ReportError, match=r"shape \(3, 2\) but assignments.csv has 12 rows"):
        write_report(run)
    (run / "assignments.csv").write_text("id,cluster\na,0\n")
    with pytest.raises(ReportError, match="lacks column"):
        write_report(run)


def test_thumbnail_is_resized_jpeg(tmp_path: Path) -> None:
    import base64

    run = make_results(tmp_path, per_cluster=(1,), n_clusters=1, labels=False)
    Image.new("RGB", (400, 200), "red").save(next((tmp_path / "images").rglob("*x.png")))
    page = parse(write_report(run, thumb_size=50, map_method="pca").read_text())
    raw = base64.b64decode(page.img_srcs[-1].split(",", 1)[1])
    with Image.open(io.BytesIO(raw)) as im:
        assert im.format == "JPEG" and im.size == (50, 25)


def test_partly_labelled_rows(tmp_path: Path) -> None:
    run = make_results(tmp_path, metrics=False)
    csv_path = run / "assignments.csv"
    lines = csv_path.read_text().splitlines()
    lines[1:4] = [ln.rsplit(",", 1)[0] + "," for ln in lines[1:4]]  # three rows without label
    csv_path.write_text("\n".join(lines) + "\n")
    res = load_results(run)
    assert res.labels is not None and (res.labels == -1).sum() == 3
    text = write_report(run, map_method="pca").read_text(encoding="utf-8")
    assert "computed from the 9 labelled rows" in text


def test_map_confidence_and_flags_from_cached_features(tmp_path: Path) -> None:
    from icbpl.core.neighbours import mine_neighbours
    from icbpl.report._quality import assess

    run = make_results(tmp_path, features=True, per_cluster=(5, 4, 3, 3))
    res = load_results(run)
    assert res.features is not None and res.features.shape == (15, 16)
    text = write_report(run, map_method="pca").read_text(encoding="utf-8")
    assert "PCA of the encoder features (first reduced to 50 principal components)" in text
    assert 'id="confidence-note"' in text and "No confidence or flags" not in text
    q = assess(res.features, res.clusters, 4, neighbours=mine_neighbours(res.features, 10))
    for c in range(4):
        section = re.search(rf'<section class="cluster" id="cluster-{c}"[^>]*>', text)
        assert section is not None
        assert f'data-confident="{q.confident[c]:.3f}"' in section.group(0)
        assert f'data-agreement="{q.agreement[c]:.3f}"' in section.group(0)
    # clusters 0 and 1 were drawn from one blob: flagged as a likely split, on both sections
    assert any({a, b} == {0, 1} for a, b, _ in q.split)
    section0 = text[text.index('id="cluster-0"') : text.index('id="cluster-1"')]
    section1 = text[text.index('id="cluster-1"') : text.index('id="cluster-2"')]
    assert '<p class="flag">possibly split with cluster 1:' in section0
    assert '<p class="flag">possibly split with cluster 0:' in section1
    # thumbnails are ranked by the feature-space margin
    caps = [float(x) for x in re.findall(r"<figcaption>(-?[\d.]+) ·", section0)]
    order = np.sort(q.margin[res.clusters == 0])[::-1]
    assert caps[: len(order)] == pytest.approx(np.round(order, 2).tolist(), abs=0.006)


def test_stale_or_missing_feature_cache_is_not_used(tmp_path: Path) -> None:
    run = make_results(tmp_path, features=True)
    cache = next((tmp_path / "cache").glob("*.npy"))
    feats = np.load(cache)
    np.save(cache, feats[::-1].copy())  # other rows: the run's centroids no longer match
    res = load_results(run)
    assert res.features is None and "no longer matches this run" in res.features_note
    text = write_report(run, map_method="pca").read_text(encoding="utf-8")
    assert "No encoder features (the feature cache no longer matches this run)" in text
    cache.unlink()
    assert "is gone" in load_results(run).features_note
    with pytest.raises(ReportError, match=r"features have shape \(3, 16\)"):
        load_results(run, features=feats[:3])
    given = load_results(run, features=feats)
    assert given.features is not None and given.features_note == "the encoder features given"


def test_k_choice_curve(tmp_path: Path) -> None:
    import base64

    run = make_results(tmp_path, per_cluster=(5, 4, 3), n_clusters=3)
    assert 'id="k-choice"' not in write_report(run, map_method="pca").read_text()  # integer k
    summary = json.loads((run / "summary.json").read_text())
    message = "k=3 (best candidates 3, 4, 2); tried k = 2..5"
    summary["k_choice"] = {
        "scores": {"2": 0.05, "3": 0.12, "4": 0.1, "5": 0.02},
        "message": message,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    text = write_report(run, map_method="pca").read_text(encoding="utf-8")
    fig = re.search(
        r'<figure class="map" id="k-curve"><img src="([^"]+)"[^>]*><figcaption>([^<]*)', text
    )
    assert fig is not None and message in fig.group(2) and "k=3 used" in fig.group(2)
    raw = base64.b64decode(fig.group(1).split(",", 1)[1])
    with Image.open(io.BytesIO(raw)) as im:
        px = np.asarray(im.convert("RGB"))
    red = np.all(px == (214, 39, 40), axis=2)
    cols = np.flatnonzero(red.sum(axis=0) > 100)  # the chosen k's vertical line
    assert len(cols) == 1 and abs(cols[0] - (48 + (3 - 2) / 3 * (640 - 64))) <= 1


def test_title_names_the_final_folder_when_written_while_staged(tmp_path: Path) -> None:
    run = make_results(tmp_path, per_cluster=(2, 2), n_clusters=2)
    staged = run.rename(tmp_path / ".results.icbpl-staging-4242")
    text = write_report(staged, map_method="pca").read_text(encoding="utf-8")
    assert "<title>icbpl report: results</title>" in text and "staging" not in text

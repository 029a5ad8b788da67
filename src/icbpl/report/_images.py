"""Pictures for the report: thumbnails as data URIs, cluster colours, the 2-D map as a PNG.

Everything is drawn with Pillow, so the report needs no plotting library.
"""

from __future__ import annotations

import base64
import colorsys
import contextlib
import io
import logging
import re
import sys
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from icbpl.data import open_image, to_rgb_array

logger = logging.getLogger(__name__)

MapMethod = Literal["tsne", "pca"]

# matplotlib's tab20, reordered so that the first ten are the strong tab10 colours.
_TAB20 = (
    "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf "
    "aec7e8 ffbb78 98df8a ff9896 c5b0d5 c49c94 f7b6d2 c7c7c7 dbdb8d 9edae5"
).split()


def cluster_colour(c: int) -> tuple[int, int, int]:
    """A distinct RGB colour for cluster ``c``: tab20 first, then golden-ratio hues."""
    if c < len(_TAB20):
        h = _TAB20[c]
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    hue = (c * 0.618033988749895) % 1.0
    sat = (0.85, 0.55, 0.7)[c % 3]
    val = (0.8, 0.65, 0.95)[(c // 3) % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return round(r * 255), round(g * 255), round(b * 255)


def css_colour(c: int) -> str:
    """`cluster_colour` as a CSS hex colour."""
    return "#{:02x}{:02x}{:02x}".format(*cluster_colour(c))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    """``data:`` URI holding ``data`` base64-encoded."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def array_to_image(value: Any) -> Image.Image:
    """RGB Pillow image from an ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` array (C in 1, 3, 4).

    uint8 is taken as is, floats are read as [0, 1]; a CPU torch tensor works too.

    Raises:
        ValueError: for other shapes.
    """
    a = np.asarray(value)
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(
            f"image_loader should return an (H, W), (H, W, C) or (C, H, W) array with C in "
            f"1, 3, 4; got shape {a.shape}"
        )
    if np.issubdtype(a.dtype, np.floating):
        a = np.rint(np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0)
    a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 4:
        return Image.fromarray(to_rgb_array(Image.fromarray(a, mode="RGBA")))
    return Image.fromarray(a).convert("RGB")


def load_image_file(path: str, size: int) -> Image.Image:
    """Open an image file as RGB, decoding JPEGs at reduced scale when ``size`` allows it.

    Uses the same guards and colour handling as `icbpl.data.ImageFolder` (pixel limit, EXIF
    orientation, alpha composited on white).
    """
    with open_image(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (size, size))
        im.load()
        return Image.fromarray(to_rgb_array(ImageOps.exif_transpose(im)))


def thumbnail_uri(img: Image.Image, size: int, quality: int = 80) -> str:
    """Resize ``img`` to fit a ``size`` square (aspect kept) and return a JPEG data URI."""
    thumb = img.convert("RGB")
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=quality)
    return data_uri(buf.getvalue(), "image/jpeg")


def make_thumbnail(
    row: int,
    path: str,
    size: int,
    image_loader: Callable[[int], np.ndarray] | None,
) -> tuple[str | None, str | None]:
    """``(data_uri, None)`` for row ``row``, or ``(None, reason)`` when it cannot be shown.

    ``image_loader`` (given row indices) wins over ``path``; failures are logged, never raised.
    """
    try:
        if image_loader is not None:
            img = array_to_image(image_loader(row))
        elif path:
            img = load_image_file(path, size)
        else:
            return None, "no image path"
        return thumbnail_uri(img, size), None
    except Exception as exc:  # a report must survive an unreadable or vanished image
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("no thumbnail for row %d (%s): %s", row, path or "array", reason)
        return None, reason


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` rows (all of them when few enough)."""
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False))


class _TsneProgress(io.TextIOBase):
    """Stands in for stdout while scikit-learn's t-SNE runs with ``verbose=2``: moves a tqdm
    bar to each ``[t-SNE] Iteration N`` line it prints (every 50 iterations)."""

    def __init__(self, bar: Any) -> None:
        super().__init__()
        self.bar = bar

    def write(self, text: str) -> int:
        """Advance the bar to the last iteration mentioned in ``text``."""
        for m in _ITERATION.finditer(text):
            self.bar.update(max(0, min(int(m.group(1)), self.bar.total) - self.bar.n))
        return len(text)


_ITERATION = re.compile(r"\[t-SNE\] Iteration (\d+)")
#: Iterations of the t-SNE optimisation (scikit-learn's default).
TSNE_ITERATIONS = 1000


def project_2d(
    x: np.ndarray, method: MapMethod, seed: int, *, progress: bool = False
) -> np.ndarray:
    """``(n, 2)`` float64 map of the rows of ``x`` by t-SNE or PCA (scikit-learn).

    Rows are projected on their first 50 principal components first. t-SNE falls back to PCA
    below 5 points; its perplexity is capped at ``(n - 1) / 3``. ``progress`` shows a bar with
    an ETA over t-SNE's iterations on stderr.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from tqdm.auto import tqdm

    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    n = x.shape[0]
    if x.shape[1] < 2:
        x = np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    if n < 2:
        return np.zeros((n, 2))
    if x.shape[1] > 50 and n > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x).astype(np.float32)
    if method == "pca" or n < 5:
        return np.asarray(PCA(n_components=2, random_state=seed).fit_transform(x), np.float64)
    perplexity = float(min(30.0, (n - 1) / 3.0))
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        random_state=seed,
        max_iter=TSNE_ITERATIONS,
        verbose=2 if progress else 0,
    )
    bar = tqdm(
        total=TSNE_ITERATIONS, desc=f"map: t-SNE of {n} points", unit="it", disable=not progress
    )
    with bar, contextlib.redirect_stdout(_TsneProgress(bar) if progress else sys.stdout):
        xy = tsne.fit_transform(x)
        bar.update(bar.total - bar.n)  # it may stop early once converged
    return np.asarray(xy, dtype=np.float64)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_map(
    xy: np.ndarray,
    clusters: np.ndarray,
    sizes: np.ndarray,
    *,
    width: int = 960,
    height: int = 720,
    seed: int = 0,
) -> bytes:
    """PNG of the points ``xy`` coloured by cluster, with cluster numbers at their medians and a
    legend (cluster and its full size from ``sizes``) for up to 30 clusters."""
    n_clusters = len(sizes)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    legend = 0 < n_clusters <= 30
    plot_w = width - (130 if legend else 0)
    pad = 24
    if len(xy):
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        scale = min((plot_w - 2 * pad) / span[0], (height - 2 * pad) / span[1])
        offset = np.array([plot_w, height]) / 2 - (lo + hi) / 2 * scale
        pix = xy * scale + offset
        pix[:, 1] = height - pix[:, 1]
        r = 3 if len(xy) <= 2000 else 2
        order = np.random.default_rng(seed).permutation(len(xy))  # no cluster painted last
        for i in order:
            x, y = pix[i]
            draw.ellipse((x - r, y - r, x + r, y + r), fill=cluster_colour(int(clusters[i])))
        if n_clusters <= 60:
            font = _font(14)
            for c in np.unique(clusters):
                mx, my = np.median(pix[clusters == c], axis=0)
                draw.text(
                    (mx, my),
                    str(int(c)),
                    fill="black",
                    font=font,
                    anchor="mm",
                    stroke_width=2,
                    stroke_fill="white",
                )
    if legend:
        font = _font(12)
        for c in range(n_clusters):
            y0 = 12 + c * 18
            draw.rectangle((plot_w + 8, y0, plot_w + 20, y0 + 12), fill=cluster_colour(c))
            draw.text((plot_w + 26, y0 - 1), f"{c} ({int(sizes[c])})", fill="black", font=font)
    draw.rectangle((0, 0, plot_w - 1, height - 1), outline=(200, 200, 200))
    return _png(img)


def render_curve(
    ks: list[int], scores: list[float], chosen: int, *, width: int = 640, height: int = 240
) -> bytes:
    """PNG line chart of ``scores`` against ``ks`` (e.g. choose_k's silhouette gap), the
    ``chosen`` k marked in red, with the k axis labelled at its ends and at ``chosen``."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = _font(12)
    left, right, top, bottom = 48, 16, 12, 28
    lo_k, hi_k = min(ks), max(ks)
    finite = [s for s in scores if np.isfinite(s)]
    lo_s, hi_s = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span_k, span_s = max(hi_k - lo_k, 1), (hi_s - lo_s) or 1.0

    def at(k: float, s: float) -> tuple[float, float]:
        x = left + (k - lo_k) / span_k * (width - left - right)
        return x, top + (hi_s - s) / span_s * (height - top - bottom)

    draw.rectangle((left, top, width - right, height - bottom), outline=(200, 200, 200))
    points = [at(k, s) for k, s in zip(ks, scores, strict=True) if np.isfinite(s)]
    if len(points) > 1:
        draw.line(points, fill=cluster_colour(0), width=2)
    for x, y in points:
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=cluster_colour(0))
    if chosen in ks and np.isfinite(scores[ks.index(chosen)]):
        x, y = at(chosen, scores[ks.index(chosen)])
        draw.line((x, top, x, height - bottom), fill=(214, 39, 40))
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), outline=(214, 39, 40), width=2)
    for k in sorted({lo_k, hi_k, chosen}):
        draw.text(
            (at(k, lo_s)[0], height - bottom + 4), f"k={k}", fill="black", font=font, anchor="mt"
        )
    for s, anchor in ((lo_s, "rb"), (hi_s, "rt")):
        draw.text((left - 4, at(lo_k, s)[1]), f"{s:.3f}", fill="black", font=font, anchor=anchor)
    return _png(img)

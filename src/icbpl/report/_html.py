"""HTML of the report: small pure functions from prepared data to escaped markup.

Every piece of text that comes from the data (file names, ids, class names, reasons, settings)
goes through `esc`. The page loads nothing: images are data URIs, and a Content-Security-Policy
allows only data: images, inline styles and the one inline script below (by its hash), so even
markup that slipped through escaping could not run or fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icbpl.report._images import css_colour

# Counts errors (script errors, failed resources, CSP violations) into <body data-errors> and
# marks the end of loading, so a headless browser's --dump-dom shows both.
_SCRIPT = (
    "(function(){var b=document.body;"
    "function f(){b.setAttribute('data-errors',String(+b.getAttribute('data-errors')+1));}"
    "window.addEventListener('error',f,true);"
    "window.addEventListener('unhandledrejection',f);"
    "document.addEventListener('securitypolicyviolation',f);"
    "window.addEventListener('load',function(){b.setAttribute('data-loaded','1');});})();"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 24px 48px;
color:#222;background:#fff}
h1{margin:16px 0 4px}h2{margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{margin:0 0 4px;font-size:16px}small,.note{color:#666}
table{border-collapse:collapse}td,th{padding:2px 6px;border:1px solid #e4e4e4;text-align:right}
th{background:#f6f6f6}td.l,th.l{text-align:left}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;
vertical-align:-1px}
.bar{display:inline-block;height:10px;background:#7aa6d6}
.metrics span{display:inline-block;margin-right:24px;font-size:18px}
.cluster{margin:12px 0;padding:10px 12px;border:1px solid #e4e4e4;border-radius:6px}
.row{display:flex;flex-wrap:wrap;align-items:flex-start;gap:6px;margin:6px 0}
.row>.lab{width:92px;color:#666;font-size:12px}
figure{margin:0;text-align:center;font-size:11px;color:#555}
figure img,figure .ph{display:block;object-fit:contain;background:#f2f2f2;border-radius:3px}
figure .ph{display:flex;align-items:center;justify-content:center;color:#999}
figcaption{max-width:var(--t);overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.scroll{overflow:auto;max-height:640px;max-width:100%;display:inline-block}
.cm td{min-width:28px}.cm.small{font-size:11px}.cm th{position:sticky;top:0}
.cm td.m{outline:2px solid #333;outline-offset:-2px}
.map img{max-width:100%;height:auto;border:1px solid #ddd}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:320px}
.flag{color:#a04000;margin:2px 0}.flag::before{content:"\\26A0  "}td.flags{color:#a04000}
"""


def esc(value: object) -> str:
    """HTML-escape ``str(value)`` for text and for double-quoted attributes."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Thumb:
    """One thumbnail: ``uri`` is a data URI, or ``None`` with the ``reason`` it is missing."""

    uri: str | None
    name: str
    score: float
    label: str | None = None
    reason: str | None = None
    score_name: str = "score"


@dataclass(frozen=True)
class ClusterView:
    """What one cluster's section shows."""

    index: int
    size: int
    mean_score: float
    central: list[Thumb] = field(default_factory=list)
    borderline: list[Thumb] = field(default_factory=list)
    majority: tuple[str, float] | None = None
    confident: float | None = None
    agreement: float | None = None
    flags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Confusion:
    """Counts of ``rows`` (cluster indices, Hungarian order) x ``classes``; ``matched[i]`` is the
    class column matched to row ``i``, or -1."""

    rows: list[int]
    classes: list[str]
    counts: np.ndarray
    matched: list[int]


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def thumb_html(t: Thumb, size: int) -> str:
    """A ``<figure>`` with the thumbnail (or a placeholder) and its score."""
    tip = f"{t.name}\n{t.score_name} {_fmt(t.score)}" + (f"\nclass {t.label}" if t.label else "")
    if t.uri is None:
        tip += f"\n{t.reason}"
        body = (
            f'<div class="ph" style="width:{size}px;height:{size}px" title="{esc(tip)}">n/a</div>'
        )
    else:
        body = (
            f'<img src="{t.uri}" width="{size}" height="{size}" alt="{esc(t.name)}" '
            f'title="{esc(tip)}">'
        )
    cap = _fmt(t.score, 2) + (f" · {t.label}" if t.label else "")
    return f'<figure style="--t:{size}px">{body}<figcaption>{esc(cap)}</figcaption></figure>'


def cluster_html(v: ClusterView, n_total: int, size: int, note: str | None) -> str:
    """One cluster's ``<section>``: header, size, majority class, central and borderline rows."""
    share = 100.0 * v.size / n_total if n_total else 0.0
    meta = []
    if v.confident is not None and np.isfinite(v.confident):
        meta.append(f"confident {100 * v.confident:.0f}%")
    if v.agreement is not None and np.isfinite(v.agreement):
        meta.append(f"neighbour agreement {100 * v.agreement:.0f}%")
    meta.append(f"mean latent score {_fmt(v.mean_score)}")
    if v.majority is not None:
        meta.append(f"majority class {v.majority[0]} ({100 * v.majority[1]:.0f}%)")
    parts = [
        f'<section class="cluster" id="cluster-{v.index}" data-cluster="{v.index}" '
        f'data-size="{v.size}"{_data_attrs(v)}>',
        f'<h3><span class="sw" style="background:{css_colour(v.index)}"></span>'
        f"Cluster {v.index} <small>{v.size} images ({share:.1f}%)</small></h3>",
    ]
    if v.size == 0:
        parts.append('<p class="note">empty cluster</p></section>')
        return "".join(parts)
    parts.append(f'<p class="note">{esc(" · ".join(meta))}</p>')
    parts.extend(f'<p class="flag">{esc(f)}</p>' for f in v.flags)
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    for label, thumbs in (("most central", v.central), ("borderline", v.borderline)):
        if thumbs:
            figs = "".join(thumb_html(t, size) for t in thumbs)
            parts.append(f'<div class="row"><span class="lab">{label}</span>{figs}</div>')
    parts.append("</section>")
    return "".join(parts)


def _data_attrs(v: ClusterView) -> str:
    out = ""
    if v.confident is not None and np.isfinite(v.confident):
        out += f' data-confident="{v.confident:.3f}"'
    if v.agreement is not None and np.isfinite(v.agreement):
        out += f' data-agreement="{v.agreement:.3f}"'
    if v.flags:
        out += f' data-flags="{len(v.flags)}"'
    return out


def _pct(x: float | None) -> str:
    return "" if x is None or not np.isfinite(x) else f"{100 * x:.0f}%"


@dataclass(frozen=True)
class QualityRows:
    """Per-cluster columns of the sizes table: confident share, agreement, flag words."""

    confident: np.ndarray
    agreement: np.ndarray
    flags: list[list[str]]


def sizes_html(sizes: np.ndarray, detailed: set[int], quality: QualityRows | None = None) -> str:
    """Table of every cluster's size with a bar (and, with ``quality``, its confident share,
    neighbour agreement and flags), linking to the detailed sections."""
    n = int(sizes.sum())
    top = int(sizes.max()) if len(sizes) else 0
    rows = []
    for c, s in enumerate(sizes.tolist()):
        name = f'<a href="#cluster-{c}">{c}</a>' if c in detailed else str(c)
        width = round(200 * s / top) if top else 0
        extra = ""
        if quality is not None:
            extra = (
                f'<td class="conf">{_pct(quality.confident[c])}</td>'
                f"<td>{_pct(quality.agreement[c])}</td>"
                f'<td class="l flags">{esc(", ".join(quality.flags[c]))}</td>'
            )
        rows.append(
            f'<tr><td class="l"><span class="sw" style="background:{css_colour(c)}"></span>'
            f"{name}</td><td>{s}</td><td>{100 * s / n if n else 0:.1f}%</td>"
            f'<td class="l"><span class="bar" style="width:{width}px"></span></td>{extra}</tr>'
        )
    head = '<th>confident</th><th>agreement</th><th class="l">flags</th>' if quality else ""
    return (
        '<div class="scroll"><table id="sizes"><tr><th class="l">cluster</th><th>size</th>'
        f'<th>share</th><th class="l"></th>{head}</tr>{"".join(rows)}</table></div>'
    )


def metrics_html(metrics: dict[str, float] | None, source: str) -> str:
    """ACC/NMI/ARI line, or an empty string without metrics."""
    if not metrics:
        return ""
    spans = "".join(
        f"<span><b>{esc(k.upper())}</b> {_fmt(v, 4)}</span>" for k, v in metrics.items()
    )
    return f'<div class="metrics" id="metrics">{spans}</div><p class="note">{esc(source)}</p>'


def confusion_html(cm: Confusion) -> str:
    """Clusters x classes table, each cell shaded by its share of the cluster's row."""
    head = "".join(f'<th title="{esc(c)}">{esc(c)}</th>' for c in cm.classes)
    body = []
    for i, c in enumerate(cm.rows):
        row = cm.counts[i]
        total = int(row.sum())
        cells = []
        for j, v in enumerate(row.tolist()):
            a = v / total if total else 0.0
            fg = "#fff" if a > 0.55 else "#222"
            cls = ' class="m"' if j == cm.matched[i] else ""
            style = f' style="background:rgba(31,119,180,{a:.3f});color:{fg}"' if v else ""
            cells.append(f"<td{cls}{style}>{v if v else ''}</td>")
        body.append(
            f'<tr><th class="l"><a href="#cluster-{c}">{c}</a></th>{"".join(cells)}'
            f"<td><b>{total}</b></td></tr>"
        )
    small = " small" if len(cm.classes) > 20 else ""
    return (
        f'<div class="scroll"><table class="cm{small}" id="confusion"><tr>'
        f'<th class="l">cluster \\ class</th>{head}<th>total</th></tr>{"".join(body)}</table></div>'
    )


def skipped_html(skipped: Sequence[tuple[str, str]], limit: int = 1000) -> str:
    """Table of skipped inputs (at most ``limit`` rows, then a count of the rest)."""
    if not skipped:
        return '<p class="note">No file was skipped.</p>'
    rows = "".join(
        f'<tr><td class="l">{esc(p)}</td><td class="l">{esc(r)}</td></tr>'
        for p, r in skipped[:limit]
    )
    more = (
        f'<p class="note">… and {len(skipped) - limit} more (see summary.json).</p>'
        if len(skipped) > limit
        else ""
    )
    return (
        f'<table id="skipped-list"><tr><th class="l">file</th><th class="l">reason</th></tr>'
        f"{rows}</table>{more}"
    )


def details_html(summary: dict[str, Any]) -> str:
    """Encoder, settings and timings of the run as escaped JSON in ``<details>`` blocks."""
    out = []
    for key in ("encoder", "settings", "timings"):
        if summary.get(key):
            text = json.dumps(summary[key], indent=2, sort_keys=True, default=str)
            out.append(f"<details><summary>{key}</summary><pre>{esc(text)}</pre></details>")
    return "".join(out)


def page_html(title: str, sections: Sequence[tuple[str, str, str]], header: str) -> str:
    """The whole document: ``sections`` are ``(id, heading, inner html)``."""
    body = "".join(
        f'<section id="{esc(sid)}"><h2>{esc(h)}</h2>{inner}</section>' for sid, h, inner in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f'<body data-errors="0" data-loaded="0"><script>{_SCRIPT}</script>'
        f"{header}{body}</body></html>\n"
    )

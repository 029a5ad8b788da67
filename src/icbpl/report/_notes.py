"""Explanatory pieces of the report page: the confidence/flags note, the k curve, flag words."""

from __future__ import annotations

from typing import Any

from icbpl.report._html import esc
from icbpl.report._images import data_uri, render_curve
from icbpl.report._quality import CONFIDENT_MARGIN, MIXED_AGREEMENT, SPLIT_SHARE, ClusterQuality

__all__ = ["flag_words", "k_choice_html", "quality_note"]


def quality_note(q: ClusterQuality | None, note: str) -> str:
    """The sentences that explain the confident share and the flags on the page."""
    if q is None:
        return (
            f'<p class="note">No confidence or flags: no encoder features ({esc(note)}). '
            "Re-run <code>icbpl cluster</code> with the feature cache kept.</p>"
        )
    return (
        f'<p class="note" id="confidence-note"><b>Confident</b> is the share of a cluster\'s '
        "images whose encoder features are closer to the cluster's average than to any other "
        f"cluster's average by at least {CONFIDENT_MARGIN} (cosine); on labelled photos, images "
        "that pass were assigned right far more often than those that do not "
        "(docs/BENCHMARKS.md, practitioner). <b>Agreement</b> is the share of an image's "
        f"{q.n_neighbours} nearest neighbours (by those features) in the same cluster. A "
        f"cluster is flagged <b>possibly mixed</b> below {100 * MIXED_AGREEMENT:.0f}% "
        "agreement, and two clusters <b>possibly split</b> when at least "
        f"{100 * SPLIT_SHARE:.0f}% of their neighbour links join one to the other. Flags are "
        "hints to look at, not verdicts: on labelled photos about two in three pointed at a "
        "truly mixed or overlapping cluster, and most such clusters went unflagged.</p>"
    )


def k_choice_html(summary: dict[str, Any]) -> str | None:
    """The curve of choose_k's scores with the chosen k (``--k auto`` runs only)."""
    choice = summary.get("k_choice")
    if not isinstance(choice, dict) or not isinstance(choice.get("scores"), dict):
        return None
    try:
        pairs = sorted((int(k), float(v)) for k, v in choice["scores"].items())
        chosen = int(summary.get("n_clusters") or 0)
    except (TypeError, ValueError):
        return None
    if len(pairs) < 2:
        return None
    png = render_curve([k for k, _ in pairs], [v for _, v in pairs], chosen)
    caption = (
        f"Label-free score of each candidate k (silhouette gap; higher is better), k={chosen} "
        f"used: {choice.get('message', '')}"
    )
    return (
        f'<figure class="map" id="k-curve"><img src="{data_uri(png, "image/png")}" '
        f'alt="score per k"><figcaption>{esc(caption)}</figcaption></figure>'
    )


def flag_words(q: ClusterQuality, c: int) -> list[str]:
    """Short flags of cluster ``c`` for the sizes table."""
    words = ["possibly mixed"] if c in q.mixed else []
    words += [f"possibly split with {b if a == c else a}" for a, b, _ in q.split if c in (a, b)]
    return words

"""Result tables that write themselves as they fill: CSV (every run), Markdown (mean ± std).

A :class:`ResultLog` belongs to one experiment. Rows are added per (group, method, seed); after
each finished seed the log rewrites ``OUT/STEM.csv``, ``OUT/STEM.md`` and the section
``bench-STEM`` of the docs file, so an interrupted run leaves its finished seeds behind, marked
**partial** with the seeds done, until :meth:`ResultLog.finish` marks it complete.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from icbpl_bench._context import BenchContext
from icbpl_bench._docs import git_rev, machine, mean_std, utc_now, write_section

__all__ = ["METRICS", "Column", "ResultLog", "Run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Column:
    """A numeric column of the Markdown table: ``values[key]`` as mean ± std."""

    key: str
    header: str
    digits: int = 3


METRICS = (Column("acc", "ACC"), Column("nmi", "NMI"), Column("ari", "ARI"))
SECONDS = Column("seconds", "seconds / run", 1)


@dataclass(frozen=True)
class Run:
    """One method, one seed, in one group (a dataset or a setting)."""

    group: str
    method: str
    seed: int
    values: dict[str, float]


@dataclass
class _Group:
    title: str
    seeds: tuple[int, ...]
    notes: list[str] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    skipped: str | None = None


class ResultLog:
    """The results of one experiment and the files they are written to.

    Args:
        context: the run's context (paths, quick or full, command).
        name: experiment name; files are ``context.stem(name)`` + ``.csv`` / ``.md``.
        title: heading of the section.
        columns: numeric columns of the Markdown table (``METRICS`` + ``SECONDS`` typically).
        intro: Markdown lines (settings) printed under the provenance lines.
    """

    def __init__(
        self,
        context: BenchContext,
        name: str,
        title: str,
        columns: Sequence[Column],
        intro: Sequence[str] = (),
    ) -> None:
        self.context = context
        self.name = name
        self.stem = context.stem(name)
        self.title = title + (" (quick)" if context.settings.quick else "")
        self.columns = tuple(columns)
        self.intro = list(intro)
        self.footer: list[str] = []
        self.runs: list[Run] = []
        self.images: list[tuple[Path, str]] = []
        self.groups: dict[str, _Group] = {}
        self.finished = False
        self.stopped: str | None = None
        own = [context.out_dir] + ([context.docs_file] if context.docs_file else [])
        self.commit = git_rev(ignore=own)
        self._start = time.perf_counter()
        self._started_at = utc_now()

    # ------------------------------------------------------------------ filling
    @property
    def csv_path(self) -> Path:
        """``OUT/STEM.csv``."""
        return self.context.out_dir / f"{self.stem}.csv"

    @property
    def md_path(self) -> Path:
        """``OUT/STEM.md``."""
        return self.context.out_dir / f"{self.stem}.md"

    def group(self, key: str, title: str, seeds: Sequence[int], notes: Sequence[str] = ()) -> None:
        """Declare a group (a sub-table) and the seeds it will run."""
        self.groups[key] = _Group(title, tuple(seeds), list(notes))

    def skip(self, key: str, title: str, reason: str) -> None:
        """Record that group ``key`` was skipped, and why (stated in the table)."""
        logger.warning("%s: skipping %s: %s", self.name, title, reason)
        self.groups[key] = _Group(title, (), skipped=reason)
        self.write()

    def add(self, group: str, method: str, seed: int, values: dict[str, float]) -> Run:
        """Add one run's numbers (not written until :meth:`seed_done`)."""
        if group not in self.groups:
            raise KeyError(f"group {group!r} was not declared with ResultLog.group()")
        run = Run(group, method, int(seed), {k: float(v) for k, v in values.items()})
        self.runs.append(run)
        logger.info(
            "%s | %s | %s | seed %d | %s",
            self.name,
            group,
            method,
            seed,
            " ".join(f"{k}={v:.4g}" for k, v in run.values.items()),
        )
        return run

    def seed_done(self, group: str, seed: int) -> None:
        """Mark ``seed`` of ``group`` finished and rewrite the files."""
        self.groups[group].done.append(int(seed))
        self.write()

    def add_image(self, path: Path, caption: str) -> None:
        """Show the image at ``path`` (under the out folder) in the Markdown."""
        self.images.append((Path(path), caption))

    def finish(self) -> None:
        """Mark the experiment complete and rewrite the files."""
        self.finished = True
        self.write()

    @contextlib.contextmanager
    def running(self) -> Iterator[ResultLog]:
        """Context manager: on an exception (Ctrl-C included), record it, write, re-raise."""
        try:
            yield self
        except BaseException as err:
            self.stopped = f"{type(err).__name__}: {err}".rstrip(": ")
            self.write()
            raise

    # ------------------------------------------------------------------- output
    @property
    def complete(self) -> bool:
        """Finished, and every declared group ran all its seeds."""
        return self.finished and all(
            g.skipped is not None or set(g.seeds) <= set(g.done) for g in self.groups.values()
        )

    def _table(self, group: str) -> list[str]:
        """Mean ± std per method over the group's finished seeds (the CSV has every run)."""
        done = set(self.groups[group].done)
        finished = [r for r in self.runs if r.group == group and r.seed in done]
        headers = ["method", *(c.header for c in self.columns), "runs"]
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for method in dict.fromkeys(r.method for r in finished):
            runs = [r for r in finished if r.method == method]
            cells = [method]
            for col in self.columns:
                vals = [r.values[col.key] for r in runs if col.key in r.values]
                vals = [v for v in vals if not math.isnan(v)]
                cells.append(mean_std(vals, col.digits))
            cells.append(str(len(runs)))
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def markdown(self, relative_to: Path) -> str:
        """The section's Markdown; image links are relative to the folder ``relative_to``."""
        wall = time.perf_counter() - self._start
        seeds = sorted({s for g in self.groups.values() for s in g.seeds})
        if self.complete:
            status = "complete"
        else:
            why = f"stopped by {self.stopped}" if self.stopped else "interrupted or still running"
            status = f"**partial** ({why}); the seeds done are listed per table"
        out = [
            f"## {self.title}\n",
            f"- command: `{self.context.command}`",
            f"- machine: {machine()}",
            f"- date: started {self._started_at}, written {utc_now()}; commit {self.commit}",
            f"- seeds: {seeds}; wall time {wall:.0f} s; status: {status}",
            *self.intro,
            "",
        ]
        for key, g in self.groups.items():
            out.append(f"### {g.title}\n")
            if g.skipped is not None:
                out += [f"Skipped: {g.skipped}", ""]
                continue
            out += [f"- {n}" for n in g.notes]
            if not set(g.seeds) <= set(g.done):
                out.append(f"- **partial**: seeds done {sorted(g.done)} of {list(g.seeds)}")
            out += ["", *self._table(key), ""]
        for path, caption in self.images:
            rel = os.path.relpath(path, relative_to)
            out += [f"![{caption}]({Path(rel).as_posix()})", "", f"*{caption}*", ""]
        out += self.footer
        return "\n".join(out).rstrip() + "\n"

    def write_csv(self) -> Path:
        """Every run as one CSV row: group, method, seed, then the values."""
        keys: dict[str, None] = {c.key: None for c in self.columns}
        for r in self.runs:
            for k in r.values:
                keys.setdefault(k, None)
        path = self.csv_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["group", "method", "seed", *keys])
            for r in self.runs:
                cells = [repr(r.values[k]) if k in r.values else "" for k in keys]
                writer.writerow([r.group, r.method, r.seed, *cells])
        tmp.replace(path)
        return path

    def write(self) -> list[Path]:
        """Rewrite the CSV, the Markdown file and the docs section; return their paths."""
        out_dir = self.context.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [self.write_csv()]
        tmp = self.md_path.with_name(f".{self.md_path.name}.tmp")
        tmp.write_text(self.markdown(out_dir))
        tmp.replace(self.md_path)
        paths.append(self.md_path)
        docs = self.context.docs_file
        if docs is not None:
            body = self.markdown(docs.parent)
            body += (
                f"\nFiles: `{self.csv_path.as_posix()}` (every run), `{self.md_path.as_posix()}`.\n"
            )
            paths.append(write_section(docs, f"bench-{self.stem}", body))
        return paths

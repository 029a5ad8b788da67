"""What every subcommand shares: errors, logging set-up, progress displays and printing."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from icbpl.model.progress import FitEvent

__all__ = [
    "CliError",
    "EpochProgress",
    "StageReporter",
    "cli_logging",
    "cli_wording",
    "expected_error",
    "one_line",
]

#: Stage names of `icbpl.pipeline` and what the CLI says while they run.
STAGE_TEXT = {
    "encoder": "loading the encoder",
    "images": "reading the images",
    "features": "extracting features",
    "choose_k": "choosing k without labels",
    "neighbours": "mining neighbours",
    "train": "training the ICBPL head",
    "finetune": "fine-tuning the encoder with the ICBPL head",
    "write": "writing the results",
    "report": "writing the report",
    "assign": "assigning clusters",
}


class CliError(Exception):
    """A fatal problem to report in one line (exit status 1)."""


def one_line(err: BaseException) -> str:
    """The error's message on one line (its type name when it has no message)."""
    text = " ".join(str(err).split())
    if isinstance(err, KeyError) and text.startswith("'"):
        text = f"missing key {text}"
    return text or type(err).__name__


_CREATE_ENCODER = re.compile(r"create_encoder\([^()]*?weights=(?:'([^']*)'|\.\.\.)\s*\)")
_WEIGHTS = re.compile(r"\bweights='([^']*)'")


def cli_wording(text: str) -> str:
    """``text`` with the library's Python hints put in command-line terms: a
    ``create_encoder(..., weights='FILE')`` or ``weights='FILE'`` hint becomes
    ``--weights FILE``."""
    text = _CREATE_ENCODER.sub(lambda m: f"--weights {m.group(1) or 'FILE'}", text)
    return _WEIGHTS.sub(lambda m: f"--weights {m.group(1)}", text)


def expected_error(err: BaseException) -> bool:
    """Whether ``err`` is a user-facing error whose message says what to do (no traceback hint)."""
    return isinstance(err, CliError | ValueError | OSError | ImportError | RuntimeError)


class _TqdmHandler(logging.Handler):
    """Writes records with ``tqdm.write`` so that they do not break progress bars."""

    def __init__(self, stream: TextIO, level: int) -> None:
        super().__init__(level)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        """Write the formatted record above any progress bar."""
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"icbpl: {record.levelname.lower()}: {msg}"
        return f"icbpl: {msg}"


class _ConsoleFilter(logging.Filter):
    """Records at ``level`` and up, plus info records the library marks for the screen
    (``extra={"console": True}``, e.g. that feature extraction resumes from the cache)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record is shown."""
        return record.levelno >= self.level or bool(getattr(record, "console", False))


@contextlib.contextmanager
def cli_logging(*, verbose: bool, quiet: bool, stream: TextIO | None = None) -> Iterator[None]:
    """Route the library's log records to stderr (warnings and the records marked
    ``console``; info with ``verbose``; errors only with ``quiet``) for the duration of a
    command, through tqdm so bars are not broken."""
    lib = logging.getLogger("icbpl")
    old_level, old_propagate = lib.level, lib.propagate
    lib.setLevel(logging.DEBUG if verbose else logging.INFO)
    lib.propagate = False
    level = logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    handler = _TqdmHandler(stream or sys.stderr, logging.INFO if not quiet else level)
    handler.addFilter(_ConsoleFilter(level))
    handler.setFormatter(_CliFormatter())
    lib.addHandler(handler)
    try:
        yield
    finally:
        lib.removeHandler(handler)
        lib.setLevel(old_level)
        lib.propagate = old_propagate


@contextlib.contextmanager
def log_file(path: Path, *, verbose: bool) -> Iterator[None]:
    """Also write the library's log records to ``path`` (overwritten) while the block runs."""
    lib = logging.getLogger("icbpl")
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    lib.addHandler(handler)
    try:
        yield
    except BaseException as err:  # the log records how the command ended
        record = lib.makeRecord(
            "icbpl.cli", logging.ERROR, __file__, 0, "failed: %s", (one_line(err),), None
        )
        handler.handle(record)
        raise
    finally:
        lib.removeHandler(handler)
        handler.close()


class EpochProgress:
    """A tqdm bar over training epochs, fed by the :class:`icbpl.model.progress.FitEvent` s of
    ``ICBPL.fit(progress=...)``: each head's start adds its epochs to the total, each epoch
    advances the bar."""

    def __init__(self, epochs: int | None, *, disable: bool) -> None:
        self.epochs = epochs
        self.disable = disable
        self._bar: Any = None

    @property
    def bar(self) -> Any:
        """The tqdm bar, shown from the first event on (no empty bar before training starts)."""
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.epochs, desc="training", unit="epoch", disable=self.disable)
        return self._bar

    def __call__(self, event: FitEvent) -> None:
        """Show one event of the fit."""
        if event.kind == "start":
            if self._bar is None:
                self.epochs = event.epochs  # the bar starts with it
            self.bar.total = self.bar.n + event.epochs
            self.bar.refresh()
            return
        postfix = {} if event.loss is None else {"loss": f"{event.loss:.3f}"}
        if event.score is not None:
            postfix["score"] = f"{event.score:.3f}"
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        """Close the bar (if one was shown)."""
        if self._bar is not None:
            self._bar.close()


class _AnnouncingStream:
    """Stands in for ``sys.stderr``: calls ``announce`` before the first write passes through
    (the extraction's progress bar, a warning)."""

    def __init__(self, stream: TextIO, announce: Any) -> None:
        self._stream = stream
        self._announce = announce

    def write(self, text: str) -> int:
        """Announce (once), then write ``text`` to the real stream."""
        self._announce()
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _FeaturesNews(logging.Handler):
    """While features are obtained: "extracting features ..." just before extraction shows
    anything on stderr, or "features from cache" when the cache holds them all (the
    ``"feature cache hit: %s"`` record of ``icbpl.features``)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.said = False
        self._stderr = sys.stderr
        sys.stderr = _AnnouncingStream(self._stderr, self._extracting)
        self._logger = logging.getLogger("icbpl.features")
        self._logger.addHandler(self)

    def _say(self, text: str) -> None:
        if not self.said:
            self.said = True
            print(f"icbpl: {text}", file=self.stream, flush=True)

    def _extracting(self) -> None:
        self._say(f"{STAGE_TEXT['features']} ...")

    def emit(self, record: logging.LogRecord) -> None:
        """On the cache-hit record: say that the features come from the cache."""
        if isinstance(record.msg, str) and record.msg.startswith("feature cache hit"):
            name = Path(str(record.args[0])).name if isinstance(record.args, tuple) else ""
            self._say(f"features from cache ({name})" if name else "features from cache")
        elif isinstance(record.msg, str) and record.msg.startswith("resuming feature"):
            self._extracting()

    def close(self) -> None:
        """Put ``sys.stderr`` back and stop listening."""
        if isinstance(sys.stderr, _AnnouncingStream):
            sys.stderr = self._stderr
        self._logger.removeHandler(self)
        super().close()


class StageReporter:
    """Callback for the pipeline's stages: a line per stage on stderr and the training bar."""

    def __init__(self, *, epochs: int | None, quiet: bool, stream: TextIO | None = None) -> None:
        self.epochs = epochs
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._progress: EpochProgress | None = None
        self._features: _FeaturesNews | None = None

    def __call__(self, stage: str) -> None:
        """Start ``stage``: end the previous one's display, announce this one (the features
        stage only once it is known whether they are extracted or read from the cache)."""
        self.close()
        if stage == "features" and not self.quiet:
            self._features = _FeaturesNews(self.stream)
            return
        if not self.quiet:
            print(f"icbpl: {STAGE_TEXT.get(stage, stage)} ...", file=self.stream, flush=True)
        if stage == "train":
            self._progress = EpochProgress(self.epochs, disable=self.quiet)

    def fit_progress(self, event: FitEvent) -> None:
        """``ICBPL.fit``'s progress events: the training bar of the train stage."""
        if self._progress is not None:
            self._progress(event)

    def note(self, text: str) -> None:
        """Show one line of news (e.g. the chosen k) as it happens."""
        if not self.quiet:
            print(f"icbpl: {text}", file=self.stream, flush=True)

    def close(self) -> None:
        """Remove the training bar and the features stage's watch, if any."""
        if self._features is not None:
            self._features.close()
            self._features = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None


def format_metrics(metrics: dict[str, float]) -> str:
    """``ACC 0.912  NMI 0.860  ARI 0.830``."""
    return "  ".join(f"{name.upper()} {metrics[name]:.3f}" for name in ("acc", "nmi", "ari"))


def print_skipped(skipped: list[Any], *, limit: int = 20, where: str = "summary.json") -> None:
    """List skipped inputs ``(path, reason)`` on stdout, at most ``limit`` of them."""
    if not skipped:
        return
    print(f"skipped {len(skipped)} file(s):")
    for path, reason in list(skipped)[:limit]:
        print(f"  {path}: {reason}")
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more (all listed in {where})")

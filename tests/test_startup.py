"""Start-up: ``import icbpl.cli``, ``--help``, argument errors and ``icbpl encoders`` load
neither torch nor scikit-learn (nor faiss)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

_CHECK = """
import sys
from icbpl.cli import main
code = main({argv!r})
heavy = sorted(m for m in ("torch", "sklearn", "faiss") if m in sys.modules)
print("CODE", code, "HEAVY", ",".join(heavy) or "-")
"""


def _fresh(argv: list[str]) -> str:
    code = textwrap.dedent(_CHECK).format(argv=argv)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_import_cli_does_not_import_torch() -> None:
    code = (
        "import sys, icbpl, icbpl.cli; "
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["cluster", "--help"], 0),
        (["cluster", "photos/", "--k", "zero"], 2),
        (["no-such-command"], 2),
        (["encoders"], 0),
    ],
)
def test_help_and_usage_errors_stay_light(argv: list[str], code: int) -> None:
    assert _fresh(argv) == f"CODE {code} HEAVY -"


def test_lazy_names_still_resolve() -> None:
    import icbpl

    assert icbpl.ICBPL.__name__ == "ICBPL"
    assert callable(icbpl.make_pedcc) and callable(icbpl.evaluate)
    assert {"ICBPL", "evaluate", "make_pedcc"} <= set(dir(icbpl))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = icbpl.nope  # type: ignore[attr-defined]

"""The documentation stays true: its Python examples run, and docs/CLI.md covers every option.

Every ```python block of README.md and docs/*.md runs on its own (a fresh namespace, in an empty
temporary working folder), so each one can be copied and run as it stands. A block opts out only
with a first line ``# not run: <reason>``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from icbpl.cli._parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"# not run: \S")


def python_blocks() -> list[tuple[str, int, str]]:
    """(file relative to the root, line of the block's first code line, code) of every block."""
    found = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            line = text.count("\n", 0, match.start(1)) + 1
            found.append((path.relative_to(ROOT).as_posix(), line, match.group(1)))
    return found


BLOCKS = python_blocks()


def test_the_docs_have_python_examples() -> None:
    files = {name for name, _, _ in BLOCKS}
    assert {"README.md", "docs/API.md", "docs/QUICKSTART.md"} <= files


@pytest.mark.parametrize(
    ("name", "line", "code"), BLOCKS, ids=[f"{name}:{line}" for name, line, _ in BLOCKS]
)
def test_python_example_runs(
    name: str, line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = code.lstrip().splitlines()[0] if code.strip() else ""
    if first.startswith("# not run"):
        assert NOT_RUN.match(first), "say why: '# not run: <reason>'"
        pytest.skip(first.removeprefix("# not run: "))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ICBPL_CACHE", str(tmp_path / "icbpl-cache"))  # never the user's cache
    # line numbers of errors point into the document
    exec(compile("\n" * (line - 1) + code, str(ROOT / name), "exec"), {"__name__": "__main__"})


# -------------------------------------------------------------------------------- CLI.md
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"docs/CLI.md has no section '## {heading}'"
    return match.group(1)


def _mentions(text: str, word: str) -> bool:
    """Whether a table row of ``text`` starts with ``word``, as ``| `--k K` |`` or
    ``| `-h`, `--help` |`` do."""
    pattern = rf"^\|\s*(?:`[^`|]*`,\s*)*`{re.escape(word)}(?=[ `])"
    return re.search(pattern, text, flags=re.M) is not None


def test_cli_reference_covers_every_subcommand_and_option() -> None:
    text = (ROOT / "docs" / "CLI.md").read_text(encoding="utf-8")
    parser = build_parser()
    top = _section(text, "`icbpl`")
    for action in parser._actions:
        for opt in action.option_strings:
            assert _mentions(top, opt), f"docs/CLI.md '## `icbpl`' does not document {opt}"
    subs = _subparsers(parser)
    shared = _section(text, "Options of every subcommand")
    common = set.intersection(
        *({o for a in p._actions for o in a.option_strings} for p in subs.values())
    )
    for opt in sorted(common):
        assert _mentions(shared, opt), f"docs/CLI.md: shared option {opt} is not documented"
    missing = []
    for name, sub in subs.items():
        section = _section(text, f"`icbpl {name}`")
        for action in sub._actions:
            words = action.option_strings or [str(action.metavar or action.dest)]
            for word in words:
                if word not in common and not _mentions(section, word):
                    missing.append(f"icbpl {name} {word}")
    assert not missing, f"docs/CLI.md does not document: {', '.join(missing)}"

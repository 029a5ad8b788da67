"""CSV cells safe to open in a spreadsheet (OWASP "CSV Injection"), reversibly."""

from __future__ import annotations

__all__ = ["FORMULA_STARTS", "neutralise_cell", "restore_cell"]

#: First characters that make spreadsheet programs read a cell as a formula (OWASP, "CSV
#: Injection"), and the quote that marks a neutralised cell.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(text: str) -> str:
    """``text`` with a ``'`` in front when it starts with a formula character or with ``'``.

    OWASP's advice against CSV injection; prefixing cells that start with ``'`` too makes it
    reversible: `restore_cell` strips exactly one leading ``'``.
    """
    return "'" + text if text.startswith((*FORMULA_STARTS, "'")) else text


def restore_cell(text: str) -> str:
    """The raw text of a cell written by `neutralise_cell`."""
    return text[1:] if text.startswith("'") else text

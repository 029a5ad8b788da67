"""icbpl: image clustering with pretrained encoders and PEDCC latent distribution optimisation.

The public names are imported on first use (module ``__getattr__``), so ``import icbpl`` and the
``icbpl`` command's ``--help`` and argument errors load neither torch nor scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icbpl.estimator import ICBPL
    from icbpl.metrics import evaluate
    from icbpl.pedcc import make_pedcc

__all__ = ["ICBPL", "evaluate", "make_pedcc"]
__version__ = "0.1.0"

_LAZY = {"ICBPL": "icbpl.estimator", "evaluate": "icbpl.metrics", "make_pedcc": "icbpl.pedcc"}


def __getattr__(name: str) -> Any:
    """Import ``ICBPL``, ``evaluate`` and ``make_pedcc`` from their modules on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'icbpl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

"""icbpl: image clustering with pretrained encoders and PEDCC latent distribution optimisation.

The public names are imported on first use (module ``__getattr__``), so ``import icbpl`` and the
``icbpl`` command's ``--help`` and argument errors load neither torch nor scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icbpl.core.metrics import evaluate
    from icbpl.core.pedcc import make_pedcc
    from icbpl.model.estimator import ICBPL

__all__ = ["ICBPL", "evaluate", "make_pedcc"]
__version__ = "0.1.0"

_LAZY = {
    "ICBPL": "icbpl.model.estimator",
    "evaluate": "icbpl.core.metrics",
    "make_pedcc": "icbpl.core.pedcc",
}


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

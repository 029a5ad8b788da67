"""icbpl: image clustering with pretrained encoders and PEDCC latent distribution optimisation."""

from __future__ import annotations

from icbpl.estimator import ICBPL
from icbpl.metrics import evaluate
from icbpl.pedcc import make_pedcc

__all__ = ["ICBPL", "evaluate", "make_pedcc"]
__version__ = "0.1.0"

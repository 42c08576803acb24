"""1-D loss curves whose gradients the SGD-path specs hand to ``sgd_path`` (§2.4.3).

Module-level functions, so a reproduction snippet can name them.
The grader sends a curve to a submission's worker by name (``__dl_ch2_curve__``); the
worker runs its own copy of this file, so it stays standard library only.
"""

from __future__ import annotations

#: The curves a worker may be asked for, by name.
CURVE_NAMES = ("square_grad", "local_global_grad")

#: Minima of ``local_global`` (roots of w**3 - 2 w + 0.3), to 1e-8.
LOCAL_MINIMUM = 1.33222074
GLOBAL_MINIMUM = -1.48396789


def square_grad(w: float) -> float:
    """The gradient of ``w ** 2``."""
    return 2.0 * w


def local_global_grad(w: float) -> float:
    """The gradient of ``w**4 / 4 - w**2 + 0.3 w``: a local minimum near 1.332, the global
    one near -1.484 (the story of figure 2.13)."""
    return w**3 - 2.0 * w + 0.3


for _name in CURVE_NAMES:
    globals()[_name].__dl_ch2_curve__ = _name  # type: ignore[attr-defined]

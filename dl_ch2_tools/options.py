"""The one error for a bad option value, wherever it is checked.

The main job (``validate_config``) and the benchmark (``run_bench``) check their options
themselves, before any work, and raise ``OptionError`` naming the command-line option; the
CLI turns it into its usage error (one line, exit 2), so no option is checked twice.
"""

from __future__ import annotations

__all__ = ["OptionError"]


class OptionError(ValueError):
    """A bad option value, found before any work; ``option`` is its command-line name.

    ``field``, where given, is the Python name (a ``TrainConfig`` field): the message names
    both, so a caller of the API and of the CLI each finds the name they used.
    """

    def __init__(self, option: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{field} ({option}): {message}" if field else f"{option}: {message}")
        self.option = option
        self.field = field
        self.reason = message

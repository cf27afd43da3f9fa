"""Exception types whose messages are shown to users verbatim (one line, naming the argument)."""

from __future__ import annotations


class BayesSMLMError(Exception):
    """Base class for errors the CLI reports as a single line without a traceback."""


class ConfigError(BayesSMLMError, ValueError):
    """An argument or configuration value is outside its allowed range.

    Parameters
    ----------
    argument : str
        Name of the offending argument as the user wrote it (``--frames``, ``camera.gain``).
    message : str
        What is allowed, e.g. ``"must be > 0 (got -1)"``.
    """

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(f"argument {argument}: {message}")

"""Exception types whose messages are shown to users verbatim (one line, naming the argument)."""

from __future__ import annotations


class BayesSMLMError(Exception):
    """Base class for errors the CLI reports as a single line without a traceback."""


class ConfigError(BayesSMLMError, ValueError):
    """An argument or configuration value is outside its allowed range.

    Parameters
    ----------
    argument : str
        The offending argument as the library knows it: a parameter name (``batch_size``,
        ``checkpoint``) or a task key (``camera.gain``). The command line shows it as the flag the
        user typed (``--batch-size``); the library never names flags.
    message : str
        What is allowed, e.g. ``"must be > 0 (got -1)"``.
    """

    def __init__(self, argument: str, message: str):
        self.argument = argument
        self.message = message
        super().__init__(f"argument {argument}: {message}")

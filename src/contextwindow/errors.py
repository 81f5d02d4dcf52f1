"""One exception hierarchy for everything contextwindow raises on bad input or bad state.

Catch :class:`ContextWindowError` to handle all of them; the subclasses also derive from the
built-in exception a caller would naturally expect (``ValueError``, ``KeyError``...).
"""

from __future__ import annotations


class ContextWindowError(Exception):
    """Base class of every error raised by contextwindow."""


class InvalidMessageError(ContextWindowError, ValueError):
    """A message (or conversation) is malformed: unknown role, wrong field types, bad JSON."""


class UnknownModelError(ContextWindowError, KeyError):
    """A model or encoding name that contextwindow cannot map to a tokenizer."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class BudgetExceededError(ContextWindowError):
    """The parts that must be kept (system prompt, pinned messages, newest user turn) do not fit.

    Raised instead of silently returning an over-budget context.
    """

    def __init__(self, message: str, *, budget: int, required: int, pinned: int) -> None:
        super().__init__(message)
        self.budget = budget
        self.required = required
        self.pinned = pinned


class StoreError(ContextWindowError):
    """A store could not read or write a session (I/O, corrupt data, bad session id)."""


class SummarizerError(ContextWindowError):
    """A summarizer failed or timed out; the memory it was summarizing is unchanged."""


class ModelError(ContextWindowError):
    """A model cannot be loaded, or does not support the requested operation (e.g. no RoPE)."""


class ConfigError(ContextWindowError, ValueError):
    """An option is out of range or inconsistent (unknown method, factor <= 1, window < 1...)."""


class ResourceError(ContextWindowError):
    """A request needs more memory (or another resource) than this machine allows."""


class MissingExtraError(ContextWindowError, ImportError):
    """A feature's optional dependencies are not installed; the message names the extra that
    installs them, in plain text (``pip install 'contextwindow[EXTRA]'``)."""

    def __init__(self, what: str, extra: str, cause: BaseException | str) -> None:
        super().__init__(f"{what} needs the {extra} extra ({cause}); "
                         f"pip install 'contextwindow[{extra}]'")
        self.extra = extra

"""The project's user-error types.

A ``UserError`` is bad input or a state the user can fix (an unknown name, a setting
out of range, a run directory held by another process, a corrupt file); its message
names the thing and the fix. The CLI prints such errors on one line and exits 2.
Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "ConfigError"]


class UserError(Exception):
    """Bad input or a fixable state; the message says what and how to fix it."""


class ConfigError(UserError, ValueError):
    """A setting that is unknown, of the wrong type, out of its range or inconsistent."""

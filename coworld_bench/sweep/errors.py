"""The sweep's error: a request it refuses, before anything starts."""

from __future__ import annotations

from coworld_bench.errors import UserError

__all__ = ["SweepError"]


class SweepError(UserError):
    """A sweep that cannot start as asked; the message says why and what to do."""

"""torch.compile of an agent's hot loops, with a fallback to eager execution."""

from __future__ import annotations

from typing import Callable

import torch

from coworld_bench.algorithm import compiled_calls_run_eagerly

Losses = dict[str, torch.Tensor]
Scales = dict[str, float]


# Compilation (the GPU path) ------------------------------------------------------------

class Compiled:
    """``torch.compile(fn)`` with static shapes, falling back to ``fn`` (once, with a
    warning) if compilation fails; calls with per-step prior heads (Offline DV2's
    random draws, which would recompile every call) run eagerly."""

    def __init__(self, fn: Callable, backend: str, name: str):
        self.eager, self.name, self.failed = fn, name, False
        self.compiled = torch.compile(fn, backend=backend, dynamic=False)

    def __call__(self, *args, **kwargs):
        if self.failed or compiled_calls_run_eagerly() or kwargs.get("heads") is not None \
                or kwargs.get("all_heads"):
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly
            import warnings

            warnings.warn(f"torch.compile of {self.name} failed ({type(e).__name__}: "
                          f"{str(e)[:200]}); running it eagerly.")
            self.failed = True
            return self.eager(*args, **kwargs)



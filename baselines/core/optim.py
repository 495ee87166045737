"""One update rule for every torch algorithm of the zoo: ``optimize`` runs a loss
function's named terms under a precision, checks them against their scales, and
steps each part's optimiser (clipped where the part says so)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import nn

from baselines.core.nets import adam

Losses = dict[str, torch.Tensor]
Scales = dict[str, float]


# Optimisation: one place for every update ------------------------------------------

class Part:
    """The optimiser of one part of an algorithm: a torch optimiser over ``params``
    and its clip rule (a global gradient-norm clip, or None: no clipping and no
    ``part/grad_norm`` metric). A bare torch optimiser given to ``optimize`` is a part
    without a clip."""

    def __init__(self, params, opt: torch.optim.Optimizer, clip: float | None = None):
        self.params = [p for p in params]
        self.opt = opt
        self.clip = clip

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)


class Optimizer(Part):
    """DreamerV2's part: Adam (eps 1e-5) with its global-norm clip and decoupled weight
    decay theta <- (1 - wd) theta per update (AdamW with wd / lr)."""

    def __init__(self, params, lr: float, clip: float, weight_decay: float = 0.0):
        params = [p for p in params]
        super().__init__(params, adam(params, lr=lr, eps=1e-5,
                                      weight_decay=weight_decay / lr if weight_decay else 0.0),
                         clip)


def precision(cfg, device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when ``cfg.precision == 16``; otherwise no change, so
    an autocast the caller opened (e.g. ``torch.autocast("cpu", torch.bfloat16)`` in
    the tests, the same code path as CUDA's) stays in force."""
    if torch.device(device).type == "cuda" and cfg.precision == 16:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


LossFn = Callable[..., tuple[Losses, Scales, Any]]


def trained_parts(term: str) -> list[str]:
    """The parts a term trains: ``part/name`` trains ``part``; ``a+b/name`` (a loss
    through a shared trunk, e.g. DrQ's critic loss into its encoder) trains both."""
    return term.split("/")[0].split("+")


def optimize(optimizers: dict[str, Part | torch.optim.Optimizer], loss_fn: LossFn, *args,
             precision: contextlib.AbstractContextManager | None = None, **kwargs
             ) -> tuple[dict[str, torch.Tensor], Any]:
    """One update, the only way any torch algorithm of the zoo steps an optimiser: runs
    ``loss_fn(*args, **kwargs) -> (losses, scales, aux)`` under ``precision`` (a
    context manager, e.g. ``precision(cfg, device)``; default: none), then one backward
    pass through sum_k scales[k] * losses[k] and a step of each trained part's
    optimiser, clipped where the part has a clip. Every term needs a scale and known
    parts (``trained_parts``), every scale of a part being trained needs its term (a
    forgotten term is an error, not a silent zero), and every term is a float32
    scalar. Returns the metrics (the terms and ``part/grad_norm`` of clipped parts,
    detached tensors) and ``aux``."""
    with precision or contextlib.nullcontext():
        losses, scales, aux = loss_fn(*args, **kwargs)
    parts = sorted({part for key in losses for part in trained_parts(key)})
    unknown = [p for p in parts if p not in optimizers]
    missing = [k for k in losses if k not in scales]
    unused = [k for k in scales if set(trained_parts(k)) & set(parts) and k not in losses]
    if unknown or missing or unused:
        raise ValueError(f"Loss terms and scales disagree: parts without an optimiser "
                         f"{unknown}, terms without a scale {missing}, scales without a term "
                         f"{unused} (optimisers: {sorted(optimizers)}).")
    for key, value in losses.items():
        if value.dim() or value.dtype != torch.float32:
            raise TypeError(f"Loss term {key} must be a float32 scalar, got {value.dtype} "
                            f"{tuple(value.shape)}.")
    total = sum(scales[k] * v for k, v in losses.items() if scales[k] != 0)
    # A bare torch optimiser is used as it is (a part without a clip): no wrapper per call.
    stepped = {p: optimizers[p].opt if isinstance(optimizers[p], Part) else optimizers[p]
               for p in parts}
    for part in parts:
        stepped[part].zero_grad(set_to_none=True)
    metrics = {k: v.detach() for k, v in losses.items()}
    if torch.is_tensor(total) and total.requires_grad:
        total.backward()
    for part in parts:
        owner = optimizers[part]
        if isinstance(owner, Part) and owner.clip is not None:
            metrics[f"{part}/grad_norm"] = nn.utils.clip_grad_norm_(owner.params, owner.clip)
        stepped[part].step()
    return metrics, aux

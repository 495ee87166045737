"""Pure functions of the DreamerV2 family, unit-tested against hand-computed values:
lambda-returns, KL terms with balancing and free nats, ensemble disagreement, EWC's
penalty and diagonal Fisher."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


Losses = dict[str, torch.Tensor]
Scales = dict[str, float]


# Pure functions (unit-tested against hand-computed values) -------------------------

def lambda_return(reward: torch.Tensor, value: torch.Tensor, discount: torch.Tensor,
                  lam: float) -> torch.Tensor:
    """TD(lambda) targets along an imagined trajectory s_0 .. s_H (DreamerV2 eq. 4).

    Args:
      reward: (H, ...) r_{t+1}, the reward of reaching s_{t+1}.
      value: (H+1, ...) v(s_0) .. v(s_H).
      discount: (H, ...) gamma_{t+1} = gamma x (predicted continuation of s_{t+1}).
    Returns:
      (H, ...) R_t = r_{t+1} + gamma_{t+1} ((1 - lam) v(s_{t+1}) + lam R_{t+1}),
      with R_H = v(s_H).
    """
    returns = []
    acc = value[-1]
    for t in reversed(range(reward.shape[0])):
        acc = reward[t] + discount[t] * ((1 - lam) * value[t + 1] + lam * acc)
        returns.append(acc)
    return torch.stack(returns[::-1])


def categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of independent categoricals, summed over variables: (..., S, C) -> (...)."""
    p_log = F.log_softmax(p_logits, -1)
    q_log = F.log_softmax(q_logits, -1)
    return (p_log.exp() * (p_log - q_log)).sum((-2, -1))


def gaussian_kl(p_mean, p_std, q_mean, q_std) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over dimensions."""
    var_ratio = (p_std / q_std) ** 2
    t1 = ((p_mean - q_mean) / q_std) ** 2
    return 0.5 * (var_ratio + t1 - 1 - torch.log(var_ratio)).sum(-1)


def kl_balance_loss(kl_fn: Callable, post: dict, prior: dict, balance: float, free: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamerV2's balanced KL with free nats (averaged before the free-nats floor).

    loss = balance * max(mean KL(sg(post) || prior), free)
         + (1 - balance) * max(mean KL(post || sg(prior)), free)
    The first term trains the prior towards the posterior, the second regularises
    the posterior. Returns (loss, mean KL value).
    """
    sg = lambda d: {k: v.detach() for k, v in d.items()}  # noqa: E731
    train_prior = kl_fn(sg(post), prior)
    train_post = kl_fn(post, sg(prior))
    # clamp with a Python number: no tensor copied to the device inside the update.
    loss = (balance * train_prior.mean().clamp(min=free)
            + (1 - balance) * train_post.mean().clamp(min=free))
    return loss, train_prior.mean().detach()


def ensemble_disagreement(probs: torch.Tensor) -> torch.Tensor:
    """Offline DV2's uncertainty u: mean over the K heads of the Frobenius distance
    between each head's (stoch x classes) probabilities and the heads' mean.
    ``probs``: (K, ..., S, C) -> (...)."""
    mean = probs.mean(0, keepdim=True)
    return torch.sqrt(((probs - mean) ** 2).sum((-2, -1))).mean(0)


def ewc_penalty(params: dict[str, torch.Tensor], anchors: dict[str, torch.Tensor],
                fisher: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """lam / 2 * sum_i F_i (theta_i - theta*_i)^2 (elastic weight consolidation)."""
    total = sum((fisher[k] * (params[k] - anchors[k]) ** 2).sum() for k in fisher)
    return 0.5 * lam * total


def diagonal_fisher(params: dict[str, torch.Tensor], sample_losses) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher, F_i = mean over samples s of (d l_s / d theta_i)^2:
    each sample's negative log-likelihood ``l_s`` (scalars from the iterable
    ``sample_losses``) differentiated on its own, its gradient squared, then averaged.
    (The square of a batch-mean gradient is not this: it is ~F / N at batch N.) The
    brute-force form, one backward pass per sample; ``vmap_diagonal_fisher`` computes
    the same for a module applied row by row."""
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    n = 0
    for loss in sample_losses:
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (k, _), g in zip(params.items(), grads):
            if g is not None:
                fisher[k] += g.detach() ** 2
        n += 1
    return {k: v / max(n, 1) for k, v in fisher.items()}


def vmap_diagonal_fisher(module: nn.Module, row_loss: Callable[..., torch.Tensor],
                         inputs: list[tuple[torch.Tensor, ...]], chunk_size: int = 1024
                         ) -> dict[str, torch.Tensor]:
    """``diagonal_fisher`` of ``module``'s trainable parameters where every row of the
    ``inputs`` tensors is one sample: ``row_loss(forward, *row)`` is that sample's
    negative log-likelihood, ``forward`` the module called with the parameters being
    differentiated. Per-sample gradients come from ``torch.func.vmap`` over
    ``torch.func.grad`` (in chunks of ``chunk_size`` rows), not from a loop.
    ``inputs``: one tuple of (N, ...) tensors per batch; the mean is over all rows."""
    from torch.func import functional_call, grad, vmap

    params = {k: p.detach() for k, p in module.named_parameters() if p.requires_grad}

    def one(theta, *row):
        forward = lambda x: functional_call(module, theta, (x[None],))[0]  # noqa: E731
        return row_loss(forward, *row)

    per_sample = vmap(grad(one), in_dims=(None, *([0] * len(inputs[0]))), chunk_size=chunk_size)
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    n = 0
    for tensors in inputs:
        grads = per_sample(params, *tensors)
        for k in fisher:
            fisher[k] += (grads[k] ** 2).sum(0)
        n += tensors[0].shape[0]
    return {k: v / max(n, 1) for k, v in fisher.items()}


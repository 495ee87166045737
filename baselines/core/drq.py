"""The DrQ-v2-style heads of the model-free zoo (V-D4RL ``drqbc/drqv2.py``): DrQ-v2's
initialisation, its truncated-normal action distribution, the actor and twin critic
with their trunks, and the TD, TD3+BC and CQL losses."""

from __future__ import annotations


import torch
from torch import nn

from baselines.core.nets import mlp


# Pieces ------------------------------------------------------------------------------

def orthogonal_init(module: nn.Module) -> None:
    """DrQ-v2's initialisation: orthogonal weights (conv: ReLU gain), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight, nn.init.calculate_gain("relu"))
        nn.init.zeros_(module.bias)




class TruncatedNormal:
    """DrQ-v2's action distribution: a normal around ``loc`` whose samples have their
    noise clipped at ``clip`` and are then clamped into (-1, 1) with a straight-through
    gradient (the gradient of the unclamped sample)."""

    def __init__(self, loc: torch.Tensor, scale: float, eps: float = 1e-6):
        self.loc, self.scale, self.eps = loc, scale, eps

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def sample(self, clip: float | None, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        noise = torch.randn(self.loc.shape, generator=generator).to(self.loc) * self.scale
        if clip is not None:
            noise = noise.clamp(-clip, clip)
        x = self.loc + noise
        clamped = x.clamp(-1.0 + self.eps, 1.0 - self.eps)
        return x - x.detach() + clamped.detach()


def trunk(in_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class Actor(nn.Module):
    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.policy = mlp(feature_dim, hidden_dim, 2, action_dim, act=nn.ReLU)
        self.apply(orthogonal_init)

    def forward(self, features: torch.Tensor, std: float) -> TruncatedNormal:
        return TruncatedNormal(torch.tanh(self.policy(self.trunk(features))), std)


class Critic(nn.Module):
    """Twin Q: one trunk, two heads on [trunk(features), action]."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.q1 = mlp(feature_dim + action_dim, hidden_dim, 2, 1, act=nn.ReLU)
        self.q2 = mlp(feature_dim + action_dim, hidden_dim, 2, 1, act=nn.ReLU)
        self.apply(orthogonal_init)

    def forward(self, features: torch.Tensor, action: torch.Tensor):
        h = torch.cat([self.trunk(features), action], dim=-1)
        return self.q1(h), self.q2(h)


# Losses ------------------------------------------------------------------------------

def td_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the twin heads of the mean squared error to the (fixed) TD target."""
    return ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()


def td3_bc_actor_loss(q: torch.Tensor, action: torch.Tensor, data_action: torch.Tensor,
                      alpha: float = 2.5) -> torch.Tensor:
    """TD3+BC (Fujimoto & Gu 2021, Eq. 5, as V-D4RL's DrQ+BC): -lambda * mean Q(s, a~)
    + mean (a~ - a)^2 with lambda = alpha / mean |Q| (not differentiated)."""
    lam = alpha / q.detach().abs().mean()
    return -lam * q.mean() + ((action - data_action) ** 2).mean()


def cql_penalty(q_data: torch.Tensor, q_random: torch.Tensor, q_current: torch.Tensor,
                q_next: torch.Tensor, weight: float, temperature: float = 1.0) -> torch.Tensor:
    """CQL(H) as V-D4RL's CQL (no importance sampling): weight * (temperature *
    logsumexp over {random, data, next-policy, current-policy actions} of Q / temperature,
    averaged over the batch, minus the mean data-action Q). ``q_data``: (B, 1); the
    others (B, N, 1), every one evaluated at the current observation."""
    cat = torch.cat([q_random, q_data.unsqueeze(1), q_next, q_current], dim=1)
    pushed_down = torch.logsumexp(cat / temperature, dim=1).mean() * temperature
    return weight * (pushed_down - q_data.mean())


"""Behaviour cloning from pixels.

The simplest offline baseline: regress the dataset's actions from its images. A
DrQ-v2 encoder (``baselines/nets.py``) with random-shift augmentation feeds a
trunk (linear -> ``feature_dim``, LayerNorm, tanh) and an MLP whose tanh output is
the action; the loss is the mean squared error to the data action. The policy is
deterministic either way.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from baselines.nets import DrQEncoder, FrameStack, mlp, random_shift
from coworld_bench.algorithm import Algorithm, Range, RunContext, TrainConfig
from coworld_bench.data import TransitionSampler
from coworld_bench.registry import register
from coworld_bench.seeding import RandomStates


def bc_loss(predicted: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Mean over batch and action dimensions of (pi(o) - a)^2."""
    return ((predicted - actions) ** 2).mean()


@dataclasses.dataclass
class BCConfig(TrainConfig):
    """Behaviour cloning.

    Attributes:
      batch_size: transitions per update.
      lr: Adam learning rate.
      frame_stack: frames per observation.
      feature_dim: trunk output size.
      hidden_dim: MLP width.
      augment_pad: random-shift padding in pixels (0: off).
    """

    train_steps: int = 100_000
    batch_size: int = 256
    lr: float = 1e-4
    frame_stack: int = 3
    feature_dim: int = 50
    hidden_dim: int = 1024
    augment_pad: int = 4

    checks: ClassVar[dict] = {"batch_size": Range(1), "lr": Range(0), "frame_stack": Range(1),
                              "feature_dim": Range(1), "hidden_dim": Range(1),
                              "augment_pad": Range(0)}


class BCNet(nn.Module):
    def __init__(self, in_channels, image_size, action_dim, feature_dim, hidden_dim):
        super().__init__()
        self.encoder = DrQEncoder(in_channels, image_size)
        self.trunk = nn.Sequential(nn.Linear(self.encoder.out_dim, feature_dim),
                                   nn.LayerNorm(feature_dim), nn.Tanh())
        self.head = mlp(feature_dim, hidden_dim, 2, action_dim, act=nn.ReLU)

    def forward(self, images):
        return torch.tanh(self.head(self.trunk(self.encoder(images))))


@register("bc")
class BC(Algorithm):
    Config = BCConfig
    description = "Behaviour cloning on the pixel dataset (DrQ-v2 encoder, MSE to data actions)."
    paper_name = "BC"
    family = "model-free"
    presets = {
        "smoke": dict(batch_size=8, hidden_dim=64, frame_stack=2),
        "quick": dict(batch_size=64, hidden_dim=256),
    }

    def __init__(self, config: BCConfig, ctx: RunContext):
        super().__init__(config, ctx)
        h, w, c = ctx.image_shape
        self.net = BCNet(c * config.frame_stack, h, ctx.action_dim, config.feature_dim,
                         config.hidden_dim).to(ctx.device)
        self.optim = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.sampler = TransitionSampler(ctx.dataset, config.batch_size,
                                         frame_stack=config.frame_stack, seed=ctx.seed)
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.rngs = RandomStates(sampler=self.sampler.rng, augment=self.generator)

    def train_step(self, step):
        batch = self.sampler.sample()
        images = torch.as_tensor(batch["image"], device=self.ctx.device)
        if self.config.augment_pad:
            images = random_shift(images, self.config.augment_pad, self.generator)
        actions = torch.as_tensor(batch["action"], device=self.ctx.device)
        actions = nn.functional.pad(actions, (0, self.ctx.action_dim - actions.shape[1]))
        loss = bc_loss(self.net(images), actions)
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        return {"bc_loss": loss.item()}

    def policy(self, obs, state, deterministic=True):
        state = FrameStack.update(state, obs["image"], self.config.frame_stack, obs["is_first"])
        images = torch.as_tensor(np.concatenate(state)[None], device=self.ctx.device)
        with torch.no_grad():
            action = self.net(images)[0].cpu().numpy()
        return action, state

    def state_dict(self):
        return {"net": self.net.state_dict(), "optim": self.optim.state_dict(),
                "rngs": self.rngs.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.optim.load_state_dict(state["optim"])
        self.rngs.load_state_dict(state["rngs"])

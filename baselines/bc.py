"""Behaviour cloning from pixels, as V-D4RL's BC (``drqbc/bcagent.py``, ``algo/bc.yaml``).

The DrQ-v2 backbone of ``baselines/drqv2.py`` without a critic: the encoder (with
random-shift augmentation) and the actor, both trained by the mean squared error
between the actor's *noisy sampled* action (truncated normal, scheduled std, noise
clipped at ``std_clip``) and the data action. Evaluation takes the actor's mean.
V-D4RL's offline config: lr 3e-4.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from baselines.core.drq import Actor, orthogonal_init
from baselines.core.schedules import linear_schedule
from baselines.core.optim import optimize
from baselines.core.nets import DrQEncoder, FrameStack, adam, random_shift
from coworld_bench.algorithm import Algorithm, Range, RunContext, TrainConfig
from coworld_bench.data import TransitionSampler
from coworld_bench.registry import register
from coworld_bench.seeding import RandomStates


def bc_loss(predicted: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Mean over batch and action dimensions of (a~ - a)^2."""
    return ((predicted - actions) ** 2).mean()


@dataclasses.dataclass
class BCConfig(TrainConfig):
    """Behaviour cloning (V-D4RL's BC).

    Attributes:
      train_steps: updates in total.
      batch_size: transitions per update.
      lr: Adam learning rate of encoder and actor (V-D4RL offline: 3e-4).
      frame_stack: frames per observation.
      feature_dim: trunk output size.
      hidden_dim: MLP width.
      augment_pad: random-shift padding in pixels (0: off).
      std_initial, std_final: noise std of the regressed sampled action, linear from
        the first to the second.
      std_decay_updates: updates over which it decays (V-D4RL: 125k updates).
      std_clip: the sampled noise is clipped to +-std_clip.
    """

    train_steps: int = 300_000
    batch_size: int = 256
    lr: float = 3e-4
    frame_stack: int = 3
    feature_dim: int = 50
    hidden_dim: int = 1024
    augment_pad: int = 4
    std_initial: float = 1.0
    std_final: float = 0.1
    std_decay_updates: int = 125_000
    std_clip: float = 0.3

    checks: ClassVar[dict] = {"batch_size": Range(1), "lr": Range(0), "frame_stack": Range(1),
                              "feature_dim": Range(1), "hidden_dim": Range(1),
                              "augment_pad": Range(0), "std_initial": Range(0),
                              "std_final": Range(0), "std_decay_updates": Range(1),
                              "std_clip": Range(0)}


@register("bc")
class BC(Algorithm):
    Config = BCConfig
    description = "Behaviour cloning on the pixel dataset (V-D4RL's BC on the DrQ-v2 backbone)."
    paper_name = "BC"
    family = "model-free"
    presets = {
        "smoke": dict(batch_size=8, feature_dim=16, hidden_dim=32, frame_stack=2),
        "quick": dict(batch_size=64, hidden_dim=256, std_decay_updates=1_000),
    }

    def __init__(self, config: BCConfig, ctx: RunContext):
        super().__init__(config, ctx)
        h, _, c = ctx.image_shape
        self.encoder = DrQEncoder(c * config.frame_stack, h).to(ctx.device)
        self.encoder.apply(orthogonal_init)
        self.actor = Actor(self.encoder.out_dim, ctx.action_dim, config.feature_dim,
                           config.hidden_dim).to(ctx.device)
        self.optimizers = {name: adam(getattr(self, name).parameters(), lr=config.lr)
                           for name in ("encoder", "actor")}
        self.sampler = TransitionSampler(ctx.dataset, config.batch_size,
                                         frame_stack=config.frame_stack, seed=ctx.seed)
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.rngs = RandomStates(sampler=self.sampler.rng, torch=self.generator)

    def train_step(self, step):
        c = self.config
        batch = self.sampler.sample()
        images = torch.as_tensor(batch["image"], device=self.ctx.device)
        if c.augment_pad:
            images = random_shift(images, c.augment_pad, self.generator)
        actions = torch.as_tensor(batch["action"], device=self.ctx.device)
        actions = nn.functional.pad(actions, (0, self.ctx.action_dim - actions.shape[1]))
        std = linear_schedule(step, c.std_initial, c.std_final, c.std_decay_updates)
        sampled = self.actor(self.encoder(images), std).sample(c.std_clip, self.generator)
        loss = bc_loss(sampled, actions)
        optimize(self.optimizers, lambda: ({"encoder+actor/bc": loss}, {"encoder+actor/bc": 1.0},
                                           None))
        return {"bc_loss": loss.detach(), "actor/std": std}

    @torch.no_grad()
    def policy(self, obs, state, deterministic=True):
        state = FrameStack.update(state, obs["image"], self.config.frame_stack, obs["is_first"])
        images = torch.as_tensor(np.concatenate(state)[None], device=self.ctx.device)
        dist = self.actor(self.encoder(images), self.config.std_final)
        action = dist.mean if deterministic else dist.sample(None, self.generator)
        return action[0].cpu().numpy(), state

    def state_dict(self):
        return {"encoder": self.encoder.state_dict(), "actor": self.actor.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "rngs": self.rngs.state_dict()}

    def load_state_dict(self, state):
        self.encoder.load_state_dict(state["encoder"])
        self.actor.load_state_dict(state["actor"])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        self.rngs.load_state_dict(state["rngs"])

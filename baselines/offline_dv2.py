"""Offline DV2 (V-D4RL): DreamerV2 with an ensemble of prior heads and an uncertainty
penalty, trained on the offline target dataset alone (SPEC section 5).

The world model, with K = 7 prior heads sharing one recurrent core (each head trained
with the balanced KL), is trained for ``model_updates`` and then frozen. The actor and
critic then learn in imagination (horizon 5), each imagined step drawn from a random
head, on the penalised reward r_hat - lambda * u, where u is the mean over heads of the
Frobenius distance between each head's (32 x 32) class probabilities and their mean
(for Gaussian latents: between the heads' means).
"""

from __future__ import annotations

import dataclasses

import torch

from baselines.dreamer import (
    QUICK_MODEL, SMOKE_MODEL, DreamerAgent, DreamerConfig, ensemble_disagreement,
)
from coworld_bench.algorithm import Algorithm, RunContext
from coworld_bench.data import SequenceSampler
from coworld_bench.registry import register


@dataclasses.dataclass
class OfflineDV2Config(DreamerConfig):
    """Offline DV2.

    Attributes:
      model_updates: world-model updates before it is frozen (V-D4RL: ~25k).
      uncertainty_penalty: lambda of r_hat - lambda * u (V-D4RL: 10).
    """

    train_steps: int = 300_000  # the paper's training-efficiency table
    ensemble: int = 7
    horizon: int = 5
    model_updates: int = 25_000
    uncertainty_penalty: float = 10.0


def head_uncertainty(rssm, state: dict) -> torch.Tensor:
    """u of an imagined prior state from its heads' statistics: (N,)."""
    heads = state["heads"]
    if "logits" in heads:
        return ensemble_disagreement(heads["logits"].softmax(-1))
    return ensemble_disagreement(heads["mean"][..., None, :])


@register("offline-dv2")
class OfflineDV2(Algorithm):
    Config = OfflineDV2Config
    description = "Offline DV2 (V-D4RL): 7-head prior ensemble, uncertainty-penalised imagination."
    has_value = True
    presets = {
        "smoke": dict(SMOKE_MODEL, ensemble=3, model_updates=10, train_steps=20),
        "quick": dict(QUICK_MODEL, horizon=5, model_updates=1_000, train_steps=2_000),
    }

    def __init__(self, config: OfflineDV2Config, ctx: RunContext):
        super().__init__(config, ctx)
        self.agent = DreamerAgent(config, ctx.action_dim, ctx.device, ctx.seed)
        self.sampler = SequenceSampler(ctx.dataset, config.batch_size, config.seq_len,
                                       seed=ctx.seed)
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def sample_heads(self, n: int) -> torch.Tensor:
        return torch.randint(0, self.config.ensemble, (n,), generator=self.generator
                             ).to(self.ctx.device)

    def penalised_reward(self, traj: dict) -> torch.Tensor:
        reward = self.agent.imagined_reward(traj)
        u = torch.stack([head_uncertainty(self.agent.wm.rssm, s) for s in traj["states"][1:]])
        self._last_u = u.mean().item()
        return reward - self.config.uncertainty_penalty * u

    def train_step(self, step):
        batch = self.agent.batch(self.sampler)
        if step < self.config.model_updates:
            _, scalars = self.agent.train_model(batch)
            return scalars
        with torch.no_grad():  # the world model is frozen: posteriors only
            embed = self.agent.wm.embed(batch)
            post, _ = self.agent.wm.rssm.observe(embed, batch["action"], batch["is_first"])
        scalars = self.agent.train_behaviour(post, reward_fn=self.penalised_reward,
                                             head_sampler=self.sample_heads)
        scalars["uncertainty"] = self._last_u
        return scalars

    def policy(self, obs, state, deterministic=True):
        return self.agent.act(obs, state, deterministic)

    def value(self, obs, state):
        return self.agent.value_of(state)

    def state_dict(self):
        return {"agent": self.agent.full_state(), "sampler_rng": self.sampler.rng.bit_generator.state,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.agent.load_full_state(state["agent"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        self.generator.set_state(state["generator"])

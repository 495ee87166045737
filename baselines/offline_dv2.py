"""Offline DV2 (V-D4RL): DreamerV2 with an ensemble of prior heads and an uncertainty
penalty, trained on the offline target dataset alone (SPEC section 5).

The world model has K = 7 prior heads sharing one recurrent core. At every time step
of a sequence one head is drawn at random (one draw for the whole batch, as V-D4RL's
``img_step``) and only that head's prior enters the balanced KL, so each head is
trained on its own random subset of steps: that keeps their disagreement meaningful.
The model is trained for ``model_updates`` and then frozen. The actor and critic then
learn in imagination (horizon 5), each imagined step sampled from a random head, on
the penalised reward r_hat - lambda * u, where u is the mean over heads of the
Frobenius distance between each head's (32 x 32) class probabilities and their mean
(for Gaussian latents: between the heads' means).

The paper preset is V-D4RL's ``dmc_vision`` configuration (SPEC section 5), not
CoWorld's: RSSM 200 units, 32 x 32 latents, lr 3e-4 / 8e-5 / 8e-5, batch 64 x 50,
gamma 0.99, lambda 0.95, no discount head, weight decay 1e-6, actor entropy 1e-4.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from baselines.core.actor_critic import behaviour_metrics
from baselines.core.agent import DreamerAgent
from baselines.core.config import QUICK_MODEL, SMOKE_MODEL, DreamerConfig
from baselines.core.losses import ensemble_disagreement
from baselines.core.online import dataset_state_dim
from coworld_bench.algorithm import Algorithm, Range, RunContext
from coworld_bench.data import SequenceSampler
from coworld_bench.registry import register
from coworld_bench.seeding import RandomStates


@dataclasses.dataclass
class OfflineDV2Config(DreamerConfig):
    """Offline DV2; defaults are V-D4RL's ``dmc_vision`` values.

    Attributes:
      model_updates: world-model updates before it is frozen (V-D4RL: ~25k).
      uncertainty_penalty: lambda of r_hat - lambda * u (SPEC: 10).
    """

    train_steps: int = 300_000  # the paper's training-efficiency table (updates)
    ensemble: int = 7
    deter: int = 200
    hidden: int = 200
    model_lr: float = 3e-4
    actor_lr: float = 8e-5
    critic_lr: float = 8e-5
    weight_decay: float = 1e-6
    batch_size: int = 64
    seq_len: int = 50
    horizon: int = 5
    discount: float = 0.99
    lam: float = 0.95
    pred_discount: bool = False
    actor_entropy: float = 1e-4
    model_updates: int = 25_000
    uncertainty_penalty: float = 10.0

    checks: ClassVar[dict] = {"model_updates": Range(0), "uncertainty_penalty": Range(0)}


def head_uncertainty(state: dict) -> torch.Tensor:
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
    paper_name = "Offline DV2"
    family = "model-based"
    presets = {
        "smoke": dict(SMOKE_MODEL, ensemble=3, model_updates=10, train_steps=20),
        "quick": dict(QUICK_MODEL, horizon=5, model_updates=1_000, train_steps=2_000),
    }

    def timed_steps(self):
        step = self.config.model_updates  # the behaviour phase, the longer one
        return {"offline-dv2 behaviour step": lambda: self.train_step(step)}

    def sequence_shape(self):
        return self.config.batch_size, self.config.seq_len

    def __init__(self, config: OfflineDV2Config, ctx: RunContext):
        super().__init__(config, ctx)
        state_dim = dataset_state_dim(ctx) if config.obs == "state" else None
        self.agent = DreamerAgent(config, ctx.action_dim, ctx.device, ctx.seed, state_dim=state_dim,
                                  compile_backend=ctx.compile_backend)
        self.sampler = SequenceSampler(ctx.dataset, config.batch_size, config.seq_len,
                                       seed=ctx.seed)
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.rngs = RandomStates(sampler=self.sampler.rng, heads=self.generator)

    def draw_heads(self, steps: int) -> list[int]:
        """One random prior head per time step."""
        return torch.randint(0, self.config.ensemble, (steps,), generator=self.generator).tolist()

    def behaviour_loss(self, post):
        """DreamerV2's actor-critic loss on the penalised reward r_hat - lambda * u."""
        agent, cfg = self.agent, self.config
        with agent.frozen_model():
            traj = agent.imagine(post, heads=self.draw_heads(cfg.horizon), all_heads=True)
            feat = traj["feat"][1:]
            u = torch.stack([head_uncertainty(s) for s in traj["states"][1:]])
            reward = agent.wm.reward_of(feat) - cfg.uncertainty_penalty * u
            losses, aux = agent.ac.loss(traj, reward, agent.wm.cont_of(feat))
        return losses, agent.ac.scales(), {**aux, "uncertainty": u.detach().mean()}

    def train_step(self, step):
        batch = self.agent.batch(self.sampler)
        if step < self.config.model_updates:
            metrics, aux = self.agent.optimize(self.agent.model_loss, batch,
                                               heads=self.draw_heads(self.config.seq_len))
            return {**metrics, "model/kl_value": aux["kl"]}
        post = self.agent.posterior(batch)  # the world model is frozen
        metrics, aux = self.agent.optimize(self.behaviour_loss, post)
        self.agent.ac.update_slow()
        return {**metrics, **behaviour_metrics(aux), "uncertainty": aux["uncertainty"]}

    def policy(self, obs, state, deterministic=True):
        return self.agent.act(obs, state, deterministic)

    def value(self, obs, state):
        return self.agent.value_of(state)

    def predicted_reward(self, obs, state):
        return self.agent.reward_of_state(state)

    def state_dict(self):
        return {"agent": self.agent.full_state(), "rngs": self.rngs.state_dict()}

    def load_state_dict(self, state):
        self.agent.load_full_state(state["agent"])
        self.rngs.load_state_dict(state["rngs"])

"""The DrQ-v2 backbone of V-D4RL's model-free offline baselines, and two of them:
DrQ+BC and CQL (SPEC section 5; BC, the third, is ``baselines/bc.py``).

The backbone (V-D4RL ``drqbc/drqv2.py``): the DrQ-v2 pixel encoder (``nets.DrQEncoder``)
on frame-stacked images with random-shift augmentation (pad 4), an actor and a twin
critic, each with its own trunk (linear -> ``feature_dim``, LayerNorm, tanh) and MLP
of two ``hidden_dim`` ReLU layers, orthogonal initialisation, and a target critic
tracked with rate ``critic_tau``. The actor outputs mu = tanh(MLP) and a truncated
normal of a scheduled std: its training actions are noisy samples, the noise clipped
at ``std_clip`` and the action clamped to [-1, 1] with a straight-through gradient;
evaluation takes mu. The encoder is trained by the critic only: the actor sees its
features detached.

One update (V-D4RL ``update``): augment obs and next obs with independent shifts,
encode them (next obs without gradient), critic step, actor step, target update.
V-D4RL's offline task config (``task/offline_dmc.yaml``) sets lr 3e-4 and n-step 1;
its published DrQ+BC command (V-D4RL's README) overrides that with ``nstep=3`` (SPEC
section 7b), CQL's keeps 1.

n-step targets (``TransitionSampler``): r_t + gamma r_{t+1} + gamma^2 r_{t+2} and a
bootstrap discount gamma^3 (zero past a terminal). V-D4RL's replay never samples the
last n - 1 steps of an episode (their n-step window would cross its end); here they are
sampled with the shorter window that fits (m < n rewards, bootstrap gamma^m), which
is the same target for a time-limit end and the exact one at a terminal.

Units: ``train_steps`` counts updates. V-D4RL's offline loop updates on every second
loop step (``update_every_steps: 2``), so its std schedule ``linear(1.0, 0.1,
250000)``, counted in loop steps, spans 125k updates here (``std_decay_updates``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from baselines.core.drq import Actor, Critic, cql_penalty, orthogonal_init, td3_bc_actor_loss, td_loss
from baselines.core.schedules import linear_schedule
from baselines.core.optim import optimize
from baselines.core.nets import DrQEncoder, FrameStack, adam, random_shift, soft_update
from coworld_bench.algorithm import Algorithm, Range, RunContext, TrainConfig
from coworld_bench.data import TransitionSampler
from coworld_bench.registry import register
from coworld_bench.seeding import RandomStates



# The shared agent --------------------------------------------------------------------

@dataclasses.dataclass
class DrQConfig(TrainConfig):
    """V-D4RL's DrQ-v2 backbone, offline settings (``task/offline_dmc.yaml``).

    Attributes:
      train_steps: updates in total (the paper's training-time table: 300k).
      batch_size: transitions per update.
      lr: Adam learning rate of encoder, actor and critic (offline config: 3e-4).
      n_step: steps of the TD target's return (offline config: 1; DrQ+BC: 3).
      frame_stack: frames per observation.
      feature_dim: trunk output size.
      hidden_dim: width of the actor's and critics' MLPs.
      augment_pad: random-shift padding in pixels (0: no augmentation).
      std_initial, std_final: the actor's noise std, linear from the first to the second.
      std_decay_updates: updates over which it decays (V-D4RL's 250k loop steps = 125k
        updates).
      std_clip: the sampled noise is clipped to +-std_clip.
      critic_tau: rate of the target critic's soft update.
    """

    train_steps: int = 300_000
    batch_size: int = 256
    lr: float = 3e-4
    n_step: int = 1
    frame_stack: int = 3
    feature_dim: int = 50
    hidden_dim: int = 1024
    augment_pad: int = 4
    std_initial: float = 1.0
    std_final: float = 0.1
    std_decay_updates: int = 125_000
    std_clip: float = 0.3
    critic_tau: float = 0.01

    checks: ClassVar[dict] = {
        "batch_size": Range(1), "lr": Range(0), "n_step": Range(1), "frame_stack": Range(1),
        "feature_dim": Range(1), "hidden_dim": Range(1), "augment_pad": Range(0),
        "std_initial": Range(0), "std_final": Range(0), "std_decay_updates": Range(1),
        "std_clip": Range(0), "critic_tau": Range(0, 1)}


DRQ_PRESETS = {
    "smoke": dict(batch_size=8, feature_dim=16, hidden_dim=32, frame_stack=2),
    "quick": dict(batch_size=64, hidden_dim=256, std_decay_updates=1_000),
}


class DrQBackbone(Algorithm):
    """Encoder, actor, twin critic and target, their optimizers and the transition
    sampler; subclasses give the actor's loss and any extra critic term."""

    Config = DrQConfig
    presets = DRQ_PRESETS
    family = "model-free"
    has_value = True

    def __init__(self, config: DrQConfig, ctx: RunContext):
        super().__init__(config, ctx)
        h, _, c = ctx.image_shape
        dev = ctx.device
        self.encoder = DrQEncoder(c * config.frame_stack, h).to(dev)
        self.encoder.apply(orthogonal_init)
        dims = (self.encoder.out_dim, ctx.action_dim, config.feature_dim, config.hidden_dim)
        self.actor = Actor(*dims).to(dev)
        self.critic = Critic(*dims).to(dev)
        self.critic_target = Critic(*dims).to(dev)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.optimizers = {name: adam(getattr(self, name).parameters(), lr=config.lr)
                           for name in ("encoder", "actor", "critic")}
        self.sampler = TransitionSampler(ctx.dataset, config.batch_size, n_step=config.n_step,
                                         frame_stack=config.frame_stack,
                                         discount=config.discount, seed=ctx.seed)
        self.generator = torch.Generator().manual_seed(ctx.seed)  # shifts and action noise
        self.rngs = RandomStates(sampler=self.sampler.rng, torch=self.generator)

    # What subclasses change.
    def actor_loss(self, q: torch.Tensor, action: torch.Tensor, data_action: torch.Tensor
                   ) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def critic_penalty(self, features, next_features, action, q1, q2, std
                       ) -> tuple[torch.Tensor, dict]:
        return torch.zeros((), device=q1.device), {}

    # One update.
    def std(self, step: int) -> float:
        c = self.config
        return linear_schedule(step, c.std_initial, c.std_final, c.std_decay_updates)

    def batch(self) -> dict[str, torch.Tensor]:
        raw = self.sampler.sample()
        dev = self.ctx.device
        out = {k: torch.as_tensor(raw[k], device=dev)
               for k in ("image", "next_image", "action", "reward", "discount")}
        out["action"] = nn.functional.pad(out["action"].float(),
                                          (0, self.ctx.action_dim - out["action"].shape[1]))
        out["reward"], out["discount"] = out["reward"][:, None], out["discount"][:, None]
        if self.config.augment_pad:
            for key in ("image", "next_image"):
                out[key] = random_shift(out[key], self.config.augment_pad, self.generator)
        return out

    def train_step(self, step: int) -> dict[str, float]:
        c, b = self.config, self.batch()
        std = self.std(step)
        features = self.encoder(b["image"])
        with torch.no_grad():
            next_features = self.encoder(b["next_image"])
            next_action = self.actor(next_features, std).sample(c.std_clip, self.generator)
            target_v = torch.min(*self.critic_target(next_features, next_action))
            target_q = b["reward"] + b["discount"] * target_v

        q1, q2 = self.critic(features, b["action"])
        penalty, metrics = self.critic_penalty(features, next_features, b["action"], q1, q2, std)
        critic_loss = td_loss(q1, q2, target_q) + penalty
        self._step(("encoder", "critic"), critic_loss)

        features = features.detach()
        action = self.actor(features, std).sample(c.std_clip, self.generator)
        q = torch.min(*self.critic(features, action))
        actor_loss, actor_metrics = self.actor_loss(q, action, b["action"])
        self._step(("actor",), actor_loss)
        soft_update(self.critic, self.critic_target, c.critic_tau)
        # Detached tensors: read by the runner at its logging step, never inside an update.
        return {"critic/loss": critic_loss.detach(), "critic/q": q1.detach().mean(),
                "critic/target_q": target_q.mean(), "actor/loss": actor_loss.detach(),
                "actor/std": std, **metrics, **actor_metrics}

    def _step(self, parts, loss: torch.Tensor) -> None:
        """One step of ``parts`` on ``loss`` (``optimize``: one term that trains them all)."""
        term = "+".join(parts) + "/loss"
        optimize(self.optimizers, lambda: ({term: loss}, {term: 1.0}, None))

    # Acting and valuing.
    def _features(self, state) -> torch.Tensor:
        images = torch.as_tensor(np.concatenate(state)[None], device=self.ctx.device)
        return self.encoder(images)

    @torch.no_grad()
    def policy(self, obs, state, deterministic=True):
        state = FrameStack.update(state, obs["image"], self.config.frame_stack, obs["is_first"])
        dist = self.actor(self._features(state), self.config.std_final)
        action = dist.mean if deterministic else dist.sample(None, self.generator)
        return action[0].cpu().numpy(), state

    @torch.no_grad()
    def value(self, obs, state):
        """min of the twin Q at the actor's deterministic action (V-D4RL's target)."""
        features = self._features(state)
        action = self.actor(features, self.config.std_final).mean
        return float(torch.min(*self.critic(features, action)))

    # Checkpoints.
    def state_dict(self):
        return {"encoder": self.encoder.state_dict(), "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "rngs": self.rngs.state_dict()}

    def load_state_dict(self, state):
        for name in ("encoder", "actor", "critic", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        self.rngs.load_state_dict(state["rngs"])


# DrQ+BC ------------------------------------------------------------------------------

@dataclasses.dataclass
class DrQBCConfig(DrQConfig):
    """DrQ+BC (V-D4RL).

    Attributes:
      n_step: steps of the TD target's return (3: V-D4RL's DrQ+BC command).
      bc_alpha: TD3+BC's alpha: the Q term's weight is alpha / mean |Q| (2.5).
    """

    n_step: int = 3
    bc_alpha: float = 2.5

    checks: ClassVar[dict] = {"bc_alpha": Range(0)}


@register("drq-bc")
class DrQBC(DrQBackbone):
    """V-D4RL's DrQ+BC: the DrQ-v2 backbone with TD3+BC's actor loss."""

    Config = DrQBCConfig
    paper_name = "DrQ+BC"
    description = ("DrQ+BC (V-D4RL): DrQ-v2 encoder and twin critic, 3-step TD targets, "
                   "TD3+BC actor loss on the noisy sampled action.")

    def actor_loss(self, q, action, data_action):
        loss = td3_bc_actor_loss(q, action, data_action, self.config.bc_alpha)
        return loss, {"actor/q": q.detach().mean(),
                      "actor/bc": ((action - data_action) ** 2).detach().mean()}


# CQL ---------------------------------------------------------------------------------

@dataclasses.dataclass
class CQLConfig(DrQConfig):
    """CQL on the DrQ-v2 backbone (V-D4RL's ``cql.py``, CQL(H) without importance
    sampling or Lagrange multiplier).

    Attributes:
      cql_weight: the conservative term's fixed weight alpha (SPEC: 10).
      cql_actions: actions of each kind (uniform, current policy, next policy) in the
        logsumexp (10).
      cql_temperature: temperature of the logsumexp (1).
    """

    cql_weight: float = 10.0
    cql_actions: int = 10
    cql_temperature: float = 1.0

    checks: ClassVar[dict] = {"cql_weight": Range(0), "cql_actions": Range(1),
                              "cql_temperature": Range(0)}


@register("cql")
class CQL(DrQBackbone):
    """V-D4RL's CQL: the DrQ-v2 backbone, actor loss -Q, critic loss plus the
    conservative penalty. As in the reference, the current- and next-policy actions are
    sampled (without gradient) at obs and next obs but all valued at obs."""

    Config = CQLConfig
    paper_name = "CQL"
    description = ("CQL (V-D4RL): DrQ-v2 backbone, conservative critic penalty "
                   "(logsumexp over uniform, policy and data actions), actor loss -Q.")

    def actor_loss(self, q, action, data_action):
        return -q.mean(), {"actor/q": q.detach().mean()}

    def critic_penalty(self, features, next_features, action, q1, q2, std):
        c, n = self.config, self.config.cql_actions
        repeat = lambda x: x.unsqueeze(1).expand(-1, n, -1)  # noqa: E731  (B, N, D)
        obs, next_obs = repeat(features), repeat(next_features)
        uniform = torch.rand((*obs.shape[:2], action.shape[-1]), generator=self.generator)
        uniform = (uniform * 2 - 1).to(action)
        with torch.no_grad():
            current = self.actor(obs, std).sample(c.std_clip, self.generator)
            following = self.actor(next_obs, std).sample(c.std_clip, self.generator)
        q_random, q_current, q_next = (self.critic(obs, a) for a in (uniform, current, following))
        terms = {f"critic/cql{i + 1}": cql_penalty(q_data, q_random[i], q_current[i], q_next[i],
                                                   c.cql_weight, c.cql_temperature)
                 for i, q_data in enumerate((q1, q2))}
        penalty = terms["critic/cql1"] + terms["critic/cql2"]
        return penalty, {k: v.detach() for k, v in terms.items()}

"""The behaviour half of DreamerV2: the actor's ``trunc_normal`` distribution (SPEC
7b), the actor and critic with their slow target critic, imagination, and the
lambda-return losses."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from baselines.core.nets import mlp
from baselines.core.config import DreamerConfig
from baselines.core.losses import lambda_return
from baselines.core.optim import Optimizer

if TYPE_CHECKING:
    from baselines.core.world_model import WorldModel

Losses = dict[str, torch.Tensor]
Scales = dict[str, float]


class TruncNormal:
    """DreamerV2's and the authors' ``trunc_normal`` action distribution (SPEC 7b): a
    Normal with mean tanh(x) and std 2 sigmoid(s / 2) + 0.1 (both made by
    ``ActorCritic.policy``), whose reparameterised sample is clipped into
    [-(1 - clip), 1 - clip] with a straight-through gradient (the value of the clipped
    sample, the gradient of the unclipped one), as the authors' ``SafeTruncatedNormal``.
    log pi and the entropy are the Normal's: analytic, so the entropy bonus carries
    gradient and is bounded below by the std floor of 0.1 per dimension. Nothing here
    calls atanh, so a saturated mean stays finite under bfloat16. Parameters are float32
    (SPEC section 7)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, clip: float = 1e-6):
        self.mean, self.std, self.clip = mean.float(), std.float(), clip

    def rsample(self) -> torch.Tensor:
        sample = self.mean + self.std * torch.randn_like(self.mean)
        clipped = sample.clamp(-1.0 + self.clip, 1.0 - self.clip)
        return sample + (clipped - sample).detach()

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """The Normal's log-density of ``action``, summed over its dimensions."""
        z = (action.float() - self.mean) / self.std
        return (-0.5 * z ** 2 - self.std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        """The Normal's entropy, sum of 1/2 log(2 pi e std^2) over the dimensions."""
        return (self.std.log() + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


class ActorCritic(nn.Module):
    """DreamerV2 behaviour learning in imagination: actor, critic and slow critic,
    with their optimisers (parts ``actor`` and ``critic``)."""

    def __init__(self, cfg: DreamerConfig, feat_dim: int, action_dim: int):
        super().__init__()
        self.cfg = cfg
        norm = cfg.layer_norm
        self.actor = mlp(feat_dim, cfg.mlp_units, cfg.mlp_layers, 2 * action_dim, norm=norm)
        self.critic = mlp(feat_dim, cfg.mlp_units, cfg.mlp_layers, 1, norm=norm)
        self.slow_critic = mlp(feat_dim, cfg.mlp_units, cfg.mlp_layers, 1, norm=norm)
        self.slow_critic.load_state_dict(self.critic.state_dict())
        self.slow_critic.requires_grad_(False)
        self.updates = 0
        self.optimizers = {
            "actor": Optimizer(self.actor.parameters(), cfg.actor_lr, cfg.grad_clip,
                               cfg.weight_decay),
            "critic": Optimizer(self.critic.parameters(), cfg.critic_lr, cfg.grad_clip,
                                cfg.weight_decay)}

    def policy(self, feat: torch.Tensor) -> TruncNormal:
        return self.policy_of(self.actor(feat))

    @staticmethod
    def policy_of(raw: torch.Tensor) -> TruncNormal:
        """The action distribution of the actor's output: mean tanh(x), std
        2 sigmoid(s / 2) + 0.1 (DreamerV2's ``trunc_normal`` head)."""
        mean, std = raw.float().chunk(2, -1)
        return TruncNormal(torch.tanh(mean), 2 * torch.sigmoid(std / 2) + 0.1)

    def value(self, feat: torch.Tensor) -> torch.Tensor:
        return self.critic(feat)[..., 0].float()

    def imagine(self, world_model: WorldModel, start: dict, horizon: int,
                heads: list[int] | None = None, all_heads: bool = False) -> dict:
        """Rolls the actor out in the model from flattened start states (no grad into
        the start). Returns feats (H+1, N, F), actions (H, N, A), the policy's mean and
        std at each step (so the loss does not run the actor again) and the prior
        states. ``heads[t]``: the prior head of step t."""
        rssm = world_model.rssm
        state = {"deter": start["deter"].detach(), "stoch": start["stoch"].detach()}
        feats, states = [rssm.feat(state)], [state]
        out = {"action": [], "mean": [], "std": []}
        for t in range(horizon):
            policy = self.policy(feats[-1].detach())
            action = policy.rsample()
            head = 0 if heads is None else int(heads[t])
            state = rssm.img_step(state, action, head=head, all_heads=all_heads)
            feats.append(rssm.feat(state))
            states.append(state)
            for key, value in (("action", action), ("mean", policy.mean), ("std", policy.std)):
                out[key].append(value)
        return {"feat": torch.stack(feats), "states": states,
                **{k: torch.stack(v) for k, v in out.items()}}

    def loss(self, traj: dict, reward: torch.Tensor, cont: torch.Tensor
             ) -> tuple[Losses, dict]:
        """DreamerV2's actor and critic loss terms on an imagined trajectory.

        ``reward``: (H, N) r_{t+1} of reaching each imagined state (penalised or
        relabelled by the caller); ``cont``: (H, N) continuation of each. Terms:
        ``actor/return`` -(rho log pi(a) sg(R - v_slow) + (1 - rho) R), ``actor/entropy``
        -H[pi], ``critic/value`` 1/2 (v - sg(R))^2, each weighted by the cumulative
        discount and averaged. Returns (losses, aux) where aux carries the critic's
        ``value`` (with gradient) and the ``weight`` for terms an algorithm adds.
        """
        cfg = self.cfg
        feat = traj["feat"]
        reward, discount = reward.float(), cfg.discount * cont.float()
        slow_value = self.slow_critic(feat)[..., 0].float()
        target = lambda_return(reward, slow_value, discount, cfg.lam)  # (H, N), float32
        weight = torch.cumprod(torch.cat([torch.ones_like(discount[:1]), discount[:-1]]), 0
                               ).detach()
        policy = TruncNormal(traj["mean"], traj["std"])
        rho = cfg.reinforce_weight
        objective = (1 - rho) * target
        if rho:
            advantage = (target - slow_value[:-1]).detach()
            objective = objective + rho * policy.log_prob(traj["action"].detach()) * advantage
        entropy = policy.entropy()
        value = self.value(feat[:-1].detach())
        losses = {"actor/return": -(weight * objective).mean(),
                  "actor/entropy": -(weight * entropy).mean(),
                  "critic/value": (weight * 0.5 * (value - target.detach()) ** 2).mean()}
        aux = {"value": value, "weight": weight, "target": target, "reward": reward,
               "discount": discount, "slow_value": slow_value, "entropy": entropy.detach(),
               "std": traj["std"].detach()}
        return losses, aux

    def scales(self) -> Scales:
        return {"actor/return": 1.0, "actor/entropy": self.cfg.actor_entropy,
                "critic/value": 1.0}

    def update_slow(self) -> None:
        self.updates += 1
        if self.updates % self.cfg.slow_critic_every == 0:
            self.slow_critic.load_state_dict(self.critic.state_dict())

    def optimizer_state(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_optimizer_state(self, state: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])



def behaviour_metrics(aux: dict) -> dict[str, torch.Tensor]:
    """Logged summaries of an actor-critic loss's aux (detached tensors)."""
    return {"critic/value_mean": aux["value"].detach().mean(),
            "critic/target_mean": aux["target"].detach().mean(),
            "actor/entropy_mean": aux["entropy"].mean(),
            "actor/std_mean": aux["std"].mean(),
            "imagined/reward_mean": aux["reward"].detach().mean()}

"""DV2 Finetune + EWC: DV2 Finetune with elastic weight consolidation (SPEC section 5).

At the end of source pretraining a diagonal Fisher F is estimated on
``fisher_batches`` source batches and the parameters theta* are kept; the target
phase then adds lambda/2 sum_i F_i (theta_i - theta*_i)^2 to each loss. F is the mean
squared gradient of a negative log-likelihood: the world model's negative ELBO (its
DreamerV2 loss), the actor's -log pi(a|s) of its own sampled actions at posterior
states, the critic's Gaussian NLL 1/2 (v - R)^2 against imagined lambda-returns.

The paper does not publish lambda: ``benchmarks/ewc_sweep.py`` sweeps it on a log grid.
The default of 100 is provisional: it has not yet been chosen by that sweep at a
meaningful scale (see the script's docstring); set ``--set ewc_lambda=...``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from baselines.dreamer import (
    behaviour_metrics, detach_states, diagonal_fisher, ewc_penalty, flatten_states,
)
from baselines.dv2_finetune import DV2Finetune, FinetuneConfig
from coworld_bench.algorithm import Range
from coworld_bench.registry import register


@dataclasses.dataclass
class EWCConfig(FinetuneConfig):
    """Attributes:
      ewc_lambda: EWC strength lambda (provisional; see the module docstring).
      fisher_batches: source batches for the Fisher estimate.
    """

    ewc_lambda: float = 100.0
    fisher_batches: int = 20

    checks: ClassVar[dict] = {"ewc_lambda": Range(0), "fisher_batches": Range(1)}


def _params(module) -> dict[str, torch.Tensor]:
    return {k: p for k, p in module.named_parameters() if p.requires_grad}


@register("dv2-finetune-ewc")
class DV2FinetuneEWC(DV2Finetune):
    Config = EWCConfig
    paper_name = "DV2 Finetune + EWC"
    description = "DV2 Finetune with an EWC penalty anchoring the pretrained source weights."
    presets = {"smoke": dict(DV2Finetune.presets["smoke"], fisher_batches=2),
               "quick": dict(DV2Finetune.presets["quick"], fisher_batches=10)}

    def __init__(self, config: EWCConfig, ctx):
        super().__init__(config, ctx)
        self.parts = {"model": self.agent.wm, "actor": self.agent.ac.actor,
                      "critic": self.agent.ac.critic}
        self.fisher: dict[str, dict[str, torch.Tensor]] | None = None
        self.anchors: dict[str, dict[str, torch.Tensor]] | None = None

    def estimate_fisher(self, batches) -> dict[str, dict[str, torch.Tensor]]:
        agent, wm, ac = self.agent, self.agent.wm, self.agent.ac

        def model_nll(batch):
            losses, scales, _ = agent.model_loss(batch)
            return sum(scales[k] * v for k, v in losses.items())

        def actor_nll(batch):
            dist = ac.policy(wm.rssm.feat(flatten_states(agent.posterior(batch))))
            _, pre = dist.rsample()
            return -dist.log_prob(pre.detach()).mean()

        def critic_nll(batch):
            with torch.no_grad():
                traj = agent.imagine(agent.posterior(batch))
                _, aux = ac.loss(traj, wm.reward_of(traj["feat"][1:]),
                                 wm.cont_of(traj["feat"][1:]))
            return (0.5 * (ac.value(traj["feat"][:-1]) - aux["target"]) ** 2).mean()

        losses = {"model": model_nll, "actor": actor_nll, "critic": critic_nll}
        return {name: diagonal_fisher(_params(self.parts[name]), losses[name], batches)
                for name in self.parts}

    def end_of_pretraining(self):
        batches = [self.agent.batch(self.learner.replay) for _ in range(self.config.fisher_batches)]
        self.fisher = self.estimate_fisher(batches)
        self.anchors = {name: {k: p.detach().clone() for k, p in _params(m).items()}
                        for name, m in self.parts.items()}

    def penalty(self, name: str) -> torch.Tensor:
        """1/2 sum_i F_i (theta_i - theta*_i)^2 of one part (scaled by lambda)."""
        return ewc_penalty(_params(self.parts[name]), self.anchors[name], self.fisher[name], 1.0)

    def with_penalties(self, loss_fn, *args):
        """``loss_fn``'s terms plus ``part/ewc`` for each part it trains."""
        losses, scales, aux = loss_fn(*args)
        for part in {key.split("/")[0] for key in losses}:
            losses[f"{part}/ewc"] = self.penalty(part)
            scales[f"{part}/ewc"] = self.config.ewc_lambda
        return losses, scales, aux

    def target_update(self, batch):
        agent = self.agent
        metrics, aux = agent.optimize(self.with_penalties, agent.model_loss, batch)
        behaviour, b_aux = agent.optimize(self.with_penalties, agent.behaviour_loss,
                                          detach_states(aux["post"]))
        agent.ac.update_slow()
        return {**metrics, **behaviour, **behaviour_metrics(b_aux)}

    def state_dict(self):
        state = super().state_dict()
        if self.fisher is not None:
            state["fisher"] = self.fisher
            state["anchors"] = self.anchors
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.fisher = state.get("fisher")
        self.anchors = state.get("anchors")

"""DV2 Finetune + EWC: DV2 Finetune with elastic weight consolidation (SPEC section 5).

At the end of source pretraining a diagonal Fisher F is estimated on
``fisher_batches`` source batches and the parameters theta* are kept; the target
phase then adds lambda/2 sum_i F_i (theta_i - theta*_i)^2 to each loss. F is the mean
squared per-sample gradient of a negative log-likelihood (the empirical Fisher, SPEC
7b; ``ewc_fisher``): the world model's negative ELBO of each sequence (its DreamerV2
loss), the actor's -log pi(a|s) of its own sampled action at each posterior state, the
critic's Gaussian NLL 1/2 (v - R)^2 at each imagined state against its lambda-return.

The paper does not publish lambda: ``benchmarks/ewc_sweep.py`` sweeps it on a log grid.
The default of 100 is provisional: it has not yet been chosen by that sweep at a
meaningful scale (see the script's docstring); set ``--set ewc_lambda=...``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from baselines.core.actor_critic import behaviour_metrics
from baselines.core.agent import DreamerAgent, detach_states, flatten_states
from baselines.core.losses import diagonal_fisher, ewc_penalty, vmap_diagonal_fisher
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


def ewc_samples(agent: DreamerAgent, batches) -> tuple[list, list]:
    """The actor's and the critic's samples of ``ewc_fisher``, per batch: (posterior
    features, an action the actor samples there) and (imagined features, their
    lambda-returns), each (N, ...)."""
    wm, ac = agent.wm, agent.ac
    actor_rows, critic_rows = [], []
    with torch.no_grad():
        for batch in batches:
            post = agent.posterior(batch)
            feat = wm.rssm.feat(flatten_states(post))
            actor_rows.append((feat, ac.policy(feat).rsample()))
            traj = agent.imagine(post)
            _, aux = ac.loss(traj, wm.reward_of(traj["feat"][1:]), wm.cont_of(traj["feat"][1:]))
            critic_rows.append((traj["feat"][:-1].flatten(0, 1), aux["target"].flatten()))
    return actor_rows, critic_rows


def ewc_fisher(agent: DreamerAgent, batches) -> dict[str, dict[str, torch.Tensor]]:
    """EWC's diagonal Fisher of the world model, actor and critic (SPEC 7b): the mean
    over samples of each sample's squared gradient. Samples: the world model's are the
    batches' sequences, each one's negative ELBO (its DreamerV2 loss on that sequence
    alone); the actor's are posterior states, -log pi(a|s) of an action it samples
    there; the critic's are imagined states, 1/2 (v(s) - R)^2 against the
    lambda-return R."""
    wm, ac = agent.wm, agent.ac

    def sequence_nlls():
        for batch in batches:
            for i in range(batch["action"].shape[0]):
                losses, scales, _ = agent.model_loss({k: v[i:i + 1] for k, v in batch.items()})
                yield sum(scales[k] * v for k, v in losses.items())

    actor_rows, critic_rows = ewc_samples(agent, batches)

    def actor_nll(forward, feat, action):
        return -ac.policy_of(forward(feat)).log_prob(action)

    def critic_nll(forward, feat, target):
        return 0.5 * (forward(feat)[0].float() - target) ** 2

    return {"model": diagonal_fisher(_params(wm), sequence_nlls()),
            "actor": vmap_diagonal_fisher(ac.actor, actor_nll, actor_rows),
            "critic": vmap_diagonal_fisher(ac.critic, critic_nll, critic_rows)}


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
        return ewc_fisher(self.agent, batches)

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

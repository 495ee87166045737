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

import torch

from baselines.dreamer import diagonal_fisher, ewc_penalty, flatten_states, lambda_return
from baselines.dv2_finetune import DV2Finetune, FinetuneConfig
from coworld_bench.registry import register


@dataclasses.dataclass
class EWCConfig(FinetuneConfig):
    """Attributes:
      ewc_lambda: EWC strength lambda (provisional; see the module docstring).
      fisher_batches: source batches for the Fisher estimate.
    """

    ewc_lambda: float = 100.0
    fisher_batches: int = 20


def _params(module) -> dict[str, torch.Tensor]:
    return {k: p for k, p in module.named_parameters() if p.requires_grad}


@register("dv2-finetune-ewc")
class DV2FinetuneEWC(DV2Finetune):
    Config = EWCConfig
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
            return wm.loss(batch)[0]

        def posts(batch):
            with torch.no_grad():
                embed = wm.embed(batch)
                post, _ = wm.rssm.observe(embed, batch["action"], batch["is_first"])
            return flatten_states(post)

        def actor_nll(batch):
            feat = wm.rssm.feat(posts(batch))
            dist = ac.policy(feat)
            action = dist.rsample().detach()
            return -dist.log_prob(action).mean()

        def critic_nll(batch):
            with torch.no_grad():
                traj = ac.imagine(wm, posts(batch), self.config.horizon)
                reward = agent.imagined_reward(traj)
                cont = torch.sigmoid(wm.cont(traj["feat"][1:])[..., 0])
                value = ac.slow_critic(traj["feat"])[..., 0]
                target = lambda_return(reward, value, self.config.discount * cont,
                                       self.config.lam)
            return (0.5 * (ac.value(traj["feat"][:-1]) - target) ** 2).mean()

        losses = {"model": model_nll, "actor": actor_nll, "critic": critic_nll}
        return {name: diagonal_fisher(_params(self.parts[name]), losses[name], batches)
                for name in self.parts}

    def end_of_pretraining(self):
        batches = [self.agent.batch(self.learner.replay) for _ in range(self.config.fisher_batches)]
        self.fisher = self.estimate_fisher(batches)
        self.anchors = {name: {k: p.detach().clone() for k, p in _params(m).items()}
                        for name, m in self.parts.items()}

    def penalty(self, name: str) -> torch.Tensor:
        return ewc_penalty(_params(self.parts[name]), self.anchors[name], self.fisher[name],
                           self.config.ewc_lambda)

    def target_update(self, batch):
        def model_penalty(embed, post):
            penalty = self.penalty("model")
            return penalty, {"ewc_model": penalty.item()}

        post, scalars = self.agent.train_model(batch, extra_loss=model_penalty)
        scalars.update(self.agent.train_behaviour(
            post, actor_penalty=lambda: self.penalty("actor"),
            critic_penalty=lambda: self.penalty("critic")))
        return scalars

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

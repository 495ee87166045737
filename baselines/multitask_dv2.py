"""Multi-Task DV2 (paper table 6): one world model trained jointly on the source's
online data and the target's offline data, with separate actor-critics.

Each update: the source actor collects ``train_every`` env steps; the world model takes
one step on the sum of its DreamerV2 losses on a source batch and a target batch; the
source actor-critic learns in imagination from source posteriors and the target
actor-critic from target posteriors. The target actor is evaluated.
"""

from __future__ import annotations

import dataclasses

from baselines.core.actor_critic import ActorCritic, behaviour_metrics
from baselines.core.agent import detach_states
from baselines.dv2_finetune import DV2Finetune, FinetuneConfig
from coworld_bench.algorithm import RunContext
from coworld_bench.registry import register


@dataclasses.dataclass
class MultiTaskConfig(FinetuneConfig):
    """Multi-Task DV2. ``pretrain_env_steps``: source-only environment steps before the
    joint phase (unset: the paper's pretraining for the target's suite, as for DV2
    Finetune)."""


@register("multitask-dv2")
class MultiTaskDV2(DV2Finetune):
    """Shares DV2 Finetune's agent, source learner, target sampler and schedule; the
    agent's own actor-critic is the source's and the target gets its own."""

    Config = MultiTaskConfig
    paper_name = "Multi-Task DV2"
    learns_from = "online source + offline target, one shared world model"
    description = "One world model on source online + target offline data, separate actor-critics."

    def __init__(self, config: MultiTaskConfig, ctx: RunContext):
        super().__init__(config, ctx)
        self.target_ac = ActorCritic(config, self.agent.wm.rssm.feat_dim, ctx.action_dim
                                     ).to(ctx.device)

    def joint_model_loss(self, source_batch, target_batch):
        """The sum of the DreamerV2 world-model losses on a source and a target batch."""
        source, scales, s_aux = self.agent.model_loss(source_batch)
        target, _, t_aux = self.agent.model_loss(target_batch)
        losses = {k: source[k] + target[k] for k in source}
        return losses, scales, {"source": s_aux, "target": t_aux,
                                "metrics": {**{f"source/{k}": v.detach() for k, v in source.items()},
                                            **{f"target/{k}": v.detach() for k, v in target.items()}}}

    def train_step(self, step):
        if step < self.config.pretrain_updates:
            return {f"source/{k}": v for k, v in self.learner.step().items()}
        agent = self.agent
        with self.learner.collecting(self.config.train_every, serial_first=True):
            metrics, aux = agent.optimize(self.joint_model_loss,
                                          agent.batch(self.learner.replay),
                                          agent.batch(self.sampler))
        scalars = {**metrics, **aux["metrics"]}
        source_post = detach_states(aux["source"]["post"])
        target_post = detach_states(aux["target"]["post"])
        scalars.update({f"source/{k}": v for k, v in agent.train_behaviour(source_post).items()})
        target, t_aux = agent.optimize(agent.behaviour_loss, target_post, ac=self.target_ac,
                                       optimizers=self.target_ac.optimizers)
        self.target_ac.update_slow()
        scalars.update({f"target/{k}": v for k, v in {**target, **behaviour_metrics(t_aux)}.items()})
        return scalars

    def policy(self, obs, state, deterministic=True):
        return self.agent.act(obs, state, deterministic, ac=self.target_ac)

    def value(self, obs, state):
        return self.agent.value_of(state, ac=self.target_ac)

    def predicted_reward(self, obs, state):
        return self.agent.reward_of_state(state)

    def state_dict(self):
        return {**super().state_dict(), "target_ac": self.target_ac.state_dict(),
                "target_ac_opt": self.target_ac.optimizer_state(),
                "target_ac_updates": self.target_ac.updates}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.target_ac.load_state_dict(state["target_ac"])
        self.target_ac.load_optimizer_state(state["target_ac_opt"])
        self.target_ac.updates = int(state["target_ac_updates"])

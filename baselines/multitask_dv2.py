"""Multi-Task DV2 (paper table 6): one world model trained jointly on the source's
online data and the target's offline data, with separate actor-critics.

Each update: the source actor collects ``train_every`` env steps; the world model takes
one step on the sum of its DreamerV2 losses on a source batch and a target batch; the
source actor-critic learns in imagination from source posteriors and the target
actor-critic from target posteriors. The target actor is evaluated.
"""

from __future__ import annotations

import dataclasses

import torch

from baselines.dreamer import ActorCritic, clip_step, make_optimizer
from baselines.dv2_finetune import DV2Finetune, FinetuneConfig
from coworld_bench.algorithm import RunContext
from coworld_bench.registry import register


@dataclasses.dataclass
class MultiTaskConfig(FinetuneConfig):
    """Multi-Task DV2. ``pretrain_updates``: source-only updates before the joint phase
    (0 = the paper schedule's pretraining, as for DV2 Finetune)."""


@register("multitask-dv2")
class MultiTaskDV2(DV2Finetune):
    """Shares DV2 Finetune's agent, source learner, target sampler and schedule; the
    agent's own actor-critic is the source's and the target gets its own."""

    Config = MultiTaskConfig
    description = "One world model on source online + target offline data, separate actor-critics."

    def __init__(self, config: MultiTaskConfig, ctx: RunContext):
        super().__init__(config, ctx)
        self.target_ac = ActorCritic(config, self.agent.wm.rssm.feat_dim, ctx.action_dim
                                     ).to(ctx.device)
        self.target_actor_opt = make_optimizer(self.target_ac.actor.parameters(), config.actor_lr)
        self.target_critic_opt = make_optimizer(self.target_ac.critic.parameters(),
                                                config.critic_lr)

    def _target_behaviour(self, post) -> dict:
        """Target actor-critic update: the agent's machinery with the target's networks."""
        agent = self.agent
        source = (agent.ac, agent.actor_opt, agent.critic_opt)
        agent.ac, agent.actor_opt, agent.critic_opt = (self.target_ac, self.target_actor_opt,
                                                       self.target_critic_opt)
        try:
            return agent.train_behaviour(post)
        finally:
            agent.ac, agent.actor_opt, agent.critic_opt = source

    def train_step(self, step):
        if step < self.config.pretrain_updates:
            return {f"source/{k}": v for k, v in self.learner.step().items()}
        self.learner.collect(self.config.train_every)
        source_batch = self.agent.batch(self.learner.replay)
        target_batch = self.agent.batch(self.sampler)
        wm = self.agent.wm
        source_loss, source_post, _, s_scalars = wm.loss(source_batch)
        target_loss, target_post, _, t_scalars = wm.loss(target_batch)
        clip_step(self.agent.model_opt, source_loss + target_loss, wm.parameters(),
                  self.config.grad_clip)
        source_post = {k: v.detach() for k, v in source_post.items()}
        target_post = {k: v.detach() for k, v in target_post.items()}
        scalars = {**{f"source/{k}": v for k, v in s_scalars.items()},
                   **{f"target/{k}": v for k, v in t_scalars.items()}}
        scalars.update({f"source/{k}": v for k, v in self.agent.train_behaviour(source_post).items()})
        scalars.update({f"target/{k}": v for k, v in self._target_behaviour(target_post).items()})
        return scalars

    @torch.no_grad()
    def policy(self, obs, state, deterministic=True):
        post = self.agent.observe_step(obs, state)
        dist = self.target_ac.policy(self.agent.wm.rssm.feat(post))
        action = dist.mode() if deterministic else dist.rsample()
        return action[0].cpu().numpy(), ({"deter": post["deter"], "stoch": post["stoch"]}, action)

    @torch.no_grad()
    def value(self, obs, state):
        return float(self.target_ac.value(self.agent.wm.rssm.feat(state[0]))[0])

    def state_dict(self):
        return {**super().state_dict(), "target_ac": self.target_ac.state_dict(),
                "target_actor_opt": self.target_actor_opt.state_dict(),
                "target_critic_opt": self.target_critic_opt.state_dict(),
                "target_ac_updates": self.target_ac.updates}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.target_ac.load_state_dict(state["target_ac"])
        self.target_actor_opt.load_state_dict(state["target_actor_opt"])
        self.target_critic_opt.load_state_dict(state["target_critic_opt"])
        self.target_ac.updates = int(state["target_ac_updates"])

"""DV2 Finetune: DreamerV2 pretrained online on the source, then trained on the offline
target dataset (SPEC section 5).

Phase 1: online DreamerV2 on the source env for ``pretrain_env_steps`` environment
steps, i.e. ``pretrain_env_steps / train_every`` updates (SPEC section 7; the random
prefill comes before them). Phase 2 (the rest of ``train_steps``, counted in updates):
world model and actor-critic trained on target sequences, as Offline DV2 without the
ensemble penalty. Both phases act in the pair's larger action space; padded dimensions
are ignored by the smaller env and are zero in the target data. With ``obs=state`` the
world model reads both tasks' state vectors, zero-padded to the longer of the two in
the same way (``DreamerAgent`` pads them). Paper schedule:
Meta-World 160k env steps (32k updates) + 300k updates, DMC 600k env steps (120k
updates) + 600k updates.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from baselines.core.schedules import (
    PAPER_PRETRAINING, PAPER_TARGET_UPDATES, check_pretraining, pretraining_lines,
    updates_for_env_steps,
)
from baselines.core.agent import DreamerAgent
from baselines.core.config import QUICK_MODEL, SMOKE_MODEL
from baselines.core.online import DreamerV2Config, OnlineLearner, dataset_state_dim, env_state_dim
from coworld_bench.algorithm import Algorithm, Range, RunContext
from coworld_bench.data import SequenceSampler
from coworld_bench.registry import register
from coworld_bench.seeding import RandomStates



@dataclasses.dataclass
class FinetuneConfig(DreamerV2Config):
    """DV2 Finetune. Settings left unset (none) take the paper's schedule for the
    pair's suite.

    Attributes:
      obs: what the one world model encodes, on source and target data alike: "image",
        or "state" (both tasks' state vectors, zero-padded to the longer of the two).
      pretrain_env_steps: source environment steps of online pretraining before the
        offline target phase (paper: 160k Meta-World/RoboDesk, 600k DMC); the phase
        has pretrain_env_steps / train_every updates.
      train_steps: updates in total, pretraining's included (unset: pretraining + the
        paper's 300k target updates, 600k on DMC).
    """

    train_steps: int | None = None
    pretrain_env_steps: int | None = None
    dataset_quality: str = "medium-replay"
    dataset_behaviour: str = "dreamerv2"

    checks: ClassVar[dict] = {"pretrain_env_steps": Range(1)}

    @property
    def pretrain_updates(self) -> int:
        return updates_for_env_steps(self.pretrain_env_steps, self.train_every)




SMOKE = dict(SMOKE_MODEL, prefill=60, train_every=5, pretrain_env_steps=50, train_steps=20)
QUICK = dict(QUICK_MODEL, prefill=2_500, train_every=5, pretrain_env_steps=10_000,
             train_steps=4_000)


@register("dv2-finetune")
class DV2Finetune(Algorithm):
    Config = FinetuneConfig
    description = "DreamerV2 pretrained online on the source, then trained on the offline target."
    needs_source = True
    has_value = True
    presets = {"smoke": SMOKE, "quick": QUICK}

    paper_name = "DV2 Finetune"
    family = "transfer"
    learns_from = "online source, then offline target"
    paper = PAPER_PRETRAINING

    @classmethod
    def schedule_lines(cls, config):
        return pretraining_lines(config)

    def sequence_shape(self):
        return self.config.batch_size, self.config.seq_len

    @classmethod
    def resolve(cls, config, source, target):
        if config.train_steps is None:
            config.train_steps = config.pretrain_updates + PAPER_TARGET_UPDATES[target.suite]
        return check_pretraining(config)

    def __init__(self, config: FinetuneConfig, ctx: RunContext):
        super().__init__(config, ctx)
        state_dim = None
        if config.obs == "state":  # one encoder for both tasks' states: the longer one's
            state_dim = max(dataset_state_dim(ctx), env_state_dim(ctx.make_source_env))
        self.agent = DreamerAgent(config, ctx.action_dim, ctx.device, ctx.seed,
                                      state_dim=state_dim, compile_backend=ctx.compile_backend)
        self.learner = OnlineLearner(self.agent, ctx.make_source_env,
                                     ctx.artifacts.path("source_replay"), ctx.seed, config)
        self.sampler = SequenceSampler(ctx.dataset, config.batch_size, config.seq_len,
                                       seed=ctx.seed)

    def end_of_pretraining(self) -> None:
        """Called once, between the phases (EWC estimates its Fisher here)."""

    def target_update(self, batch) -> dict:
        post, scalars = self.agent.train_model(batch)
        scalars.update(self.agent.train_behaviour(post))
        return scalars

    def train_step(self, step):
        if step < self.config.pretrain_updates:
            return {f"source/{k}": v for k, v in self.learner.step().items()}
        if step == self.config.pretrain_updates:
            self.end_of_pretraining()
        return self.target_update(self.agent.batch(self.sampler))

    def policy(self, obs, state, deterministic=True):
        return self.agent.act(obs, state, deterministic)

    def value(self, obs, state):
        return self.agent.value_of(state)

    def predicted_reward(self, obs, state):
        return self.agent.reward_of_state(state)

    def state_dict(self):
        return {"agent": self.agent.full_state(), "learner": self.learner.state(),
                "rngs": RandomStates(sampler=self.sampler.rng).state_dict()}

    def load_state_dict(self, state):
        self.agent.load_full_state(state["agent"])
        self.learner.load(state["learner"])
        RandomStates(sampler=self.sampler.rng).load_state_dict(state["rngs"])

    def close(self):
        self.learner.close()

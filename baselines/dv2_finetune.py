"""DV2 Finetune: DreamerV2 pretrained online on the source, then trained on the offline
target dataset (SPEC section 5).

Phase 1 (``pretrain_updates`` updates): online DreamerV2 on the source env. Phase 2
(the rest of ``train_steps``): world model and actor-critic trained on target
sequences, as Offline DV2 without the ensemble penalty. Both phases act in the pair's
larger action space; padded dimensions are ignored by the smaller env and are zero in
the target data. Paper schedule: Meta-World 160k + 300k updates, DMC 600k + 600k.
"""

from __future__ import annotations

import dataclasses

from baselines.dreamer import QUICK_MODEL, SMOKE_MODEL, DreamerAgent
from baselines.dreamerv2 import DreamerV2Config, OnlineLearner
from coworld_bench.algorithm import Algorithm, RunContext
from coworld_bench.data import SequenceSampler
from coworld_bench.registry import register

# (pretrain updates, total updates) of the paper, by the target's suite.
PAPER_SCHEDULE = {"metaworld": (160_000, 460_000), "robodesk": (160_000, 460_000),
                  "dmc": (600_000, 1_200_000)}


@dataclasses.dataclass
class FinetuneConfig(DreamerV2Config):
    """DV2 Finetune. ``train_steps`` and ``pretrain_updates`` of 0 mean the paper's
    schedule for the pair's suite (see PAPER_SCHEDULE).

    Attributes:
      pretrain_updates: online source updates before the offline target phase.
    """

    train_steps: int = 0
    pretrain_updates: int = 0
    dataset_quality: str = "medium-replay"
    dataset_behaviour: str = "dreamerv2"


def paper_schedule(config, target):
    pretrain, total = PAPER_SCHEDULE[target.suite]
    if config.pretrain_updates == 0:
        config.pretrain_updates = pretrain
    if config.train_steps == 0:
        config.train_steps = total
    if config.pretrain_updates >= config.train_steps:
        raise ValueError(f"pretrain_updates ({config.pretrain_updates}) must be smaller than "
                         f"train_steps ({config.train_steps}).")
    return config


SMOKE = dict(SMOKE_MODEL, prefill=60, train_every=5, pretrain_updates=10, train_steps=20)
QUICK = dict(QUICK_MODEL, prefill=2_500, train_every=5, pretrain_updates=2_000,
             train_steps=4_000)


@register("dv2-finetune")
class DV2Finetune(Algorithm):
    Config = FinetuneConfig
    description = "DreamerV2 pretrained online on the source, then trained on the offline target."
    needs_source = True
    has_value = True
    presets = {"smoke": SMOKE, "quick": QUICK}

    @classmethod
    def for_tasks(cls, config, source, target):
        return paper_schedule(config, target)

    def __init__(self, config: FinetuneConfig, ctx: RunContext):
        super().__init__(config, ctx)
        self.agent = DreamerAgent(config, ctx.action_dim, ctx.device, ctx.seed)
        self.learner = OnlineLearner(self.agent, ctx.make_source_env(),
                                     ctx.work_dir / "source_replay", ctx.seed, config)
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

    def state_dict(self):
        return {"agent": self.agent.full_state(), "learner": self.learner.state(),
                "sampler_rng": self.sampler.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.agent.load_full_state(state["agent"])
        self.learner.load(state["learner"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]

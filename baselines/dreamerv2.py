"""DreamerV2, online: the agent that pretrains sources and makes the paper's datasets.

It interacts with one task (``--target``): ``prefill`` random env steps, then per
update ``train_every`` env steps with the exploring actor (sampled actions) followed
by one world-model and one actor-critic update on replay sequences. Finished episodes
go to the run's replay directory in the dataset format, so a restarted run reloads
its replay (the episode in progress at a kill is started afresh).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from baselines.dreamer import QUICK_MODEL, SMOKE_MODEL, DreamerAgent, DreamerConfig
from coworld_bench.algorithm import Algorithm, Choice, Range, RunContext
from coworld_bench.data.collection import QUALITIES
from coworld_bench.data.replay import Driver, Replay
from coworld_bench.registry import register
from coworld_bench.seeding import RandomStates


@dataclasses.dataclass
class DreamerV2Config(DreamerConfig):
    """Online DreamerV2.

    Attributes:
      prefill: random env steps before the first update.
      train_every: env steps per update.
      replay_capacity: env steps kept in the replay.
    """

    train_steps: int = 160_000
    prefill: int = 5_000
    train_every: int = 5
    replay_capacity: int = 2_000_000
    dataset_quality: str = "none"
    dataset_behaviour: str = "none"

    checks: ClassVar[dict] = {"prefill": Range(0), "train_every": Range(1),
                              "replay_capacity": Range(1),
                              "dataset_quality": Choice(("none", *QUALITIES))}


class OnlineLearner:
    """An agent learning online in one env: driver + replay + updates."""

    def __init__(self, agent: DreamerAgent, env, replay_dir, seed: int, cfg: DreamerV2Config):
        self.agent = agent
        self.cfg = cfg
        self.replay = Replay(replay_dir, cfg.replay_capacity)
        self.driver = Driver(env, seed, self.replay.add)
        self.rng = np.random.default_rng([seed, 77])
        self.env_steps = 0

    def random_policy(self, obs, state):
        return self.rng.uniform(-1, 1, self.agent.action_dim).astype(np.float32), state

    def explore_policy(self, obs, state):
        return self.agent.act(obs, state, deterministic=False)

    def collect(self, steps: int) -> None:
        # Random actions until the prefill is done; learning waits for a full episode.
        policy = self.random_policy if self.env_steps < self.cfg.prefill else self.explore_policy
        self.driver.step(policy, steps)
        self.env_steps += steps

    def ready(self) -> bool:
        return bool(self.replay.episodes)

    def update(self, **behaviour_kwargs) -> dict:
        batch = self.agent.batch(self.replay)
        post, scalars = self.agent.train_model(batch)
        scalars.update(self.agent.train_behaviour(post, **behaviour_kwargs))
        return scalars

    def step(self) -> dict:
        """Collect until ready (the prefill at the start), then one update."""
        self.collect(self.cfg.train_every)
        while not self.ready() or self.env_steps < self.cfg.prefill:
            self.collect(self.cfg.train_every)
        scalars = self.update()
        scalars["env_steps"] = self.env_steps
        if self.replay.returns:
            scalars["train_return"] = self.replay.returns[-1]
        return scalars

    def state(self) -> dict:
        return {"episodes": self.replay.total_episodes, "env_steps": self.env_steps,
                "driver_episodes": self.driver.episodes,
                "rngs": RandomStates(explore=self.rng).state_dict()}

    def load(self, state: dict) -> None:
        self.replay.reload(int(state["episodes"]))
        self.env_steps = int(state["env_steps"])
        self.driver.episodes = int(state["driver_episodes"])
        RandomStates(explore=self.rng).load_state_dict(state["rngs"])


class DreamerV2Behaviour:
    """The paper's dataset behaviour (``coworld_bench.data.behaviours``): the
    ``dreamerv2`` algorithm at a preset, learning online; its finished training
    episodes land in ``replay_dir``."""

    def __init__(self, env, replay_dir, seed: int, preset: str, overrides: dict):
        import torch

        config = DreamerV2.make_config(preset, overrides)
        torch.manual_seed(seed)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        agent = DreamerAgent(config, env.action_space.shape[0], device, seed)
        self.learner = OnlineLearner(agent, env, replay_dir, seed, config)

    @property
    def returns(self) -> list[float]:
        return self.learner.replay.returns

    def step(self) -> None:
        self.learner.step()


@register("dreamerv2")
class DreamerV2(Algorithm):
    Config = DreamerV2Config
    description = "DreamerV2 trained online on one task (source pretraining, dataset behaviour)."
    needs_dataset = False
    needs_target_env = True
    has_value = True
    paper_name = "DreamerV2 (online)"
    family = "model-based"
    presets = {
        "smoke": dict(SMOKE_MODEL, prefill=60, train_every=5, train_steps=20),
        "quick": dict(QUICK_MODEL, prefill=2_500, train_every=5, train_steps=4_000,
                      eval_every=1_000),
    }

    def __init__(self, config: DreamerV2Config, ctx: RunContext):
        super().__init__(config, ctx)
        self.agent = DreamerAgent(config, ctx.action_dim, ctx.device, ctx.seed)
        self.learner = OnlineLearner(self.agent, ctx.make_target_env(),
                                     ctx.artifacts.path("replay"), ctx.seed, config)

    def train_step(self, step):
        return self.learner.step()

    def policy(self, obs, state, deterministic=True):
        return self.agent.act(obs, state, deterministic)

    def value(self, obs, state):
        return self.agent.value_of(state)

    def state_dict(self):
        return {"agent": self.agent.full_state(), "learner": self.learner.state()}

    def load_state_dict(self, state):
        self.agent.load_full_state(state["agent"])
        self.learner.load(state["learner"])

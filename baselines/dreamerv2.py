"""DreamerV2, online: the agent that pretrains sources and makes the paper's datasets.

It interacts with one task (``--target``): ``prefill`` random env steps, then per
update ``train_every`` env steps with the exploring actor (sampled actions) followed
by one world-model and one actor-critic update on replay sequences. Finished episodes
go to the run's replay directory in the dataset format, so a restarted run reloads
its replay (the episode in progress at a kill is started afresh).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from baselines.dreamer import QUICK_MODEL, SMOKE_MODEL, DreamerAgent, DreamerConfig
from coworld_bench.algorithm import Algorithm, RunContext
from coworld_bench.data.replay import Driver, Replay
from coworld_bench.registry import register


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
                "driver_episodes": self.driver.episodes, "rng": self.rng.bit_generator.state}

    def load(self, state: dict) -> None:
        self.replay.reload(int(state["episodes"]))
        self.env_steps = int(state["env_steps"])
        self.driver.episodes = int(state["driver_episodes"])
        self.rng.bit_generator.state = state["rng"]


@register("dreamerv2")
class DreamerV2(Algorithm):
    Config = DreamerV2Config
    description = "DreamerV2 trained online on one task (source pretraining, dataset behaviour)."
    needs_dataset = False
    needs_target_env = True
    has_value = True
    presets = {
        "smoke": dict(SMOKE_MODEL, prefill=60, train_every=5, train_steps=20),
        "quick": dict(QUICK_MODEL, prefill=2_500, train_every=5, train_steps=4_000,
                      eval_every=1_000),
    }

    def __init__(self, config: DreamerV2Config, ctx: RunContext):
        super().__init__(config, ctx)
        self.agent = DreamerAgent(config, ctx.action_dim, ctx.device, ctx.seed)
        self.learner = OnlineLearner(self.agent, ctx.make_target_env(), ctx.work_dir / "replay",
                                     ctx.seed, config)

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

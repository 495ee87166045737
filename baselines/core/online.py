"""Online DreamerV2 learning, shared by the algorithms that pretrain on a source or
learn online: its configuration, the learner (prefill, then per update ``train_every``
env steps and one DreamerV2 update, replay on disk) and the state dimensions of
``obs=state``."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Callable, ClassVar

import numpy as np
import torch

from coworld_bench.algorithm import Choice, Range, RunContext
from coworld_bench.data.collection import QUALITIES
from coworld_bench.data.replay import Driver, Replay
from coworld_bench.errors import ConfigError
from coworld_bench.seeding import RandomStates
from baselines.core.agent import DreamerAgent
from baselines.core.config import DreamerConfig
from baselines.core.collector import CollectorWorker


@dataclasses.dataclass
class DreamerV2Config(DreamerConfig):
    """Online DreamerV2.

    Attributes:
      prefill: random env steps before the first update.
      train_every: env steps per update.
      replay_capacity: env steps kept in the replay.
      collect_worker: step the online simulator in a worker process while the update
        runs ("auto": on when training on a GPU). The same env steps per update; the
        collected steps reach the replay one update later (``baselines.core.collector``).
    """

    train_steps: int = 160_000
    prefill: int = 5_000
    train_every: int = 5
    replay_capacity: int = 2_000_000
    collect_worker: str = "auto"
    dataset_quality: str = "none"
    dataset_behaviour: str = "none"

    checks: ClassVar[dict] = {"prefill": Range(0), "train_every": Range(1),
                              "replay_capacity": Range(1),
                              "collect_worker": Choice(("auto", "on", "off")),
                              "dataset_quality": Choice(("none", *QUALITIES))}


# State observations (``obs=state``) ---------------------------------------------------

def dataset_state_dim(ctx: RunContext) -> int:
    """The length of the target dataset's state vectors, for ``obs=state``."""
    if not ctx.state_dim:
        where = getattr(ctx.dataset, "directory", "the target dataset")
        raise ConfigError(f"obs=state needs the target's state vectors, and {where} stores "
                          "none (an imported dataset may have images only): use obs=image "
                          "or a dataset collected by coworld-bench (it stores the states).")
    return int(ctx.state_dim)


def env_state_dim(make_env: Callable) -> int:
    """The length of the ``state`` observation of the env ``make_env`` makes."""
    env = make_env()
    try:
        return int(env.observation_space["state"].shape[0])
    finally:
        env.close()


def use_collect_worker(cfg: DreamerV2Config, device) -> bool:
    """Whether ``cfg.collect_worker`` asks for a worker on ``device``."""
    if cfg.collect_worker == "auto":
        return torch.device(device).type == "cuda"
    return cfg.collect_worker == "on"


class OnlineLearner:
    """An agent learning online in one env: driver + replay + updates.

    ``make_env`` makes the env (picklable when the simulator steps in a worker
    process, see ``collect_worker``)."""

    def __init__(self, agent: DreamerAgent, make_env: Callable, replay_dir, seed: int,
                 cfg: DreamerV2Config, worker: bool | None = None):
        self.agent = agent
        self.cfg = cfg
        self.replay = Replay(replay_dir, cfg.replay_capacity)
        if worker is None:
            worker = use_collect_worker(cfg, agent.device)
        self.worker = CollectorWorker(make_env, agent, seed) if worker else None
        self.driver = None if worker else Driver(make_env(), seed, self.replay.add)
        self.rng = np.random.default_rng([seed, 77])
        self.env_steps = 0

    def random_policy(self, obs, state):
        return self.rng.uniform(-1, 1, self.agent.action_dim).astype(np.float32), state

    def explore_policy(self, obs, state):
        return self.agent.act(obs, state, deterministic=False)

    def collect(self, steps: int) -> None:
        with self.collecting(steps, serial_first=True):
            pass

    @contextlib.contextmanager
    def collecting(self, steps: int, serial_first: bool):
        """``steps`` env steps: in the worker while the body (an update) runs, or in
        this process before the body (``serial_first``) or after it. Random actions
        until the prefill is done."""
        random = self.env_steps < self.cfg.prefill
        policy = self.random_policy if random else self.explore_policy
        if self.worker is None:
            if serial_first:
                self.driver.step(policy, steps)
            yield
            if not serial_first:
                self.driver.step(policy, steps)
        else:
            self.worker.start(steps, random)
            try:
                yield
            finally:
                for episode in self.worker.finish():
                    self.replay.add(episode)
        self.env_steps += steps

    def ready(self) -> bool:
        return bool(self.replay.episodes)

    def update(self, **behaviour_kwargs) -> dict:
        batch = self.agent.batch(self.replay)
        post, scalars = self.agent.train_model(batch)
        scalars.update(self.agent.train_behaviour(post, **behaviour_kwargs))
        return scalars

    def step(self) -> dict:
        """Collect until ready (the prefill at the start), then one update; with a
        worker, the update's own env steps run beside it."""
        if self.ready() and self.env_steps >= self.cfg.prefill:
            with self.collecting(self.cfg.train_every, serial_first=True):
                scalars = self.update()
        else:
            self.collect(self.cfg.train_every)
            while not self.ready() or self.env_steps < self.cfg.prefill:
                self.collect(self.cfg.train_every)
            scalars = self.update()
        scalars["env_steps"] = self.env_steps
        if self.replay.returns:
            scalars["train_return"] = self.replay.returns[-1]
        return scalars

    def state(self) -> dict:
        if self.worker is not None:
            collector = self.worker.state()
            return {"episodes": self.replay.total_episodes, "env_steps": self.env_steps,
                    "driver_episodes": collector["driver_episodes"],
                    "rngs": RandomStates(explore=self.rng).state_dict(),
                    "worker_rngs": collector["rngs"]}
        return {"episodes": self.replay.total_episodes, "env_steps": self.env_steps,
                "driver_episodes": self.driver.episodes,
                "rngs": RandomStates(explore=self.rng).state_dict()}

    def load(self, state: dict) -> None:
        self.replay.reload(int(state["episodes"]))
        self.env_steps = int(state["env_steps"])
        RandomStates(explore=self.rng).load_state_dict(state["rngs"])
        if ("worker_rngs" in state) != (self.worker is not None):
            # collect_worker=auto resumed on another kind of device: the episode count
            # carries over, the exploration draws start afresh.
            warnings.warn("This checkpoint was collected with collect_worker="
                          f"{'on' if 'worker_rngs' in state else 'off'}; resuming with "
                          f"{'on' if self.worker is not None else 'off'} starts the "
                          "simulator's exploration draws afresh.", stacklevel=2)
        if self.worker is not None:
            load = {"driver_episodes": state["driver_episodes"]}
            if "worker_rngs" in state:
                load["rngs"] = state["worker_rngs"]
            self.worker.load(load)
        else:
            self.driver.episodes = int(state["driver_episodes"])

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()


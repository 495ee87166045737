"""The interface every algorithm implements, and what the runner gives it.

An algorithm is one class with a config dataclass::

    @register("my-algo")
    class MyAlgo(Algorithm):
        Config = MyConfig              # a TrainConfig subclass; defaults = paper preset
        presets = {"smoke": {...}, "quick": {...}}   # overrides per preset
        needs_source = False           # True: the runner gives it an online source env
        needs_dataset = True           # False: no offline target dataset (online agents)
        needs_target_env = False       # True: it interacts with the target task online

        def __init__(self, config, ctx): ...          # build networks from ctx
        def train_step(self, step) -> dict: ...       # one update; returns scalars to log
        def policy(self, obs, state, deterministic) -> (action, state)
        def value(self, obs, state) -> float | None   # critic value, for the overestimation trace
        def state_dict(self) / load_state_dict(self, d)

The runner owns everything else: datasets, environments, evaluation, checkpoints,
logging, resuming.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import numpy as np

from coworld_bench.tasks import TaskSpec

__all__ = ["TrainConfig", "RunContext", "Algorithm", "PRESETS"]

PRESETS = ("smoke", "quick", "paper")


@dataclasses.dataclass
class TrainConfig:
    """Fields the runner reads; every algorithm config extends this.

    Attributes:
      train_steps: training updates in total.
      eval_every: updates between evaluations (0: only at the end).
      eval_episodes: episodes per evaluation (SPEC: 10, deterministic policy).
      checkpoint_every: updates between checkpoints.
      log_every: updates between metric records.
      discount: discount of the value trace's true returns (and of the algorithm).
      dataset_quality: target dataset quality (see ``coworld-bench data``).
      dataset_behaviour: behaviour that makes it (dreamerv2 = the paper's).
      dataset_episodes: its episode budget.
      dataset_seed: its seed.
      dataset_dir: an explicit dataset directory (overrides the four above).
      fast_render: shadows/reflections off, for the dataset and evaluation alike.
    """

    train_steps: int = 100_000
    eval_every: int = 10_000
    eval_episodes: int = 10
    checkpoint_every: int = 5_000
    log_every: int = 100
    discount: float = 0.99
    dataset_quality: str = "medium-replay"
    dataset_behaviour: str = "dreamerv2"
    dataset_episodes: int = 200
    dataset_seed: int = 0
    dataset_dir: str = ""
    fast_render: bool = False

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


# Runner fields per preset; an algorithm's own ``presets`` override these.
BASE_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(train_steps=20, eval_every=10, eval_episodes=1, checkpoint_every=5,
                  log_every=5, dataset_quality="random", dataset_behaviour="random",
                  dataset_episodes=2, fast_render=True),
    "quick": dict(train_steps=2_000, eval_every=1_000, eval_episodes=3, checkpoint_every=500,
                  log_every=50, dataset_quality="medium-replay", dataset_behaviour="scripted",
                  dataset_episodes=20, fast_render=True),
    "paper": {},
}


@dataclasses.dataclass
class RunContext:
    """What an algorithm is built from.

    Attributes:
      target: the offline target task.
      source: the online source task (None for offline algorithms).
      action_dim: the dimension both agents act in (max over the pair).
      image_shape: (H, W, 3) of observations.
      state_dim: length of the low-dimensional ``state`` observation of the target.
      dataset: the target's offline ``coworld_bench.data.Dataset``.
      make_source_env: makes a fresh source env (algorithms with needs_source).
      device: torch device.
      seed: the run's seed.
      make_target_env: makes a fresh target env (online algorithms, needs_target_env).
      work_dir: a directory of the run's own (e.g. an online replay that must survive
        a restart); it is part of the run directory.
      make_env: ``make_env(task, **options)`` makes any benchmark task with the run's
        online settings (render mode, action dim), e.g. several sources.
    """

    target: TaskSpec
    source: TaskSpec | None
    action_dim: int
    image_shape: tuple[int, int, int]
    state_dim: int
    dataset: Any
    make_source_env: Callable[[], Any] | None
    device: Any
    seed: int
    make_target_env: Callable[[], Any] | None = None
    work_dir: Any = None
    make_env: Callable[..., Any] | None = None


class Algorithm:
    """Base class; see the module docstring. Subclasses set ``Config`` and ``presets``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[TrainConfig]] = TrainConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    needs_source: ClassVar[bool] = False
    needs_dataset: ClassVar[bool] = True
    needs_target_env: ClassVar[bool] = False
    has_value: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, config: TrainConfig, ctx: RunContext):
        self.config = config
        self.ctx = ctx

    @classmethod
    def make_config(cls, preset: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The config of a preset, with ``--set`` overrides applied and checked."""
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}.")
        values = {**BASE_PRESETS[preset], **cls.presets.get(preset, {})}
        names = cls.Config.field_names()
        for key, value in (overrides or {}).items():
            if key not in names:
                raise ValueError(f"{cls.name} has no setting {key!r}; valid settings: "
                                 f"{', '.join(sorted(names))}.")
            values[key] = value
        config = cls.Config(**values)
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            default = f.default if f.default is not dataclasses.MISSING else None
            if default is not None and not isinstance(value, type(default)) and not (
                    isinstance(default, float) and isinstance(value, int)):
                raise ValueError(f"{cls.name}: setting {f.name}={value!r} should be a "
                                 f"{type(default).__name__}.")
        return config

    @classmethod
    def for_tasks(cls, config: TrainConfig, source: TaskSpec | None, target: TaskSpec
                  ) -> TrainConfig:
        """Fills settings whose paper value depends on the tasks (e.g. DMC trains longer
        than Meta-World). Called by the runner before the config is recorded."""
        return config

    def initial_state(self) -> Any:
        """Policy state at the start of an episode (recurrent state, frame stack...)."""
        return None

    def train_step(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    def policy(self, obs: dict[str, np.ndarray], state: Any, deterministic: bool
               ) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def value(self, obs: dict[str, np.ndarray], state: Any) -> float | None:
        """The critic's value of the state after ``obs`` (None without a critic)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

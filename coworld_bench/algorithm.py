"""The interface every algorithm implements, and what the runner gives it.

An algorithm is one class with a config dataclass::

    @register("my-algo")
    class MyAlgo(Algorithm):
        Config = MyConfig              # a TrainConfig subclass; defaults = paper preset
        presets = {"smoke": {...}, "quick": {...}}   # overrides per preset
        needs_source = False           # True: the runner gives it an online source env
        needs_dataset = True           # False: no offline target dataset (online agents)
        needs_target_env = False       # True: it interacts with the target task online
        paper_name = "My Algo"         # its name in result tables
        family = "model-free"          # model-based | model-free | transfer | plugin
        has_value = True               # it has a critic (value-estimation figure)
        paper = {"dmc": {...}}         # the paper's settings by target suite

        def __init__(self, config, ctx): ...          # build networks from ctx
        def train_step(self, step) -> dict: ...       # one update; returns scalars to log
        def policy(self, obs, state, deterministic) -> (action, state)
        def value(self, obs, state) -> float | None   # critic value, for the overestimation trace
        def predicted_reward(self, obs, state) -> float | None  # optional: reward model's
        def state_dict(self) / load_state_dict(self, d)
        def close(self)                               # optional: worker processes

The runner owns everything else: datasets, environments, evaluation, checkpoints,
logging, resuming.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
import typing
from typing import Any, Callable, ClassVar

import numpy as np

from coworld_bench.data.collection import QUALITIES
from coworld_bench.errors import ConfigError
from coworld_bench.tasks import TaskSpec

__all__ = ["TrainConfig", "RunContext", "Algorithm", "PRESETS", "Range", "Choice",
           "field_docs", "setting_checks"]

PRESETS = ("smoke", "quick", "paper")


# Valid values of settings ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Range:
    """A finite number in [low, high] (None: unbounded)."""

    low: float | None = None
    high: float | None = None

    def check(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.low is None and self.high is None:
            return "any finite number"
        if self.high is None:
            return f">= {self.low:g}"
        if self.low is None:
            return f"<= {self.high:g}"
        return f"[{self.low:g}, {self.high:g}]"


@dataclasses.dataclass(frozen=True)
class Choice:
    values: tuple

    def check(self, value) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return " | ".join(map(str, self.values))


def setting_checks(config_cls: type) -> dict[str, Range | Choice]:
    """Every ``checks`` entry along the config class's bases (subclasses win)."""
    merged: dict[str, Range | Choice] = {}
    for klass in reversed(config_cls.__mro__):
        merged.update(klass.__dict__.get("checks", {}))
    return merged


_ATTR = re.compile(r"^\s{2,}([a-z_][a-z0-9_, ]*):\s*(.*)$")


def check_config_class(config_cls: type, owner: str) -> None:
    """A config class's help and checks speak of its fields only: every ``checks`` key
    and every name its docstrings document is a field (a renamed field whose check or
    help was left behind is an error when the algorithm is registered, at import)."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    stray = sorted(set(setting_checks(config_cls)) - fields)
    if stray:
        raise TypeError(f"{owner}: checks of {', '.join(stray)}, which "
                        f"{config_cls.__name__} has no field of.")
    stray = sorted(set(field_docs(config_cls)) - fields)
    if stray:
        raise TypeError(f"{owner}: {config_cls.__name__}'s docstring documents "
                        f"{', '.join(stray)}, which are not its fields.")


@functools.lru_cache(maxsize=None)
def field_docs(config_cls: type) -> dict[str, str]:
    """One-line meaning of each field, from the "Attributes:" sections of the config
    class's docstrings along its bases (``a, b: text`` documents both); parsed once
    per class."""
    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        text = klass.__dict__.get("__doc__") or ""
        if "Attributes:" not in text:
            continue
        names: list[str] = []
        for line in text.split("Attributes:", 1)[1].splitlines():
            match = _ATTR.match(line)
            if match:
                names = [n.strip() for n in match.group(1).split(",") if n.strip()]
                for name in names:
                    docs[name] = match.group(2).strip()
            elif line.strip() and names:
                for name in names:
                    docs[name] += " " + line.strip()
    return docs


def _type_name(kind) -> str:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if args else kind
    name = getattr(base, "__name__", str(base))
    return f"{name} or none" if args else name


def coerce_setting(owner: str, name: str, kind, value: Any) -> Any:
    """A ``--set`` value as the field's declared type: text is parsed by that type
    (``3e-4``, ``1e3``, ``nan``, ``inf`` for floats; ``true``/``false`` for bools;
    ``none`` where the field allows None); Python values are checked."""
    optional = type(None) in typing.get_args(kind)
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    wrong = ConfigError(f"{owner}: setting {name}={value!r} should be a {_type_name(kind)}.")
    if isinstance(value, str) and base is not str:
        text = value.strip()
        if optional and text.lower() in ("none", "null"):
            return None
        if base is bool:
            lowered = text.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise wrong
        try:
            number = float(text)
        except ValueError:
            raise wrong from None
        if base is int:
            if not number.is_integer():
                raise wrong
            return int(number)
        return number
    if value is None:
        if optional:
            return None
        raise wrong
    if base is bool:
        if not isinstance(value, bool):
            raise wrong
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        value = float(value)
    elif not isinstance(value, base):
        raise wrong
    return value


@dataclasses.dataclass
class TrainConfig:
    """Fields the runner reads; every algorithm config extends this.

    A config class declares the valid values of its fields once, in ``checks``
    (``Range`` or ``Choice`` per field name; subclasses add to their bases'); a field
    typed ``X | None`` with default None takes the paper's value for the task's
    suite (``Algorithm.paper``) unless set.

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
      antialias: 4x multisampled rendering (off: one sample per pixel, ~2.7x faster
        frames on a CPU), for the dataset and evaluation alike.
      random_baseline: after the final evaluation, also the return of uniformly random
        actions on the same evaluation seeds (cached in the data root), printed beside
        the final return and kept in result.json.
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
    antialias: bool = True
    random_baseline: bool = True

    checks: ClassVar[dict[str, Range | Choice]] = {
        "train_steps": Range(1), "eval_every": Range(0), "eval_episodes": Range(1),
        "checkpoint_every": Range(1), "log_every": Range(1), "discount": Range(0, 1),
        "dataset_quality": Choice(QUALITIES), "dataset_episodes": Range(1),
        "dataset_seed": Range(0, 2**32 - 1),
    }

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    def validate(self, owner: str, resolved: bool = True) -> None:
        """Checks every field's type and valid values; ``resolved``: paper values
        (None) must have been filled in. Raises ConfigError naming the setting."""
        types = self.field_types()
        checks = setting_checks(type(self))
        for f in dataclasses.fields(self):
            value = coerce_setting(owner, f.name, types[f.name], getattr(self, f.name))
            setattr(self, f.name, value)
            if value is None:
                if resolved:
                    raise ConfigError(f"{owner}: setting {f.name} has no value for this task "
                                      f"(the paper gives none); set it with --set {f.name}=...")
                continue
            check = checks.get(f.name)
            if check is not None and not check.check(value):
                raise ConfigError(f"{owner}: setting {f.name}={value!r} is out of range; valid: "
                                  f"{check}.")


# Runner fields per preset; an algorithm's own ``presets`` override these.
BASE_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(train_steps=20, eval_every=10, eval_episodes=1, checkpoint_every=5,
                  log_every=5, dataset_quality="random", dataset_behaviour="random",
                  dataset_episodes=2, fast_render=True, antialias=False,
                  random_baseline=False),
    "quick": dict(train_steps=2_000, eval_every=1_000, eval_episodes=3, checkpoint_every=500,
                  log_every=50, dataset_quality="medium-replay", dataset_behaviour="scripted",
                  dataset_episodes=20, fast_render=True, antialias=False),
    "paper": {},
}


_EAGER = [False]


def compiled_calls_run_eagerly() -> bool:
    """True inside ``eagerly()``: compiled functions call their eager originals."""
    return _EAGER[0]


@contextlib.contextmanager
def eagerly():
    """Inside, functions compiled for this run (``run --compile``) run their eager
    originals, with no call into torch.compile. For instruments that intercept every
    aten call (``coworld-bench bench``'s ``TorchDispatchMode``): a compiled function once
    called under such a mode stops using its compiled graphs in this process (seen with
    torch 2.13), which would slow every later call down to eager speed."""
    previous, _EAGER[0] = _EAGER[0], True
    try:
        yield
    finally:
        _EAGER[0] = previous


@dataclasses.dataclass
class RunContext:
    """What an algorithm is built from.

    Attributes:
      target: the offline target task.
      source: the online source task (None for offline algorithms).
      action_dim: the dimension both agents act in (max over the pair).
      image_shape: (H, W, 3) of observations.
      state_dim: length of the low-dimensional ``state`` observation of the target (0:
        its dataset stores none).
      dataset: the target's offline ``coworld_bench.data.Dataset``.
      make_source_env: makes a fresh source env (algorithms with needs_source).
      device: torch device.
      seed: the run's seed.
      make_target_env: makes a fresh target env (online algorithms, needs_target_env).
      make_env: ``make_env(task, **options)`` makes any benchmark task with the run's
        online settings (render mode, action dim), e.g. several sources.
      artifacts: writes the algorithm's own run files (``work/``) atomically.
      compile_backend: the torch.compile backend the run asks the algorithm to compile
        its hot loops with (``run --compile``: default "inductor" on CUDA, none on a
        CPU), or None.
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
    make_env: Callable[..., Any] | None = None
    artifacts: Any = None
    compile_backend: str | None = None


class Algorithm:
    """Base class; see the module docstring. Subclasses set ``Config`` and ``presets``,
    and describe themselves for ``list algos`` and the report:

    - ``paper_name``: the name in the paper's tables (default: the registry name);
    - ``family``: "model-based", "model-free", "transfer" (uses a source) or "plugin";
    - ``learns_from``: what it trains on, in words;
    - ``has_value``: it has a critic (the value-estimation figure covers it);
    - ``paper``: the paper's values of settings by target suite ("metaworld",
      "robodesk", "dmc"), filled into the config's None fields for that suite.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[TrainConfig]] = TrainConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    needs_source: ClassVar[bool] = False
    needs_dataset: ClassVar[bool] = True
    needs_target_env: ClassVar[bool] = False
    has_value: ClassVar[bool] = False
    description: ClassVar[str] = ""
    paper_name: ClassVar[str] = ""
    family: ClassVar[str] = "plugin"
    learns_from: ClassVar[str] = ""
    paper: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: TrainConfig, ctx: RunContext):
        self.config = config
        self.ctx = ctx

    @classmethod
    def display_name(cls) -> str:
        return cls.paper_name or cls.name

    @classmethod
    def learns_from_text(cls) -> str:
        if cls.learns_from:
            return cls.learns_from
        if cls.needs_source:
            return "online source + offline target"
        if not cls.needs_dataset:
            return "one task, online"
        return "offline target"

    @classmethod
    def coerce_overrides(cls, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """``--set`` values (text or Python values) as their fields' declared types."""
        names = cls.Config.field_names()
        types = cls.Config.field_types()
        out = {}
        for key, value in (overrides or {}).items():
            if key not in names:
                raise ConfigError(f"{cls.name} has no setting {key!r}; valid settings: "
                                  f"{', '.join(sorted(names))} (coworld-bench list settings "
                                  f"{cls.name}).")
            out[key] = coerce_setting(cls.name, key, types[key], value)
        return out

    @classmethod
    def make_config(cls, preset: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The config of a preset, with ``--set`` overrides (text or Python values)
        parsed by each field's declared type and checked against its valid values.
        Fields left None take the paper's value in ``for_tasks``."""
        if preset not in PRESETS:
            raise ConfigError(f"Unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}.")
        values = {**BASE_PRESETS[preset], **cls.presets.get(preset, {}),
                  **cls.coerce_overrides(overrides)}
        config = cls.Config(**values)
        config.validate(cls.name, resolved=False)
        return config

    @classmethod
    def paper_values(cls, target: TaskSpec) -> dict[str, Any]:
        """The paper's settings for the target's suite."""
        return dict(cls.paper.get(target.suite, {}))

    @classmethod
    def for_tasks(cls, config: TrainConfig, source: TaskSpec | None, target: TaskSpec
                  ) -> TrainConfig:
        """Fills the fields left None with the paper's values for the target's suite,
        then ``resolve``s derived settings, then checks everything. Called by the
        runner before anything is written."""
        for key, value in cls.paper_values(target).items():
            if getattr(config, key) is None:
                setattr(config, key, value)
        config = cls.resolve(config, source, target)
        config.validate(cls.name, resolved=True)
        return config

    @classmethod
    def resolve(cls, config: TrainConfig, source: TaskSpec | None, target: TaskSpec
                ) -> TrainConfig:
        """Settings derived from others and the tasks (e.g. a schedule's length);
        raises ConfigError for inconsistent combinations."""
        return config

    @classmethod
    def schedule_lines(cls, config: TrainConfig) -> list[str]:
        """What the run's updates are made of, beyond plain updates, one sentence per
        phase (online pretraining in env steps, a warm-up): printed under the run's
        wall-time estimate. Default: nothing to add."""
        return []

    def timed_steps(self) -> dict[str, Callable[[], Any]]:
        """The updates ``coworld-bench bench`` times, by name, each a callable doing
        exactly one (an algorithm with several kinds of update names each, at a step
        typical of the run). Called once the algorithm is built; may first prepare what
        the updates need (e.g. fill an online replay). Default: one ``train_step``."""
        return {f"{self.name} step": lambda: self.train_step(10 ** 6)}

    def online_step(self) -> tuple[str, Callable[[], Any]] | None:
        """One update with the environment steps that come with it, and where the
        simulator runs ("worker" or "in_process"), for the algorithms that act online
        while they train (``bench`` times it both ways); None otherwise."""
        return None

    def sequence_shape(self) -> tuple[int, int] | None:
        """(batch, sequence length) of the target sequences it samples, for ``bench``'s
        sampler rate; None for an algorithm that samples transitions."""
        return None

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

    def predicted_reward(self, obs: dict[str, np.ndarray], state: Any) -> float | None:
        """A model-based agent's predicted reward of arriving at ``obs`` (its reward
        head at the state after ``obs``), None without a reward model. Evaluation
        compares it with the reward the simulator gave (``reward_error``)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Releases what the algorithm holds beyond memory (worker processes); the
        runner calls it when the run ends, however it ends."""

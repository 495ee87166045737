"""The environment interface every benchmark task implements.

A task is a ``gymnasium.Env`` whose observations are dicts that always carry
``image`` (64x64x3 uint8, right way up), ``state`` (the low-dimensional simulator
state, float32), ``is_first``, ``is_last`` and ``is_terminal``. Episode length and
action repeat are those of SPEC section 2 and live in the task table, not here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from coworld_bench.errors import ConfigError
from coworld_bench.tasks import TaskSpec

__all__ = ["EnvOptions", "BenchmarkEnv"]


@dataclasses.dataclass(frozen=True)
class EnvOptions:
    """Options of ``coworld_bench.envs.make``. All of them change what an agent sees,
    so datasets record them and evaluation must reuse them.

    Attributes:
      image_size: observation height and width in pixels (the paper: 64).
      camera: camera name; ``None`` = the suite's benchmark camera (Meta-World
        ``corner``, DMC camera 0, RoboDesk's own fixed view).
      fast_render: turn shadows and reflections off (about 4x faster on a CPU).
      antialias: render with 4x multisampling (MuJoCo's default). Off, a Meta-World
        frame renders about 2.7x faster on a CPU (24 -> 9 ms, 2-core AMD EPYC, with
        fast_render), with hard edges instead of blended ones.
      action_dim: act in a larger action space than the task's own; the padded
        entries are ignored (pairs of tasks with different action dimensions).
      action_noise: std of Gaussian noise added to every action before it is
        clipped and executed (the paper's noisy Meta-World/RoboDesk targets).
      sparse_reward: reward 1 on success, else 0 (the paper's sparse source).
      moving_background: replace the DMC sky by a moving texture (the paper's
        noisy DMC targets; DMC only).
    """

    image_size: int = 64
    camera: str | None = None
    fast_render: bool = False
    antialias: bool = True
    action_dim: int | None = None
    action_noise: float = 0.0
    sparse_reward: bool = False
    moving_background: bool = False

    @classmethod
    def from_kwargs(cls, **kwargs) -> "EnvOptions":
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ConfigError(f"Unknown environment option(s) {', '.join(unknown)}. "
                            f"Valid options: {', '.join(names)}.")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _flag_space() -> gym.spaces.Box:
    return gym.spaces.Box(low=0, high=1, shape=(), dtype=bool)


class BenchmarkEnv(gym.Env):
    """Common episode logic; subclasses implement the ``_sim_*`` hooks.

    Subclass hooks:
      ``_sim_seed(seed)``: seed every random source of the simulator.
      ``_sim_reset() -> (state, info)``.
      ``_sim_step(action) -> (reward, terminated, state, info)``, with the native
        action (padding removed, clipped to [-1, 1]) and the action repeat applied.
      ``_sim_render() -> image``.
      ``state_dim`` attribute.
    """

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"
    state_dim: int

    def __init__(self, task: TaskSpec, options: EnvOptions, seed: int | None):
        self.task = task
        self.options = options
        native = task.action_dim
        dim = options.action_dim or native
        if dim < native:
            raise ConfigError(f"action_dim={dim} is smaller than {task.id}'s own action "
                             f"dimension {native}; it can only be padded, not cut.")
        self._native_dim = native
        self.action_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        size = options.image_size
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (self.state_dim,), np.float32),
            "is_first": _flag_space(),
            "is_last": _flag_space(),
            "is_terminal": _flag_space(),
        })
        self._steps = 0
        self._done = True
        self._last_image = None
        self._sim_seed(seed)

    # Public gymnasium API -------------------------------------------------------

    @property
    def description(self) -> dict[str, Any]:
        """Everything that defines what an agent sees and does: record it with data."""
        return {
            "task_id": self.task.id,
            "suite": self.task.suite,
            "sim_task": self.task.sim_task,
            "action_repeat": self.task.action_repeat,
            "episode_steps": self.task.episode_steps,
            "native_action_dim": self._native_dim,
            **self.options.to_dict(),
            "action_dim": int(self.action_space.shape[0]),
            "camera": self.camera_name,
        }

    camera_name: str = ""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._sim_seed(seed)
        state, info = self._sim_reset()
        self._steps = 0
        self._done = False
        return self._observation(state, first=True), info

    def step(self, action):
        if self._done:
            raise RuntimeError(f"{self.task.id}: the episode is over; call reset() first.")
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != self.action_space.shape:
            raise ValueError(f"{self.task.id}: expected an action of shape "
                             f"{self.action_space.shape}, got {action.shape}.")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{self.task.id}: action contains NaN or inf: {action}.")
        native = np.clip(action[: self._native_dim], -1.0, 1.0)
        reward, terminated, state, info = self._sim_step(native)
        self._steps += 1
        truncated = not terminated and self._steps >= self.task.episode_steps
        self._done = terminated or truncated
        obs = self._observation(state, last=self._done, terminal=terminated)
        return obs, float(reward), bool(terminated), bool(truncated), info

    def render(self):
        return self._last_image

    # Internals ------------------------------------------------------------------

    def _observation(self, state, first=False, last=False, terminal=False):
        image = self._sim_render()
        self._last_image = image
        return {
            "image": image,
            "state": np.asarray(state, dtype=np.float32),
            "is_first": np.bool_(first),
            "is_last": np.bool_(last),
            "is_terminal": np.bool_(terminal),
        }

    def _sim_seed(self, seed):
        raise NotImplementedError

    def _sim_reset(self):
        raise NotImplementedError

    def _sim_step(self, action):
        raise NotImplementedError

    def _sim_render(self):
        raise NotImplementedError

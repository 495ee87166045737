"""One environment API over Meta-World, RoboDesk and DeepMind Control.

    >>> from coworld_bench import envs
    >>> env = envs.make("BP", seed=0)           # or "mw-button-press"
    >>> obs, info = env.reset()
    >>> obs["image"].shape, obs["is_first"]
    ((64, 64, 3), True)

Simulators are named by lazy ``"module:Class"`` strings, so a missing simulator only
fails when one of its tasks is made, never at import.
"""

from __future__ import annotations

import importlib

from coworld_bench.envs.base import BenchmarkEnv, EnvOptions
from coworld_bench.envs.wrappers import GaussianActionNoise, SparseReward
from coworld_bench.tasks import TaskSpec, resolve_task

__all__ = ["make", "EnvOptions", "BenchmarkEnv", "SIMULATORS"]

SIMULATORS = {
    "metaworld": "coworld_bench.envs.metaworld:MetaWorldEnv",
    "robodesk": "coworld_bench.envs.robodesk:RoboDeskEnv",
    "dmc": "coworld_bench.envs.dmc:DMCEnv",
}


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def make(task: str | TaskSpec, seed: int | None = 0, **options):
    """Makes a benchmark task as a ``gymnasium.Env`` with dict observations.

    Args:
      task: a full id (``mw-drawer-close``) or a code (``DC``); see
        ``coworld-bench list tasks``.
      seed: seeds every random source of the simulator and the wrappers.
      **options: fields of ``EnvOptions`` (image_size, camera, fast_render,
        antialias, action_dim, action_noise, sparse_reward, moving_background).

    Returns:
      The env. ``env.unwrapped.description`` is the dict to record with any data
      collected from it.
    """
    spec = resolve_task(task)
    opts = EnvOptions.from_kwargs(**options)
    env = _load(SIMULATORS[spec.suite])(spec, opts, seed)
    if opts.sparse_reward:
        env = SparseReward(env)
    if opts.action_noise:
        env = GaussianActionNoise(env, opts.action_noise, seed)
    return env
